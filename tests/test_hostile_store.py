"""A generated corpus of damaged stores: every read path refuses the damage with one line
naming the file and the fix, and ``verify`` names the damaged videos and marks them for redo.

Each case builds the same tiny store in tmp (6 videos in parts of 2, an extracted-style
branch with two arrays and an imported-style branch), damages it one way, and checks
``FeatureStore.read``, ``iter_video_rows`` (the training path), ``FeatureStore.to_dask`` and
``load_table``, then :func:`verify_store`.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr
from vqa_pipe.pipeline.feature_table import FLAT, SEQUENCE, iter_video_rows, load_table
from vqa_pipe.pipeline.manifest import ManifestRow, write_manifest
from vqa_pipe.pipeline.store import FeatureStore, StoreError
from vqa_pipe.stages.verify import EXIT_CLEAN, EXIT_DAMAGED, EXIT_UNREADABLE, verify_store

IDS = [f"v{i}" for i in range(6)]
FRAMES = {"v0": 3, "v1": 2, "v2": 4, "v3": 1, "v4": 2, "v5": 3}
BRANCH = "semantic"


def _scores(vid: str) -> np.ndarray:
    i = IDS.index(vid)
    n = FRAMES[vid]
    return (i + 0.1 * np.arange(n * 4, dtype=np.float32).reshape(n, 4) + 0.05).astype(np.float32)


def _results(part: int, failed: tuple[str, ...] = ()) -> dict:
    out = {}
    for vid in IDS[2 * part : 2 * part + 2]:
        if vid in failed:
            out[vid] = "DecodeError: corrupt"
            continue
        n = FRAMES[vid]
        out[vid] = {"frame_scores": _scores(vid),
                    "frame_times": np.arange(n, dtype=np.float32) * 0.5 + 0.25}
    return out


def build(folder: Path) -> tuple[Path, Path]:
    """The tiny store (v1 failed at extraction) and its manifest."""
    path = folder / "s.zarr"
    store = FeatureStore.create_or_open(path, IDS, part_size=2)
    store.ensure_branch(BRANCH, {"model": "m", "random_weights": True})
    store.ensure_branch("feat", {"kind": "imported", "name": "feat"})
    store.put_branch_array(BRANCH, "text_embeddings", np.eye(4, dtype=np.float32))
    for part in range(3):
        store.write_part(BRANCH, part, _results(part, failed=("v1",)))
        store.write_part("feat", part, {v: {"features": np.full((1, 3), IDS.index(v), np.float32)}
                                        for v in IDS[2 * part : 2 * part + 2]})
    manifest = write_manifest(
        [ManifestRow(video_id=v, path=Path(f"{v}.mp4"), mos=1.0 + i * 0.5, mos_scale="1-5")
         for i, v in enumerate(IDS)], folder / "m.csv")
    return path, manifest


def _edit_json(path: Path, change) -> None:
    node = json.loads(path.read_text())
    change(node)
    path.write_text(json.dumps(node))


def _rewrite_array(folder: Path, data: np.ndarray) -> None:
    """Replace an array as a writer would (checksums and all), keeping the status as it was."""
    group = zarr.open_group(str(folder.parent), mode="a")
    FeatureStore._write_array(group, folder.name, data)


def _shard(store: Path, part: int, array: str = "frame_scores") -> Path:
    return store / f"parts/p{part:06d}/{BRANCH}/{array}/c/0/0"


# ---- the damage: name -> (damage(store), file the error must name, damaged videos)
def delete_chunk(s):
    _shard(s, 1).unlink()
    return _shard(s, 1), ["v2", "v3"]


def double_shape(s):
    meta = s / f"parts/p000001/{BRANCH}/frame_scores/zarr.json"
    _edit_json(meta, lambda n: n.__setitem__("shape", [n["shape"][0] * 2, 4]))
    return meta.parent, ["v2", "v3"]


def shift_offsets(s):
    folder = s / f"parts/p000001/{BRANCH}/offsets"
    _rewrite_array(folder, np.array([0, 3, 5], np.int64))  # truth: [0, 4, 5]
    return folder, ["v2", "v3"]


def flip_bit(s):
    shard = _shard(s, 2)
    raw = bytearray(shard.read_bytes())
    raw[20] ^= 0x04
    shard.write_bytes(bytes(raw))
    return shard, ["v4", "v5"]


def short_offsets(s):
    folder = s / f"parts/p000001/{BRANCH}/offsets"
    _rewrite_array(folder, np.array([0, 4], np.int64))
    return folder, ["v2", "v3"]


def status_not_a_dict(s):
    meta = s / f"parts/p000001/{BRANCH}/zarr.json"
    _edit_json(meta, lambda n: n["attributes"].__setitem__("status", ["done", "done"]))
    return meta, ["v2", "v3"]


def unknown_array(s):
    meta = s / f"parts/p000000/{BRANCH}/zarr.json"
    _edit_json(meta, lambda n: n["attributes"]["status"]["arrays"].append("ghost"))
    return s / f"parts/p000000/{BRANCH}/ghost", ["v0"]


def wrong_dtype(s):
    folder = s / f"parts/p000001/{BRANCH}/frame_scores"
    _rewrite_array(folder, np.concatenate([_scores("v2"), _scores("v3")]).astype(np.float64))
    return folder, ["v2", "v3"]


def float_offsets(s):
    folder = s / f"parts/p000001/{BRANCH}/offsets"
    _rewrite_array(folder, np.array([0, 4, 5], np.float64))
    return folder, ["v2", "v3"]


def truncate_shard(s):
    shard = _shard(s, 1)
    shard.write_bytes(shard.read_bytes()[:-10])
    return shard, ["v2", "v3"]


CASES = [delete_chunk, double_shape, shift_offsets, flip_bit, short_offsets, status_not_a_dict,
         unknown_array, wrong_dtype, float_offsets, truncate_shard]


def _read_paths(path: Path, manifest: Path):
    """Every way stage two (or a user) reads the branch."""
    yield "read", lambda: FeatureStore.open(path).read(BRANCH, "frame_scores")
    yield "iter_video_rows", lambda: list(iter_video_rows(
        FeatureStore.open(path), BRANCH, "frame_scores", ["v0", "v2", "v3", "v4", "v5"]))
    yield "to_dask", lambda: FeatureStore.open(path).to_dask(BRANCH, "frame_scores")[0].compute()
    yield "load_table", lambda: load_table(path, manifest, [SEQUENCE])


def _one_line_naming(err: Exception, where: Path) -> None:
    text = str(err)
    assert "\n" not in text, text
    assert str(where) in text, f"{where} not named in: {text}"
    assert "vqa-pipe verify" in text or "restore" in text, f"no fix in: {text}"


def test_the_undamaged_store_reads_and_verifies_clean(tmp_path):
    path, manifest = build(tmp_path)
    for _, read in _read_paths(path, manifest):
        read()
    rows = FeatureStore.open(path).read(BRANCH, "frame_scores")
    assert list(rows) == ["v0", "v2", "v3", "v4", "v5"]
    for vid, value in rows.items():
        np.testing.assert_array_equal(value, _scores(vid))
    array, slices = FeatureStore.open(path).to_dask(BRANCH, "frame_scores")
    np.testing.assert_array_equal(array[slices["v4"]].compute(), _scores("v4"))
    table = load_table(path, manifest, [SEQUENCE, FLAT])
    assert table.video_ids == ["v0", "v2", "v3", "v4", "v5"]
    report = verify_store(path)
    assert report.ok and report.exit_code == EXIT_CLEAN, report.summary()
    assert report.counts[BRANCH] == {"done": 5, "failed": 1}
    # 3 parts x (2 + 1) data arrays of one chunk each; + offsets and the text embeddings
    assert report.chunks_checked == 9 and report.arrays_checked == 9 + 6 + 1


@pytest.mark.parametrize("damage", CASES, ids=[c.__name__ for c in CASES])
def test_damage_is_refused_on_every_read_path_and_verify_names_the_videos(tmp_path, damage):
    path, manifest = build(tmp_path)
    where, videos = damage(path)
    for name, read in _read_paths(path, manifest):
        if damage is unknown_array and name != "load_table":
            continue  # reading another array of that part is not affected; see below
        with pytest.raises(StoreError) as err:
            read()
        _one_line_naming(err.value, where)
    if damage is unknown_array:
        with pytest.raises(StoreError, match="ghost") as err:
            FeatureStore.open(path).arrays(BRANCH)
        _one_line_naming(err.value, where)

    report = verify_store(path)
    assert report.exit_code == EXIT_DAMAGED, report.summary()
    assert report.damaged() == {BRANCH: videos}, report.summary()
    assert str(where) in report.summary()
    assert "feat" not in report.damaged()  # the other branch is fine

    # mark them for redo: they become failed, the rest of the store reads again
    marked = verify_store(path, mark=True)
    assert marked.marked == {BRANCH: videos}
    store = FeatureStore.open(path)
    status = store.status(BRANCH)
    for vid in videos:
        if damage is status_not_a_dict:  # no status to trust: the whole part is redone
            assert status[vid].state == "pending"
        else:
            assert status[vid].state == "failed" and status[vid].reason.startswith("damaged: ")
    survivors = [v for v in IDS if v not in videos and v != "v1"]
    assert list(store.read(BRANCH, "frame_scores")) == survivors
    # what `extract --retry-failed` does: keep the done videos, redo the failed ones whole
    store = FeatureStore.open(path, writable=True)
    for part in sorted({store.part_of(v) for v in videos}):
        redo = set(store.part_failed_ids(BRANCH, part)) if store.part_complete(BRANCH, part) \
            else set(store.part_ids(part))
        assert redo >= {v for v in videos if store.part_of(v) == part}
        keep = store.read(BRANCH, "frame_scores", [v for v in store.part_ids(part)
                                                   if v not in redo])
        assert all(np.array_equal(keep[v], _scores(v)) for v in keep)
        store.write_part(BRANCH, part, _results(part, failed=("v1",)))
    assert verify_store(path).exit_code == EXIT_CLEAN


def test_an_extra_array_the_status_does_not_list_is_damage(tmp_path):
    path, _ = build(tmp_path)
    folder = path / f"parts/p000002/{BRANCH}"
    _rewrite_array(folder / "stray", np.zeros((5, 2), np.float32))
    report = verify_store(path)
    assert report.damaged() == {BRANCH: ["v4", "v5"]}
    assert "stray" in report.summary()
    verify_store(path, mark=True)
    store = FeatureStore.open(path, writable=True)
    store.write_part(BRANCH, 2, _results(2))  # the redo rewrites the part without it
    assert not (folder / "stray").exists()
    assert verify_store(path).ok


def test_a_flipped_bit_costs_only_the_videos_of_its_chunk(tmp_path):
    """Chunks of ~4 MiB hold many videos; verify localises damage to one chunk's rows."""
    ids = [f"w{i}" for i in range(4)]
    store = FeatureStore.create_or_open(tmp_path / "big.zarr", ids, part_size=4)
    store.ensure_branch(BRANCH, {"model": "m"})
    rows = 2000  # 2000 x 1024 float32 = 8 MiB per video: chunks of 1024 rows
    store.write_part(BRANCH, 0, {
        v: {"frame_scores": np.full((rows, 1024), i + 1, np.float32)} for i, v in enumerate(ids)})
    shard = tmp_path / f"big.zarr/parts/p000000/{BRANCH}/frame_scores/c/0/0"
    raw = bytearray(shard.read_bytes())
    # the index says where chunk 3 (rows 3072-4095: videos w1 and w2) starts
    index = np.frombuffer(bytes(raw[-(16 * 8 + 4):-4]), "<u8").reshape(8, 2)
    raw[int(index[3, 0]) + 10] ^= 0x01
    shard.write_bytes(bytes(raw))
    report = verify_store(tmp_path / "big.zarr")
    assert report.damaged() == {BRANCH: ["w1", "w2"]}, report.summary()
    verify_store(tmp_path / "big.zarr", mark=True)
    kept = FeatureStore.open(tmp_path / "big.zarr").read(BRANCH, "frame_scores")
    assert sorted(kept) == ["w0", "w3"] and (kept["w3"] == 4).all()


