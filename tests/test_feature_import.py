"""``features import``: real VIDEVAL matrices, CSV/NPY/MAT inputs, naming rows, bad files."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from click.testing import CliRunner
from helpers import import_videval, stem
from vqa_pipe.pipeline.feature_import import FeatureImportError, import_features, read_matrix
from vqa_pipe.pipeline.feature_table import FLAT, FeatureError, TableSpec, load_table


def test_konvid_videval_import_keeps_rows_and_counts_nan(shared_data, tmp_path):
    store, manifest, report = import_videval(shared_data, "KONVID_1K", tmp_path)
    matrix = scipy.io.loadmat(shared_data / "features/videval/KONVID_1K_VIDEVAL_feats.mat")[
        "feats_mat"]
    assert len(report.imported) == 1200 and report.n_features == 60
    assert not report.missing and not report.unmatched_rows
    assert report.nan_rows == ["12465909365", "3516162818"]
    assert "2 imported videos have NaN features" in report.summary()
    from vqa_pipe.pipeline.store import FeatureStore

    rows = FeatureStore.open(store).read("videval", "features", ["3339962845", "8171831850"])
    np.testing.assert_array_equal(rows["3339962845"][0], matrix[0].astype(np.float32))
    np.testing.assert_array_equal(rows["8171831850"][0], matrix[1].astype(np.float32))

    with pytest.raises(FeatureError, match=r"2 of 1200 videos of KONVID_1K have NaN.*12465909365"):
        load_table(store, manifest, [FLAT], TableSpec(nan_policy="error"))
    table = load_table(store, manifest, [FLAT])
    assert len(table) == 1198
    assert any("dropped 2 videos with NaN features" in n for n in table.notes)


def test_youtube_ugc_nan_rows_are_dropped_or_imputed_never_silently(shared_data, tmp_path):
    # the FAST-VQA label list (1147 videos) is the manifest; VIDEVAL has 1380 rows
    with open(shared_data / "labels" / "YouTubeUGC" / "labels.txt") as fh:
        ids = {line.split(",")[0].split("_crf_")[0] for line in fh if line.strip()}
    store, manifest, report = import_videval(shared_data, "YOUTUBE_UGC", tmp_path, ids=ids)
    assert len(report.imported) == 1147
    assert len(report.unmatched_rows) == 1380 - 1147  # counted and reported, not an error
    assert "233 rows match no manifest video" in report.summary()
    n_nan = len(report.nan_rows)
    assert n_nan > 0
    dropped = load_table(store, manifest, [FLAT])
    assert len(dropped) == 1147 - n_nan
    assert f"dropped {n_nan} videos with NaN features" in " ".join(dropped.notes)
    zero = load_table(store, manifest, [FLAT], TableSpec(nan_policy="zero"))
    assert len(zero) == 1147 and np.isfinite(zero.inputs[FLAT]).all()
    assert f"imputed 0 for the NaN features of {n_nan} videos" in zero.notes
    mean = load_table(store, manifest, [FLAT], TableSpec(nan_policy="mean"))
    assert np.isnan(mean.inputs[FLAT]).any()  # left for the regressor's training-part means
    from vqa_pipe.pipeline.regressors import create_regressor

    model = create_regressor("ridge")
    model.fit(mean.take(range(800)), mean.take(range(800, 1000)))
    assert np.isfinite(model.predict(mean.take(range(1000, 1147)))).all()


def test_id_pattern_matches_suffixed_ids(shared_data, tmp_path):
    from vqa_pipe.pipeline.manifest import ManifestRow, write_manifest

    with open(shared_data / "labels" / "YouTubeUGC" / "labels.txt") as fh:
        names = [line.split(",")[0].strip() for line in fh if line.strip()][:50]
    manifest = write_manifest(
        [ManifestRow(video_id=stem(n), path=Path(n), mos=3.0, mos_scale="1-5") for n in names],
        tmp_path / "ugc.csv",
    )
    meta = shared_data / "labels" / "YOUTUBE_UGC_metadata.csv"
    mat = shared_data / "features" / "videval" / "YOUTUBE_UGC_VIDEVAL_feats.mat"
    # 'Sports_2160P-4e9f_crf_10_ss_00_t_20.0' is not 'Sports_...': nothing matches, nothing
    # is written, and the corrected retry into the same store is not refused
    with pytest.raises(FeatureImportError, match="no row of .* matches a video.*id-pattern"):
        import_features(mat, manifest, tmp_path / "a.zarr", name="videval",
                        order_file=meta, order_column="vid")
    assert not (tmp_path / "a.zarr").exists()
    report = import_features(mat, manifest, tmp_path / "a.zarr", name="videval",
                             order_file=meta, order_column="vid", id_pattern=r"^(.+?)(_crf_|$)")
    assert len(report.imported) == 50 and not report.missing


def test_csv_with_id_column_and_npy_in_manifest_order(tmp_path):
    from vqa_pipe.pipeline.manifest import ManifestRow, write_manifest
    from vqa_pipe.pipeline.store import FeatureStore

    ids = [f"clip{i}" for i in range(6)]
    manifest = write_manifest(
        [ManifestRow(video_id=v, path=Path(f"{v}.mp4"), mos=1.0 + 0.5 * i, mos_scale="1-5")
         for i, v in enumerate(ids)], tmp_path / "m.csv")
    csv_path = tmp_path / "feats.csv"
    csv_path.write_text("name,f1,f2\nclip3.mp4,3,30\nclip0.mp4,0,\nclip9.mp4,9,90\n")
    report = import_features(csv_path, manifest, tmp_path / "s.zarr", name="tlvqm",
                             id_column="name")
    assert report.imported == ["clip0", "clip3"] and report.nan_rows == ["clip0"]
    assert report.unmatched_rows == ["clip9.mp4"] and len(report.missing) == 4
    status = FeatureStore.open(tmp_path / "s.zarr").status("tlvqm")
    assert status["clip1"].state == "failed" and "no row for this video" in status["clip1"].reason

    npy = tmp_path / "f.npy"
    np.save(npy, np.arange(12, dtype=np.float64).reshape(6, 2))
    report = import_features(npy, manifest, tmp_path / "s.zarr", name="rapique")
    assert report.imported == ids
    rows = FeatureStore.open(tmp_path / "s.zarr").read("rapique", "features", ["clip5"])
    np.testing.assert_array_equal(rows["clip5"], [[10.0, 11.0]])
    # both imported sets pool into one flat vector, in the order asked for
    table = load_table(tmp_path / "s.zarr", manifest, [FLAT],
                       TableSpec(flat_branches=("rapique", "tlvqm"), nan_policy="zero"))
    assert table.video_ids == ["clip0", "clip3"]
    np.testing.assert_array_equal(table.inputs[FLAT], [[0, 1, 0, 0], [6, 7, 3, 30]])


@pytest.mark.parametrize(
    "content, kwargs, message",
    [
        ("name,f1\na,1\nb,x\n", {"id_column": "name"}, r"feats.csv:3: column 'f1' holds 'x'"),
        ("name,f1\na,1\n", {"id_column": "id"}, "no id column 'id'"),
        ("f1,f2\n1,2\n", {}, "has 1 rows but manifest order names 3 videos"),
        ("name,f1\na,1\na,2\n", {"id_column": "name"}, "names some rows twice"),
    ],
)
def test_bad_csv_files_are_named(tmp_path, content, kwargs, message):
    from vqa_pipe.pipeline.manifest import ManifestRow, write_manifest

    manifest = write_manifest(
        [ManifestRow(video_id=v, path=Path(v), mos=None, mos_scale=None) for v in "abc"],
        tmp_path / "m.csv")
    (tmp_path / "feats.csv").write_text(content)
    with pytest.raises(FeatureImportError, match=message):
        import_features(tmp_path / "feats.csv", manifest, tmp_path / "s.zarr", name="x", **kwargs)


def test_matrix_readers(shared_data, tmp_path):
    # MATLAB v7.3 (HDF5): read through h5py and transposed back to MATLAB's orientation
    scores, _, info = read_matrix(shared_data / "labels" / "KoNViD-1kinfo.mat", key="scores")
    assert scores.shape == (1200, 1) and info["key"] == "scores"
    assert scores[0, 0] == pytest.approx(1.22)
    with pytest.raises(FeatureImportError, match="numeric matrices.*say which with --key"):
        read_matrix(shared_data / "labels" / "KoNViD-1kinfo.mat")
    scipy.io.savemat(tmp_path / "two.mat", {"a": np.ones((3, 2)), "b": np.zeros((3, 4))})
    with pytest.raises(FeatureImportError, match=r"2 numeric matrices \(a, b\)"):
        read_matrix(tmp_path / "two.mat")
    assert read_matrix(tmp_path / "two.mat", key="b")[0].shape == (3, 4)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(FeatureImportError, match="object arrays are refused"):
        read_matrix(tmp_path / "obj.npy")
    (tmp_path / "f.txt").write_text("1 2\n")
    with pytest.raises(FeatureImportError, match="unknown feature file type '.txt'"):
        read_matrix(tmp_path / "f.txt")


def test_reimport_from_another_file_is_refused(tmp_path):
    from vqa_pipe.pipeline.manifest import ManifestRow, write_manifest

    manifest = write_manifest(
        [ManifestRow(video_id=v, path=Path(v), mos=None, mos_scale=None) for v in "ab"],
        tmp_path / "m.csv")
    np.save(tmp_path / "one.npy", np.ones((2, 3)))
    np.save(tmp_path / "two.npy", np.zeros((2, 3)))
    import_features(tmp_path / "one.npy", manifest, tmp_path / "s.zarr", name="feat")
    import_features(tmp_path / "one.npy", manifest, tmp_path / "s.zarr", name="feat")  # same: ok
    with pytest.raises(FeatureImportError, match="(?s)another configuration.*sha256"):
        import_features(tmp_path / "two.npy", manifest, tmp_path / "s.zarr", name="feat")
    with pytest.raises(FeatureImportError, match="name of an extracted branch"):
        import_features(tmp_path / "two.npy", manifest, tmp_path / "s.zarr", name="semantic")


def test_import_next_to_extracted_branches_and_fuse(sample_videos, tmp_path):
    from helpers import build_sample_store

    store, manifest = build_sample_store(sample_videos, tmp_path)
    ids = [Path(n).stem for n in sorted(sample_videos)]
    classic = tmp_path / "classic.csv"
    with open(classic, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["video", "a", "b", "c"])
        for i, vid in enumerate(ids):
            writer.writerow([f"{vid}.mp4", i, i * i, 1.0])
    report = import_features(classic, manifest, store, name="classic", id_column="video")
    assert len(report.imported) == 10
    table = load_table(store, manifest, [FLAT], TableSpec(flat_branches=("semantic", "classic")))
    assert table.inputs[FLAT].shape == (5, 12 + 3)  # the 'CNN+VIDEVAL' kind of fusion
    assert [b for b, _, _ in table.info["flat_layout"]] == ["semantic", "classic"]


def test_cli_features_import(tmp_path):
    from vqa_pipe.pipeline.manifest import ManifestRow, write_manifest

    from vqa_pipe.cli import main

    manifest = write_manifest(
        [ManifestRow(video_id=v, path=Path(v), mos=2.0, mos_scale="1-5") for v in "abc"],
        tmp_path / "m.csv")
    (tmp_path / "f.csv").write_text("id,x\na,1\nb,2\nc,nan\n")
    result = CliRunner().invoke(main, [
        "features", "import", str(tmp_path / "f.csv"), "--manifest", str(manifest),
        "--name", "mine", "--id-column", "id", "--store", str(tmp_path / "s.zarr")])
    assert result.exit_code == 0, result.output
    assert "imported 3 videos x 1 features" in result.output
    assert "1 imported videos have NaN features" in result.output
    bad = CliRunner().invoke(main, [
        "features", "import", str(tmp_path / "f.csv"), "--manifest", str(manifest),
        "--name", "mine", "--id-column", "nope", "--store", str(tmp_path / "s2.zarr")])
    assert bad.exit_code != 0 and "no id column 'nope'" in bad.output


def test_resampling_to_fixed_frames():
    from vqa_pipe.pipeline.feature_table import resample_time

    x = np.arange(4, dtype=np.float32)[:, None] * [1.0, 10.0]
    np.testing.assert_allclose(resample_time(x, 7)[:, 0], [0, 0.5, 1, 1.5, 2, 2.5, 3])
    np.testing.assert_allclose(resample_time(x, 2)[:, 1], [5.0, 25.0])  # segment means
    np.testing.assert_array_equal(resample_time(x, 4), x)
    with pytest.raises(FeatureError, match="no frames"):
        resample_time(np.zeros((0, 2)), 4)
    with pytest.raises(FeatureError, match="unknown NaN policy 'skip'"):
        TableSpec(nan_policy="skip")


# ---- memory bombs, complex matrices, retries -------------------------------------------
def _manifest(tmp_path, ids="ab"):
    from vqa_pipe.pipeline.manifest import ManifestRow, write_manifest

    return write_manifest(
        [ManifestRow(video_id=v, path=Path(v), mos=2.0, mos_scale="1-5") for v in ids],
        tmp_path / "m.csv")


def _no_load(monkeypatch):
    """Fail the test if anything tries to load the matrix data."""
    def refuse(*args, **kwargs):
        raise AssertionError("the matrix was loaded before its size was checked")

    monkeypatch.setattr(np, "load", refuse)
    monkeypatch.setattr(scipy.io, "loadmat", refuse)


def test_a_npy_header_claiming_terabytes_is_refused_before_allocating(tmp_path, monkeypatch):
    from numpy.lib import format as npy_format

    bomb = tmp_path / "bomb.npy"
    with open(bomb, "wb") as fh:
        npy_format.write_array_header_1_0(
            fh, {"descr": "<f8", "fortran_order": False, "shape": (1 << 20, 1 << 20)})
        fh.write(b"\0" * 64)
    assert bomb.stat().st_size < 256  # 192 bytes that claim 8 TiB
    _no_load(monkeypatch)
    with pytest.raises(FeatureImportError, match=r"declares shape \(1048576, 1048576\).*"
                                                 r"holds 64 bytes.*truncated or its header"):
        read_matrix(bomb)


def test_declared_sizes_over_the_limit_are_refused(tmp_path, monkeypatch):
    np.save(tmp_path / "m.npy", np.ones((100, 10)))
    scipy.io.savemat(tmp_path / "m.mat", {"feats": np.ones((100, 10))})
    (tmp_path / "m.csv").write_text("a,b\n" + "1,2\n" * 100)
    assert read_matrix(tmp_path / "m.npy", max_bytes=8000)[0].shape == (100, 10)
    _no_load(monkeypatch)
    for name in ("m.npy", "m.mat", "m.csv"):
        with pytest.raises(FeatureImportError, match="over the import limit"):
            read_matrix(tmp_path / name, max_bytes=7999 if name != "m.csv" else 100)


def _v73(path: Path, datasets: dict) -> Path:
    """A MATLAB v7.3 file: HDF5 behind MATLAB's 128-byte header in a 512-byte user block."""
    import h5py

    with h5py.File(path, "w", userblock_size=512) as f:
        for name, make in datasets.items():
            make(f, name)
    header = b"MATLAB 7.3 MAT-file, written by the vqa-pipe tests".ljust(116, b" ")
    with open(path, "r+b") as fh:
        fh.write(header + b"\0" * 8 + b"\x00\x02" + b"IM")
    return path


