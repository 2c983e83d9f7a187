"""``features import``: real VIDEVAL matrices, CSV/NPY/MAT inputs, naming rows, bad files."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from click.testing import CliRunner
from vqa_pipe.pipeline.feature_import import FeatureImportError, import_features, read_matrix
from vqa_pipe.pipeline.feature_table import FLAT, FeatureError, TableSpec, load_table

# dataset -> (metadata file, id column, MOS column, scale)
VIDEVAL = {
    "KONVID_1K": ("KONVID_1K_metadata.csv", "flickr_id", "mos", "1-5"),
    "LIVE_VQC": ("LIVE_VQC_metadata.csv", "File", "MOS", "0-100"),
    "YOUTUBE_UGC": ("YOUTUBE_UGC_metadata.csv", "vid", "MOSFull", "1-5"),
}


def _stem(name: str) -> str:
    return name.rsplit(".", 1)[0]


def videval_manifest(shared_data: Path, dataset: str, path: Path, ids=None) -> Path:
    """A manifest of a VIDEVAL dataset from its metadata (ids as the manifest builder makes
    them: KoNViD flickr id, LIVE-VQC file stem, YouTube-UGC ``vid``)."""
    from vqa_pipe.pipeline.manifest import ManifestRow, write_manifest

    meta, id_col, mos_col, scale = VIDEVAL[dataset]
    with open(shared_data / "labels" / meta, newline="") as fh:
        records = list(csv.DictReader(fh))
    rows = []
    for rec in records:
        vid = _stem(rec[id_col]) if dataset == "LIVE_VQC" else rec[id_col]
        if ids is not None and vid not in ids:
            continue
        rows.append(ManifestRow(video_id=vid, path=Path(f"videos/{vid}.mp4"),
                                mos=float(rec[mos_col]), mos_scale=scale))
    return write_manifest(rows, path)


def import_videval(shared_data: Path, dataset: str, folder: Path, **kwargs):
    """Manifest + store with the real VIDEVAL features of ``dataset`` in ``folder``."""
    meta, id_col, _, _ = VIDEVAL[dataset]
    manifest = videval_manifest(shared_data, dataset, folder / f"{dataset}.csv",
                                kwargs.pop("ids", None))
    report = import_features(
        shared_data / "features" / "videval" / f"{dataset}_VIDEVAL_feats.mat",
        manifest, folder / f"{dataset}.zarr", name="videval",
        order_file=shared_data / "labels" / meta, order_column=id_col, part_size=128, **kwargs,
    )
    return folder / f"{dataset}.zarr", manifest, report


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
        [ManifestRow(video_id=_stem(n), path=Path(n), mos=3.0, mos_scale="1-5") for n in names],
        tmp_path / "ugc.csv",
    )
    meta = shared_data / "labels" / "YOUTUBE_UGC_metadata.csv"
    mat = shared_data / "features" / "videval" / "YOUTUBE_UGC_VIDEVAL_feats.mat"
    plain = import_features(mat, manifest, tmp_path / "a.zarr", name="videval",
                            order_file=meta, order_column="vid")
    assert len(plain.missing) == 50  # 'Sports_2160P-4e9f_crf_10_ss_00_t_20.0' is not 'Sports_...'
    report = import_features(mat, manifest, tmp_path / "b.zarr", name="videval",
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
    from test_regressors import build_sample_store

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