def test_non_finite_values_are_damage_in_extracted_branches_only(tmp_path):
    path, _ = build(tmp_path)
    folder = path / f"parts/p000000/{BRANCH}/frame_scores"
    bad = _scores("v0").copy()
    bad[1, 2] = np.nan
    _rewrite_array(folder, bad)
    feat = path / "parts/p000002/feat/features"
    _rewrite_array(feat, np.array([[4, np.nan, 4], [5, 5, 5]], np.float32))
    report = verify_store(path)
    assert report.damaged() == {BRANCH: ["v0"]}
    assert any("1 imported rows hold NaN" in n for n in report.notes)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda p: (p / "zarr.json").write_text("{not json"), "is not valid JSON"),
        (lambda p: _edit_json(p / "zarr.json",
                              lambda n: n["attributes"]["vqa_pipe"].__setitem__("part_size", 0)),
         "part_size 0 is not a positive integer"),
        (lambda p: _edit_json(p / "zarr.json",
                              lambda n: n["attributes"]["vqa_pipe"].__setitem__("format", "2")),
         "store format '2' is not a format number"),
        (lambda p: _edit_json(p / "zarr.json",
                              lambda n: n["attributes"]["vqa_pipe"].__setitem__("video_ids", 7)),
         "video_ids is not a list"),
        (lambda p: _edit_json(p / "zarr.json",
                              lambda n: n["attributes"]["vqa_pipe"].__setitem__("branches", [])),
         "'branches' is not a mapping"),
    ],
    ids=["bad-json", "part-size-0", "string-format", "video-ids", "branches"],
)
def test_damaged_root_metadata_is_one_line_and_verify_exit_4(tmp_path, change, message):
    path, manifest = build(tmp_path)
    change(path)
    for opener in (lambda: FeatureStore.open(path),
                   lambda: FeatureStore.create_or_open(path, IDS, part_size=2),
                   lambda: load_table(path, manifest, [FLAT])):
        with pytest.raises(StoreError, match=message) as err:
            opener()
        assert "\n" not in str(err.value) and str(path / "zarr.json") in str(err.value)
    report = verify_store(path)
    assert report.exit_code == EXIT_UNREADABLE and message in report.summary()
    with pytest.raises(StoreError, match="no feature store"):
        verify_store(tmp_path / "nothing")