def test_hdf5_datasets_are_checked_before_reading(tmp_path, monkeypatch):
    path = _v73(tmp_path / "v73.mat", {
        # declared 8 TiB, nothing stored: HDF5 allocates contiguous storage only when written
        "huge": lambda f, n: f.create_dataset(n, shape=(1 << 20, 1 << 20), dtype="f8"),
        "cplx": lambda f, n: f.create_dataset(
            n, data=np.zeros((4, 3), dtype=[("real", "<f8"), ("imag", "<f8")])),
        "fine": lambda f, n: f.create_dataset(n, data=np.arange(6.0).reshape(2, 3)),
    })
    assert path.stat().st_size < 10_000
    matrix, _, _ = read_matrix(path, key="fine")
    np.testing.assert_array_equal(matrix, np.arange(6.0).reshape(2, 3).T)  # MATLAB orientation
    with pytest.raises(FeatureImportError, match=r"'huge'.*declares shape.*holds 0 bytes"):
        read_matrix(path, key="huge")
    with pytest.raises(FeatureImportError, match="'cplx'.*complex numbers.*real part"):
        read_matrix(path, key="cplx")


@pytest.mark.parametrize("suffix", [".npy", ".mat", ".csv"])
def test_complex_matrices_are_refused_not_cut_to_their_real_part(tmp_path, suffix):
    value = np.array([[1 + 2j, 3], [4, 5j]])
    path = tmp_path / f"c{suffix}"
    if suffix == ".npy":
        np.save(path, value)
    elif suffix == ".mat":
        scipy.io.savemat(path, {"feats": value})
    else:
        path.write_text("a,b\n1+2j,3\n")
    message = "complex numbers" if suffix != ".csv" else "holds '1\\+2j', not a number"
    with pytest.raises(FeatureImportError, match=message):
        read_matrix(path)


