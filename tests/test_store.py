"""The feature store: parts, offsets, status, resuming, config refusal, plain-zarr reads."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from vqa_pipe.pipeline.store import FeatureStore, StoreError, VideoStatus

IDS = [f"v{i}" for i in range(5)]


def _rows(n: int, value: float) -> dict:
    return {"x": np.full((n, 4), value, np.float32), "t": np.arange(n, dtype=np.float32)}


@pytest.fixture()
def store(tmp_path):
    s = FeatureStore.create_or_open(tmp_path / "s.zarr", IDS, part_size=2)
    s.ensure_branch("semantic", {"model": "m", "grid": [3, 3]})
    return s


def test_parts_offsets_and_status(store):
    store.write_part("semantic", 0, {"v0": _rows(3, 0.0), "v1": "DecodeError: corrupt"})
    store.write_part("semantic", 1, {"v2": _rows(2, 2.0), "v3": _rows(1, 3.0)})
    status = store.status("semantic")
    assert [status[v].state for v in IDS] == ["done", "failed", "done", "done", "pending"]
    assert status["v1"].reason == "DecodeError: corrupt"
    data = FeatureStore.open(store.path).read("semantic", "x")
    assert list(data) == ["v0", "v2", "v3"]
    assert data["v0"].shape == (3, 4) and (data["v3"] == 3.0).all()
    assert store.arrays("semantic") == {"t": ((), "float32"), "x": ((4,), "float32")}


def test_plain_zarr_and_dask_read_the_same_rows(store):
    store.write_part("semantic", 0, {"v0": _rows(3, 0.0), "v1": _rows(2, 1.0)})
    store.consolidate()
    group = zarr.open_group(str(store.path), mode="r")
    part = group["parts/p000000/semantic"]
    offsets = part["offsets"][:]
    assert offsets.tolist() == [0, 3, 5]
    np.testing.assert_array_equal(part["x"][offsets[1] : offsets[2]], np.full((2, 4), 1.0))
    # one shard per part array: a single chunk file under c/
    chunk_files = [p for p in (store.path / "parts/p000000/semantic/x/c").rglob("*") if p.is_file()]
    assert len(chunk_files) == 1
    array, slices = FeatureStore.open(store.path).to_dask("semantic", "x")
    assert array.shape == (5, 4)
    np.testing.assert_array_equal(array[slices["v1"]].compute(), np.full((2, 4), 1.0))


def test_a_part_without_its_status_is_not_complete(store):
    store.write_part("semantic", 0, {"v0": _rows(1, 0.0), "v1": _rows(1, 1.0)})
    assert store.part_complete("semantic", 0)
    # simulate a crash after the arrays but before the status: the part is redone
    group = zarr.open_group(str(store.path), path="parts/p000000/semantic", mode="a")
    del group.attrs["status"]
    assert not store.part_complete("semantic", 0)
    assert store.status("semantic")["v0"].state == "pending"


def test_other_configuration_is_refused_with_the_difference(store):
    again = FeatureStore.create_or_open(store.path, IDS, part_size=2)
    again.ensure_branch("semantic", {"model": "m", "grid": [3, 3]})  # same: fine
    with pytest.raises(StoreError, match=r"grid: \[3, 3\] -> \[2, 2\]"):
        again.ensure_branch("semantic", {"model": "m", "grid": [2, 2]})
    with pytest.raises(StoreError, match="part_size=2"):
        FeatureStore.create_or_open(store.path, IDS, part_size=4)
    with pytest.raises(StoreError, match="another manifest"):
        FeatureStore.create_or_open(store.path, ["v9", *IDS], part_size=2)


def test_appended_videos_extend_the_store_and_redo_the_last_part(store):
    store.write_part("semantic", 2, {"v4": _rows(1, 4.0)})
    assert store.part_complete("semantic", 2)
    bigger = FeatureStore.create_or_open(store.path, [*IDS, "v5"], part_size=2)
    assert bigger.n_parts == 3 and bigger.part_ids(2) == ["v4", "v5"]
    assert not bigger.part_complete("semantic", 2)  # membership changed: redo


def test_bad_results_are_refused(store):
    with pytest.raises(StoreError, match="missing"):
        store.write_part("semantic", 0, {"v0": _rows(1, 0.0)})
    with pytest.raises(StoreError, match="row count"):
        store.write_part(
            "semantic", 0, {"v0": {"x": np.zeros((2, 4)), "t": np.zeros(3)}, "v1": "x"}
        )
    with pytest.raises(StoreError, match="no 'spatial' features"):
        store.write_part("spatial", 0, {"v0": _rows(1, 0.0), "v1": "x"})
    with pytest.raises(StoreError, match="duplicate"):
        FeatureStore.create_or_open(store.path.parent / "d.zarr", ["a", "a"])


def test_refuses_foreign_folders(tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file.txt").write_text("mine")
    with pytest.raises(StoreError, match="not empty"):
        FeatureStore.create_or_open(tmp_path / "busy", IDS)
    with pytest.raises(StoreError, match="no feature store"):
        FeatureStore.open(tmp_path / "nothing")


def test_branch_arrays_cannot_change_meaning(store):
    emb = np.eye(3, dtype=np.float32)
    store.put_branch_array("semantic", "text_embeddings", emb)
    store.put_branch_array("semantic", "text_embeddings", emb)
    np.testing.assert_array_equal(store.branch_array("semantic", "text_embeddings"), emb)
    with pytest.raises(StoreError, match="different values"):
        store.put_branch_array("semantic", "text_embeddings", emb * 2)


# ---- format 2: what readers can rely on -------------------------------------------------
@pytest.mark.parametrize(
    "shape, dtype, chunk_rows",
    [((37, 5), "float32", 4), ((37, 5), "float32", 37), ((9,), "int64", 2),
     ((12, 3, 2), "float16", 5), ((1, 68), "float32", 1), ((50, 4), "uint8", 7)],
)
def test_the_direct_reader_matches_zarr(tmp_path, shape, dtype, chunk_rows):
    """Reads that bypass zarr's machinery give exactly zarr's values, for any row range."""
    from vqa_pipe.pipeline.store_files import array_info, read_direct
    from zarr.codecs import ZstdCodec

    rng = np.random.default_rng(0)
    data = (rng.standard_normal(shape) * 50).astype(dtype)
    group = zarr.open_group(str(tmp_path / "a.zarr"), mode="w", zarr_format=3)
    shard_rows = -(-shape[0] // chunk_rows) * chunk_rows
    array = group.create_array("x", shape=shape, dtype=dtype, chunks=(chunk_rows,) + shape[1:],
                               shards=(shard_rows,) + shape[1:],
                               compressors=ZstdCodec(level=0, checksum=True))
    array[...] = data
    info = array_info(tmp_path / "a.zarr" / "x", "fix")
    assert info.direct and info.checksummed
    for start, stop in [(0, shape[0]), (1, 2), (3, shape[0] - 1), (shape[0] - 1, shape[0])]:
        if start < stop <= shape[0]:
            np.testing.assert_array_equal(read_direct(info, start, stop, complete=True),
                                          array[start:stop])


def test_plain_zarr_and_dask_still_read_format_2(store):
    import dask.array as da

    store.write_part("semantic", 0, {"v0": _rows(3, 0.5), "v1": _rows(2, 1.5)})
    store.consolidate()
    meta = (store.path / "parts/p000000/semantic/x/zarr.json").read_text()
    assert '"checksum": true' in meta
    plain = zarr.open_group(str(store.path), mode="r")["parts/p000000/semantic/x"]
    np.testing.assert_array_equal(plain[3:5], np.full((2, 4), 1.5))
    lazy = da.from_zarr(str(store.path), component="parts/p000000/semantic/x")
    np.testing.assert_array_equal(lazy.compute(), plain[...])


def test_all_zero_rows_are_written_and_read_back_as_data(store):
    """Format 2 writes all-zero chunks too, so a missing chunk is always damage."""
    zeros = {"x": np.zeros((2, 4), np.float32), "t": np.zeros(2, np.float32)}
    store.write_part("semantic", 0, {"v0": zeros, "v1": "failed"})
    assert (store.path / "parts/p000000/semantic/x/c/0/0").is_file()
    np.testing.assert_array_equal(FeatureStore.open(store.path).read("semantic", "x")["v0"],
                                  np.zeros((2, 4)))


def test_reads_touch_only_the_parts_and_rows_asked_for(store):
    store.write_part("semantic", 0, {"v0": _rows(3, 0.0), "v1": _rows(2, 1.0)})
    store.write_part("semantic", 1, {"v2": _rows(2, 2.0), "v3": _rows(1, 3.0)})
    # damage part 0's data: videos of part 1 still read, part 0's do not
    (store.path / "parts/p000000/semantic/x/c/0/0").unlink()
    reader = FeatureStore.open(store.path)
    assert list(reader.read("semantic", "x", ["v3", "v2"])) == ["v2", "v3"]
    with pytest.raises(StoreError, match=r"p000000/semantic/x/c/0/0 is missing"):
        reader.read("semantic", "x", ["v1"])
    assert [v for v, _ in reader.iter_rows("semantic", "t")] == ["v0", "v1", "v2", "v3"]


def test_remove_branch_and_mark_damaged(store):
    store.write_part("semantic", 0, {"v0": _rows(3, 0.0), "v1": _rows(2, 1.0)})
    assert store.mark_damaged("semantic", ["v1"], "bit rot") == [0]
    status = store.status("semantic")
    assert status["v1"] == VideoStatus("failed", "damaged: bit rot")
    assert status["v0"].state == "done"
    assert store.part_failed_ids("semantic", 0) == ["v1"]
    assert list(store.read("semantic", "x")) == ["v0"]  # v1's rows stay, unused
    store.remove_branch("semantic")
    assert store.branches() == [] and not (store.path / "parts/p000000/semantic").exists()
    assert FeatureStore.open(store.path).branches() == []


def test_the_direct_reader_reads_what_upstream_zarr_wrote(tmp_path):
    """Fixture: arrays written by zarr-python v3.1.6 (tests/fixtures/zarr_shards/README.md)."""
    import json as _json
    from pathlib import Path

    from vqa_pipe.pipeline.store_files import array_info, read_direct

    fixture = np.load(Path(__file__).parent / "fixtures/zarr_shards/shards.npz")
    about = _json.loads(str(fixture["_about"]))
    assert about["zarr_version"].startswith("3.1.6")
    for name in about["cases"]:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "zarr.json").write_bytes(fixture[f"{name}/zarr.json"].tobytes())
        for i, rel in enumerate(fixture[f"{name}/files"]):
            target = folder / str(rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(fixture[f"{name}/file{i}"].tobytes())
        values = fixture[f"{name}/values"]
        info = array_info(folder, "fix")
        assert info.direct and info.checksummed, name
        n = len(values)
        complete = name != "absent_chunk"
        for start, stop in {(0, n), (1, n), (0, 1), (n // 3, n - n // 4), (n - 1, n)}:
            got = read_direct(info, start, stop, complete=complete)
            assert got.dtype == values.dtype, name
            np.testing.assert_array_equal(got, values[start:stop], err_msg=name)
    with pytest.raises(StoreError, match="chunk 1 is missing from its index"):
        read_direct(array_info(tmp_path / "absent_chunk", "fix"), 0, 12, complete=True)