def test_a_newer_format_is_refused_with_the_fix(tmp_path):
    path, _ = build(tmp_path)
    _edit_json(path / "zarr.json", lambda n: n["attributes"]["vqa_pipe"].__setitem__("format", 9))
    with pytest.raises(StoreError, match="newer vqa-pipe.*upgrade"):
        FeatureStore.open(path)


def test_stale_consolidated_metadata_is_found_and_dropped(tmp_path):
    path, _ = build(tmp_path)
    FeatureStore.open(path, writable=True).consolidate()
    assert verify_store(path).ok
    # a writer that forgot to consolidate: plain zarr readers would see the old status
    meta = path / f"parts/p000000/{BRANCH}/zarr.json"
    _edit_json(meta, lambda n: n["attributes"]["status"]["reason"].__setitem__(1, "other"))
    report = verify_store(path)
    assert report.exit_code == EXIT_DAMAGED and "consolidated metadata" in report.summary()
    assert report.damaged() == {}
    fixed = verify_store(path, mark=True)
    assert fixed.reset_consolidated and verify_store(path).ok


def test_a_part_array_without_checksum_is_damage_in_format_2(tmp_path):
    path, _ = build(tmp_path)
    meta = path / f"parts/p000002/{BRANCH}/frame_times/zarr.json"
    _edit_json(meta, lambda n: n["codecs"][0]["configuration"]["codecs"][1][
        "configuration"].__setitem__("checksum", False))
    report = verify_store(path)
    assert report.damaged() == {BRANCH: ["v4", "v5"]} and "no checksum" in report.summary()