def test_an_import_that_matches_nothing_writes_nothing_and_the_fix_is_accepted(tmp_path):
    manifest = _manifest(tmp_path)
    (tmp_path / "f.csv").write_text("id,x\na_v1.mp4,1\nb_v1.mp4,2\n")
    store = tmp_path / "s.zarr"
    import_features(tmp_path / "f.csv", manifest, store, name="other", id_column="id",
                    id_pattern="^([ab])")  # the store exists, with another branch
    with pytest.raises(FeatureImportError, match="no row of .* matches a video.*Nothing was"):
        import_features(tmp_path / "f.csv", manifest, store, name="mine", id_column="id")
    from vqa_pipe.pipeline.store import FeatureStore

    assert FeatureStore.open(store).branches() == ["other"]
    report = import_features(tmp_path / "f.csv", manifest, store, name="mine", id_column="id",
                             id_pattern="^([ab])")
    assert report.imported == ["a", "b"]


def test_replace_swaps_a_branch_and_a_failed_import_leaves_nothing(tmp_path, monkeypatch):
    from vqa_pipe.pipeline.store import FeatureStore

    manifest = _manifest(tmp_path, "abcd")
    np.save(tmp_path / "one.npy", np.ones((4, 3)))
    np.save(tmp_path / "two.npy", np.full((4, 2), 2.0))
    store = tmp_path / "s.zarr"
    import_features(tmp_path / "one.npy", manifest, store, name="feat", part_size=2)
    with pytest.raises(FeatureImportError, match="(?s)another configuration.*--replace"):
        import_features(tmp_path / "two.npy", manifest, store, name="feat")
    import_features(tmp_path / "two.npy", manifest, store, name="feat", replace=True)
    rows = FeatureStore.open(store).read("feat", "features")
    assert all(np.array_equal(r, [[2.0, 2.0]]) for r in rows.values()) and len(rows) == 4

    # a failure half-way (here: the disk, on the second part) removes the new branch ...
    real = FeatureStore.write_part

    def fail_on_part_1(self, branch, part, results):
        if part == 1:
            raise OSError(28, "No space left on device")
        return real(self, branch, part, results)

    monkeypatch.setattr(FeatureStore, "write_part", fail_on_part_1)
    with pytest.raises(OSError):
        import_features(tmp_path / "one.npy", manifest, store, name="late")
    assert FeatureStore.open(store).branches() == ["feat"]
    assert not (store / "parts/p000000/late").exists()
    # ... and a store the import created
    with pytest.raises(OSError):
        import_features(tmp_path / "one.npy", manifest, tmp_path / "new.zarr", name="x",
                        part_size=2)
    assert not (tmp_path / "new.zarr").exists()


def test_unwritable_output_is_one_line_naming_it(tmp_path):
    manifest = _manifest(tmp_path)
    np.save(tmp_path / "f.npy", np.ones((2, 3)))
    (tmp_path / "file").write_text("in the way")
    for out in (tmp_path / "file", tmp_path / "file" / "s.zarr"):
        with pytest.raises(FeatureImportError) as err:
            import_features(tmp_path / "f.npy", manifest, out, name="feat")
        assert "\n" not in str(err.value) and str(tmp_path / "file") in str(err.value)