def test_a_damaged_branch_array_is_reported(tmp_path):
    path, _ = build(tmp_path)
    shard = path / f"meta/{BRANCH}/text_embeddings/c/0/0"
    raw = bytearray(shard.read_bytes())
    raw[12] ^= 0x40
    shard.write_bytes(bytes(raw))
    with pytest.raises(StoreError, match="text_embeddings"):
        FeatureStore.open(path).branch_array(BRANCH, "text_embeddings")
    report = verify_store(path)
    assert report.exit_code == EXIT_DAMAGED and report.damaged() == {}
    assert "text_embeddings" in report.summary()


def test_disk_full_names_the_path_and_the_fix(tmp_path, monkeypatch):
    import zarr.storage._local as local

    path, _ = build(tmp_path)
    store = FeatureStore.open(path, writable=True)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # no file name, like the kernel

    monkeypatch.setattr(local, "_put", full)
    with pytest.raises(StoreError) as err:
        store.write_part(BRANCH, 0, _results(0))
    text = str(err.value)
    assert "\n" not in text and str(path / f"parts/p000000/{BRANCH}") in text
    assert "No space left on device" in text and "free space" in text


def test_unwritable_output_path_is_one_line(tmp_path):
    if os.geteuid() == 0:
        target = Path("/proc/vqa-pipe-cannot-write-here/s.zarr")  # root can write anywhere else
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        target = locked / "s.zarr"
    with pytest.raises(StoreError) as err:
        FeatureStore.create_or_open(target, IDS, part_size=2)
    assert "\n" not in str(err.value) and str(target) in str(err.value)


def _format1_store(folder: Path) -> Path:
    """A store as format 1 wrote it: zarr's default codecs (no checksum, all-zero chunks not
    written), no part format in the status."""
    path = folder / "old.zarr"
    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    root.attrs["vqa_pipe"] = {"format": 1, "package_version": "0.1.0", "part_size": 2,
                              "video_ids": IDS[:4], "branches": {BRANCH: {"model": "m"}}}
    for part in range(2):
        group = zarr.open_group(str(path), path=f"parts/p{part:06d}/{BRANCH}", mode="a")
        ids = IDS[2 * part : 2 * part + 2]
        rows = [FRAMES[v] for v in ids]
        data = np.concatenate([_scores(v) for v in ids])
        offsets = np.concatenate([[0], np.cumsum(rows)]).astype(np.int64)
        for name, value in (("offsets", offsets), ("frame_scores", data)):
            array = group.create_array(name, shape=value.shape, dtype=value.dtype,
                                       chunks=value.shape, shards=value.shape)
            array[...] = value
        group.attrs["status"] = {"video_ids": ids, "state": ["done"] * 2, "reason": ["", ""],
                                 "rows": rows, "arrays": ["frame_scores"]}
    return path


def test_format_1_stores_stay_readable_and_verify_says_what_it_cannot_check(tmp_path):
    path = _format1_store(tmp_path)
    store = FeatureStore.open(path)
    assert store.format == 1
    rows = store.read(BRANCH, "frame_scores")
    for vid in IDS[:4]:
        np.testing.assert_array_equal(rows[vid], _scores(vid))
    report = verify_store(path)
    assert report.ok, report.summary()
    assert any("format 1" in n and "no checksum" in n for n in report.notes)
    shutil.rmtree(path / f"parts/p000001/{BRANCH}/frame_scores/c")
    with pytest.raises(StoreError, match="is missing"):
        FeatureStore.open(path).read(BRANCH, "frame_scores")
    assert verify_store(path).damaged() == {BRANCH: ["v2", "v3"]}


def test_verify_mark_then_retry_failed_repairs_an_extracted_store(tmp_path, sample_videos):
    """The whole repair loop on real videos: damage, verify, mark, `extract --retry-failed`."""
    from vqa_pipe.stages.extract import build_branches, run_extract

    names = ["konvid_10053703034.mp4", "lsvq_1724.mp4", "kinetics_FEQ-gdkTN4Q_000008_000018.mp4"]
    rows = [ManifestRow(Path(n).stem, sample_videos[n]["path"], 3.0, "1-5") for n in names]
    manifest = write_manifest(rows, tmp_path / "m.csv")
    branches = build_branches(["semantic"], clip_model="vqa-tiny-clip", random_weights=True,
                              fps=1.0, max_frames=2)
    path = tmp_path / "s.zarr"
    run_extract(manifest, path, branches, part_size=2, progress=False)
    before = FeatureStore.open(path).read(BRANCH, "window_embeddings")
    shard = path / f"parts/p000000/{BRANCH}/window_embeddings/c/0/0/0"  # (F, windows, D)
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 3] ^= 0x20
    shard.write_bytes(bytes(raw))

    report = verify_store(path, mark=True)
    damaged = report.damaged()[BRANCH]
    assert damaged and set(damaged) <= {r.video_id for r in rows[:2]}, report.summary()
    retry = run_extract(manifest, path, branches, part_size=2, progress=False,
                        retry_failed=True)
    assert sorted(retry.done) == sorted(damaged)
    assert verify_store(path).exit_code == EXIT_CLEAN
    after = FeatureStore.open(path).read(BRANCH, "window_embeddings")
    for vid, value in before.items():  # same seeded weights, same frames: same features
        np.testing.assert_array_equal(after[vid], value)


def test_inspect_counts_videos_marked_damaged(tmp_path):
    from vqa_pipe.stages.inspect import describe_store

    path, _ = build(tmp_path)
    flip_bit(path)
    verify_store(path, mark=True)
    text = describe_store(path)
    assert "done 3, failed 3 (2 marked damaged, redone by --retry-failed), pending 0" in text
    assert "damaged: found by vqa-pipe verify" in text


def test_verify_through_the_cli(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from vqa_pipe.cli import main

    path, _ = build(tmp_path)
    clean = CliRunner().invoke(main, ["verify", str(path)])
    assert clean.exit_code == EXIT_CLEAN, clean.output
    flip_bit(path)
    found = CliRunner().invoke(main, ["verify", str(path)])
    assert found.exit_code == EXIT_DAMAGED and "v4" in found.output and "v5" in found.output
    assert FeatureStore.open(path).status(BRANCH)["v4"].state == "done"  # nothing written
    marked = CliRunner().invoke(main, ["verify", str(path), "--mark"])
    assert marked.exit_code == EXIT_DAMAGED
    assert FeatureStore.open(path).status(BRANCH)["v4"].state == "failed"
    # a dataset name works too
    monkeypatch.chdir(tmp_path)
    (tmp_path / "features").mkdir()
    path.rename(tmp_path / "features" / "mine.zarr")
    again = CliRunner().invoke(main, ["verify", "mine"])
    assert again.exit_code == EXIT_CLEAN, again.output  # the damaged rows are no longer used
    assert "belong only to videos recorded as failed" in again.output
