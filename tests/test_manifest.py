"""Manifests: real label files, missing videos, bad MOS, the generic CSV, round trips, the CLI."""

from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from vqa_pipe.pipeline.datasets import get_dataset, list_datasets, read_labels
from vqa_pipe.pipeline.manifest import (
    COLUMNS,
    MOS_SCALES,
    ManifestError,
    ManifestRow,
    MissingVideosError,
    read_manifest,
    write_manifest,
)
from vqa_pipe.stages.manifest import ManifestParams, run

from vqa_pipe.cli import main


@pytest.fixture(scope="session")
def labels_dir(shared_data: Path) -> Path:
    return shared_data / "labels"


REAL = [
    # dataset, label file under shared/data/labels, rows, scale, first id
    ("konvid", "KoNViD/labels.txt", 1200, "1-5", "4542323058"),
    ("konvid", "KONVID_1K_metadata.csv", 1200, "1-5", "3339962845"),
    ("live_vqc", "LIVE_VQC/labels.txt", 585, "0-100", "A001"),
    ("live_vqc", "LIVE_VQC_metadata.csv", 585, "0-100", "A001"),
    ("youtube_ugc", "YouTubeUGC/labels.txt", 1147, "1-5", "Sports_2160P-4e9f"),
    ("youtube_ugc", "YOUTUBE_UGC_metadata.csv", 1380, "1-5", "Animation_1080P-01b3"),
    ("lsvq_test", "LSVQ/labels_test.txt", 7186, "0-100", "yfcc-batch1/747"),
    ("lsvq_test_1080p", "LSVQ/labels_1080p.txt", 3573, "0-100", "yfcc-batch1/722"),
    ("lsvq_train", "train_labels.txt", 28056, "0-100", "yfcc-batch1/725"),
]


@pytest.mark.parametrize(("dataset", "rel", "count", "scale", "first_id"), REAL)
def test_real_label_files(labels_dir, tmp_path, dataset, rel, count, scale, first_id):
    table = read_labels(dataset, tmp_path, labels_dir / rel)
    rows = table.rows
    assert len(rows) == count
    assert table.mos_scale == scale and {r.mos_scale for r in rows} == {scale}
    low, high = MOS_SCALES[scale]
    assert all(low <= r.mos <= high for r in rows)
    assert rows[0].video_id == first_id
    assert len({r.video_id for r in rows}) == count
    assert all(str(r.path).startswith(f"{tmp_path}/") for r in rows)


def test_real_files_map_to_the_usual_video_paths(labels_dir, tmp_path):
    konvid = read_labels("konvid", tmp_path, labels_dir / "KoNViD/labels.txt").rows[0]
    assert konvid.path == tmp_path / "KoNViD_1k_videos/4542323058.mp4"
    assert (konvid.fps, konvid.duration_s) == (pytest.approx(29.97, abs=0.01), 8.008)
    meta = read_labels("konvid", tmp_path, labels_dir / "KONVID_1K_metadata.csv").rows[0]
    assert (meta.width, meta.height, meta.n_frames, meta.mos) == (960, 540, 240, 4.64)
    assert meta.path == tmp_path / "3339962845.mp4"
    ugc = read_labels("youtube_ugc", tmp_path, labels_dir / "YouTubeUGC/labels.txt").rows[0]
    assert ugc.path.name == "Sports_2160P-4e9f_crf_10_ss_00_t_20.0.mp4"
    assert ugc.fps is None and ugc.duration_s is None  # -1 in labels.txt means unknown
    ugc_meta = read_labels("youtube_ugc", tmp_path, labels_dir / "YOUTUBE_UGC_metadata.csv")
    first = ugc_meta.rows[0]
    assert first.path.name == "Animation_1080P-01b3.mkv" and first.n_frames is None  # NaN
    lsvq = read_labels("lsvq_test", tmp_path, labels_dir / "LSVQ/labels_test.txt").rows[0]
    assert lsvq.path == tmp_path / "yfcc-batch1/747.mp4"


def test_metadata_reader_finds_videos_in_usual_subfolders(labels_dir, tmp_path):
    (tmp_path / "Video").mkdir()
    (tmp_path / "Video/A002.mp4").touch()
    (tmp_path / "A003.mp4").touch()
    rows = read_labels("live_vqc", tmp_path, labels_dir / "LIVE_VQC_metadata.csv").rows
    by_id = {r.video_id: r.path for r in rows}
    assert by_id["A002"] == tmp_path / "Video/A002.mp4"
    assert by_id["A003"] == tmp_path / "A003.mp4"


def test_ugc_metadata_finds_the_h264_distribution_name(labels_dir, tmp_path):
    (tmp_path / "Animation_1080P-05f8_crf_10_ss_00_t_20.0.mp4").touch()
    rows = read_labels("youtube_ugc", tmp_path, labels_dir / "YOUTUBE_UGC_metadata.csv").rows
    by_id = {r.video_id: r.path for r in rows}
    assert by_id["Animation_1080P-05f8"].name == "Animation_1080P-05f8_crf_10_ss_00_t_20.0.mp4"
    assert by_id["Animation_1080P-01b3"].name == "Animation_1080P-01b3.mkv"


def test_default_label_file_is_found_under_root(labels_dir, tmp_path):
    shutil.copy(labels_dir / "LSVQ/labels_1080p.txt", tmp_path / "labels_1080p.txt")
    assert len(read_labels("lsvq_test_1080p", tmp_path).rows) == 3573
    with pytest.raises(ManifestError, match="labels_test.txt, LSVQ_whole_test.csv"):
        read_labels("lsvq_test", tmp_path)


def test_wrong_dataset_for_a_file_names_the_lines(labels_dir, tmp_path):
    with pytest.raises(ManifestError, match=r"line 1: MOS 80.232 is outside the 1-5 scale"):
        read_labels("konvid", tmp_path, labels_dir / "LIVE_VQC/labels.txt")


@pytest.mark.parametrize("name", list_datasets())
def test_every_registered_dataset_reads_its_own_form(name, tmp_path):
    spec = get_dataset(name)
    assert spec.label_files
    with pytest.raises(ManifestError, match=spec.label_files[0]):
        spec.find_label_file(tmp_path)


def test_unknown_dataset_lists_the_valid_ones():
    with pytest.raises(ManifestError, match="valid: konvid, live_vqc"):
        get_dataset("kadid")


# ------------------------------------------------------------------ missing files


def _konvid_root(labels_dir: Path, tmp_path: Path, present: int) -> tuple[Path, list[str]]:
    root = tmp_path / "konvid"
    (root / "KoNViD_1k_videos").mkdir(parents=True)
    shutil.copy(labels_dir / "KoNViD/labels.txt", root / "labels.txt")
    names = [line.split(",")[0] for line in (root / "labels.txt").read_text().splitlines()]
    for name in names[:present]:
        (root / name).touch()
    return root, [Path(n).stem for n in names[:present]]


def test_missing_files_are_listed_in_one_message(labels_dir, tmp_path):
    root, present = _konvid_root(labels_dir, tmp_path, present=3)
    params = ManifestParams(dataset="konvid", root=root, out=tmp_path / "m.csv")
    with pytest.raises(MissingVideosError) as info:
        run(params)
    message = str(info.value)
    assert "1197 of 1200 video file(s) are missing" in message
    fourth = (root / "labels.txt").read_text().splitlines()[3].split(",")[0]
    assert f"{Path(fourth).stem}: {root / fourth}" in message
    assert not any(vid in message for vid in present)
    assert "--allow-missing" in message and "and 1177 more" in message
    assert len(info.value.missing) == 1197
    assert not (tmp_path / "m.csv").exists()


def test_allow_missing_keeps_the_rest_and_says_how_many(labels_dir, tmp_path):
    root, present = _konvid_root(labels_dir, tmp_path, present=3)
    out = tmp_path / "m.csv"
    report = run(ManifestParams(dataset="konvid", root=root, out=out, allow_missing=True))
    assert report.n_rows == 3 and len(report.missing) == 1197
    assert "dropped 1197 video(s)" in report.summary()
    rows = read_manifest(out)
    assert [r.video_id for r in rows] == present
    assert all(r.path.is_file() for r in rows)


def test_no_video_found_at_all_hints_at_the_root(labels_dir, tmp_path):
    root, _ = _konvid_root(labels_dir, tmp_path, present=0)
    with pytest.raises(MissingVideosError, match="none was found: is --root"):
        run(ManifestParams(dataset="konvid", root=root, out=tmp_path / "m.csv",
                           allow_missing=True))


# ------------------------------------------------------------------ bad MOS and ids


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_nan_mos_is_rejected_naming_the_lines(tmp_path):
    labels = _write(tmp_path / "labels.txt",
                    "v/a.mp4, 8.0, 30.0, 3.2\nv/b.mp4, -1, -1, NaN\nv/c.mp4, -1, -1, 4.0\n"
                    "v/d.mp4, -1, -1, nan\n")
    with pytest.raises(ManifestError) as info:
        read_labels("konvid", tmp_path, labels)
    assert "line 2: MOS is NaN" in str(info.value) and "line 4: MOS is NaN" in str(info.value)
    assert "--drop-nan" in str(info.value)
    table = read_labels("konvid", tmp_path, labels, drop_nan=True)
    assert [r.video_id for r in table.rows] == ["a", "c"] and table.nan_lines == [2, 4]


def test_nan_mos_in_the_ugc_metadata(labels_dir, tmp_path):
    with open(labels_dir / "YOUTUBE_UGC_metadata.csv", newline="") as fh:
        records = list(csv.DictReader(fh))
    records[4]["MOSFull"] = "NaN"
    records[9]["MOSFull"] = "NaN"
    path = tmp_path / "YOUTUBE_UGC_metadata.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    with pytest.raises(ManifestError, match=r"2 row\(s\) with a NaN MOS") as info:
        read_labels("youtube_ugc", tmp_path, path)
    assert "line 6: MOS is NaN" in str(info.value) and "line 11:" in str(info.value)
    report = run(ManifestParams(dataset="youtube_ugc", root=tmp_path, out=tmp_path / "m.csv",
                                drop_nan=True, check_files=False))
    assert report.n_rows == 1378 and report.nan_lines == (6, 11)
    assert "dropped 2 row(s) with a NaN MOS" in report.summary()


def test_non_numeric_mos_is_rejected_naming_the_line(tmp_path):
    labels = _write(tmp_path / "labels.txt", "v/a.mp4, -1, -1, 3.2\nv/b.mp4, -1, -1, good\n")
    with pytest.raises(ManifestError, match=r"line 2: MOS 'good' is not a number"):
        read_labels("konvid", tmp_path, labels, drop_nan=True)


def test_duplicate_ids_are_rejected_naming_both_lines(tmp_path):
    labels = _write(tmp_path / "labels.txt",
                    "v/a.mp4, -1, -1, 3.2\nv/b.mp4, -1, -1, 3.0\nw/a.mp4, -1, -1, 2.0\n")
    with pytest.raises(ManifestError, match=r"line 3: duplicate video id 'a' \(first on line 1\)"):
        read_labels("konvid", tmp_path, labels)


def test_malformed_label_lines_and_headers(tmp_path):
    broken = _write(tmp_path / "labels.txt", "v/a.mp4, -1, -1, 3.2\nv/b.mp4, 3.0\n")
    with pytest.raises(ManifestError, match=r"line 2: expected 'path, duration_s, fps, MOS'"):
        read_labels("konvid", tmp_path, broken)
    header = _write(tmp_path / "meta.csv", "flickr_id,score\n123,3.0\n")
    with pytest.raises(ManifestError, match="cannot tell the format"):
        read_labels("live_vqc", tmp_path, header)
    with pytest.raises(ManifestError, match=r"missing column\(s\) mos"):
        read_labels("konvid", tmp_path, header)


# ------------------------------------------------------------------ generic csv


def test_generic_csv_builder(tmp_path):
    root = tmp_path / "videos"
    (root / "sub").mkdir(parents=True)
    for name in ("sub/one.mp4", "two.mp4", "three.mp4"):
        (root / name).touch()
    labels = _write(root / "labels.csv", "path,mos\nsub/one.mp4,72.5\ntwo.mp4,40\nthree.mp4,\n")
    out = tmp_path / "manifests" / "mine.csv"
    report = run(ManifestParams(dataset="csv", root=root, out=out))
    assert report.labels == labels and report.mos_scale == "0-100"
    rows = read_manifest(out)
    assert [r.video_id for r in rows] == ["one", "two", "three"]
    assert rows[0].path == root / "sub/one.mp4" and rows[0].mos == 72.5
    assert rows[2].mos is None and rows[2].mos_scale is None  # empty MOS: unlabelled
    assert read_labels("csv", root, mos_scale="0-100").mos_scale == "0-100"


def test_generic_csv_scale_ids_and_errors(tmp_path):
    ok = _write(tmp_path / "a.csv", "video_id,path,mos,fps\nx1,a.mp4,3.5,25\nx2,b.mp4,4.5,\n")
    table = read_labels("csv", tmp_path, ok)
    assert table.mos_scale == "1-5" and [r.video_id for r in table.rows] == ["x1", "x2"]
    assert table.rows[0].fps == 25.0
    assert read_labels("csv", tmp_path, ok, mos_scale="0-100").mos_scale == "0-100"
    wide = _write(tmp_path / "b.csv", "path,mos\na.mp4,3\nb.mp4,250\n")
    with pytest.raises(ManifestError, match="cannot infer the MOS scale"):
        read_labels("csv", tmp_path, wide)
    with pytest.raises(ManifestError, match=r"line 3: MOS 250 is outside the 1-5 scale"):
        read_labels("csv", tmp_path, wide, mos_scale="1-5")
    dup = _write(tmp_path / "c.csv", "path,mos\nx/a.mp4,3\ny/a.mp4,4\n")
    with pytest.raises(ManifestError, match=r"line 3: duplicate video id 'a'"):
        read_labels("csv", tmp_path, dup)
    nan = _write(tmp_path / "d.csv", "path,mos\na.mp4,nan\n")
    with pytest.raises(ManifestError, match="line 2: MOS is NaN"):
        read_labels("csv", tmp_path, nan)
    no_mos = _write(tmp_path / "e.csv", "file,score\na.mp4,3\n")
    with pytest.raises(ManifestError, match=r"missing column\(s\) path, mos"):
        read_labels("csv", tmp_path, no_mos)
    with pytest.raises(ManifestError, match="has MOS scale 1-5, not 0-100"):
        read_labels("konvid", tmp_path, ok, mos_scale="0-100")


# ------------------------------------------------------------------ manifest file


def test_round_trip_write_read(tmp_path):
    inside = tmp_path / "data" / "clips" / "a.mp4"
    outside = tmp_path / "elsewhere" / "b.mkv"
    rows = [
        ManifestRow("a", inside, 3.21, "1-5", 960, 540, 29.97002997002997, 8.008, 240),
        ManifestRow("yfcc-batch1/747", outside, 67.75, "0-100"),
        ManifestRow("kinetics, clip", inside.with_name("c.mp4"), None, None, fps=10.0),
    ]
    path = write_manifest(rows, tmp_path / "data" / "m.csv")
    text = path.read_text().splitlines()
    assert text[0] == ",".join(COLUMNS)
    assert text[1] == "a,clips/a.mp4,3.21,1-5,960,540,29.97002997002997,8.008,240"
    assert text[2].split(",")[1] == str(outside)  # outside the folder: absolute
    assert read_manifest(path) == rows
    # the manifest moves with its data
    moved = tmp_path / "moved"
    shutil.move(tmp_path / "data", moved)
    back = read_manifest(moved / "m.csv")
    assert back[0].path == moved / "clips" / "a.mp4" and back[1].path == outside


_ids = st.text(
    st.characters(min_codepoint=33, max_codepoint=0x2FF, blacklist_categories=("Zs", "Cc")),
    min_size=1,
    max_size=12,
)


@settings(max_examples=40, deadline=None)
@given(
    entries=st.lists(
        st.tuples(_ids, st.sampled_from(["1-5", "0-100", None]), st.floats(0, 1),
                  st.one_of(st.none(), st.integers(1, 8000)),
                  st.one_of(st.none(), st.floats(0.01, 240, allow_nan=False))),
        min_size=1, max_size=6, unique_by=lambda e: e[0],
    )
)
def test_round_trip_property(tmp_path_factory, entries):
    folder = tmp_path_factory.mktemp("rt")
    rows = []
    for vid, scale, frac, width, fps in entries:
        mos = None if scale is None else MOS_SCALES[scale][0] + frac * (
            MOS_SCALES[scale][1] - MOS_SCALES[scale][0])
        rows.append(ManifestRow(vid, folder / f"v{len(rows)}.mp4", mos, scale, width=width,
                                fps=fps))
    assert read_manifest(write_manifest(rows, folder / "m.csv")) == rows


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("video_id,path,mos,mos_scale,split\n", r":1: bad header .* unknown columns split"),
        ("video_id,mos\n", r":1: bad header .* missing columns path"),
        ("video_id,path,mos,mos_scale\na,a.mp4,3,1-5\nb,b.mp4,abc,1-5\n",
         r":3: MOS 'abc' is not a number"),
        ("video_id,path,mos,mos_scale\na,a.mp4,3,\n", r":2: .*both be given or both be empty"),
        ("video_id,path,mos,mos_scale\na,a.mp4,7,1-5\n", r":2: .*outside the 1-5 scale"),
        ("video_id,path,mos,mos_scale\na,a.mp4,nan,1-5\n", r":2: .*not a finite number"),
        ("video_id,path,mos,mos_scale\na,a.mp4,3,1-10\n", r":2: .*mos_scale '1-10'"),
        ("video_id,path,mos,mos_scale\na,a.mp4,3,1-5\na,b.mp4,4,1-5\n",
         r":3: duplicate video_id 'a' \(first on line 2\)"),
        ("video_id,path,mos,mos_scale,width\na,a.mp4,3,1-5,12.5\n", r":2: width '12.5'"),
        ("video_id,path,mos,mos_scale\n,a.mp4,3,1-5\n", r":2: .*video_id is empty"),
    ],
)
def test_read_manifest_rejects_bad_files_naming_file_and_line(tmp_path, body, match):
    path = _write(tmp_path / "bad.csv", body)
    with pytest.raises(ManifestError, match=match) as info:
        read_manifest(path)
    assert str(path) in str(info.value)


def test_manifest_row_validates_itself():
    with pytest.raises(ManifestError, match="outside the 0-100 scale"):
        ManifestRow("a", Path("a.mp4"), 101.0, "0-100")
    with pytest.raises(ManifestError, match="height must be a positive integer"):
        ManifestRow("a", Path("a.mp4"), 3.0, "1-5", height=0)
    assert math.isclose(ManifestRow("a", "a.mp4", 3.0, "1-5").mos, 3.0)


def test_params_refuse_unknown_keys(tmp_path):
    with pytest.raises(ManifestError, match="unknown manifest param.*allow_mising"):
        ManifestParams.from_dict({"dataset": "konvid", "root": tmp_path, "out": "m.csv",
                                  "allow_mising": True})
    params = ManifestParams.from_dict({"dataset": "csv", "root": str(tmp_path), "out": "m.csv"})
    assert params.root == tmp_path
    with pytest.raises(ManifestError, match="unknown dataset 'kon'"):
        ManifestParams.from_dict({"dataset": "kon", "root": tmp_path, "out": "m.csv"})


# ------------------------------------------------------------------ CLI


def test_cli_build_missing_then_allow_missing(labels_dir, tmp_path):
    root, present = _konvid_root(labels_dir, tmp_path, present=2)
    out = tmp_path / "konvid.csv"
    runner = CliRunner()
    result = runner.invoke(main, ["manifest", "build", "konvid", "--root", str(root),
                                            "--out", str(out)])
    assert result.exit_code == 1
    assert "1198 of 1200 video file(s) are missing" in result.output and not out.exists()
    result = runner.invoke(main, ["manifest", "build", "konvid", "--root", str(root),
                                            "--out", str(out), "--allow-missing"])
    assert result.exit_code == 0, result.output
    assert "wrote 2 videos of konvid" in result.output and "dropped 1198" in result.output
    assert [r.video_id for r in read_manifest(out)] == present
    check = runner.invoke(main, ["manifest", "check", str(out)])
    assert check.exit_code == 0 and "2 videos, 2 with MOS (scale 1-5)" in check.output
    (root / "KoNViD_1k_videos" / f"{present[0]}.mp4").unlink()
    check = runner.invoke(main, ["manifest", "check", str(out)])
    assert check.exit_code == 1 and present[0] in check.output


def test_cli_build_with_labels_and_no_file_check(labels_dir, tmp_path):
    out = tmp_path / "lsvq.csv"
    result = CliRunner().invoke(main, ["manifest",
        "build", "lsvq_test", "--root", str(tmp_path), "--labels",
        str(labels_dir / "LSVQ/labels_test.txt"), "--out", str(out), "--no-check-files"])
    assert result.exit_code == 0, result.output
    assert "wrote 7186 videos of lsvq_test" in result.output
    assert "(MOS scale 0-100)" in result.output
    rows = read_manifest(out)
    assert rows[0].path == tmp_path / "yfcc-batch1/747.mp4"
    assert out.read_text().splitlines()[1].startswith("yfcc-batch1/747,yfcc-batch1/747.mp4,")


def test_cli_errors_are_clear(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["manifest", "build", "kadid", "--root", str(tmp_path),
                                            "--out", "m.csv"])
    assert result.exit_code == 2
    assert "konvid" in result.output and "lsvq_test_1080p" in result.output
    _write(tmp_path / "labels.txt", "v/a.mp4, -1, -1, NaN\nv/b.mp4, -1, -1, 3\n")
    result = runner.invoke(main, ["manifest", "build", "konvid", "--root", str(tmp_path),
                                            "--out", str(tmp_path / "m.csv"), "--no-check-files"])
    assert result.exit_code == 1 and "line 1: MOS is NaN" in result.output
    result = runner.invoke(main, ["manifest", "build", "konvid", "--root", str(tmp_path),
                                            "--out", str(tmp_path / "m.csv"), "--no-check-files",
                                            "--drop-nan"])
    assert result.exit_code == 0 and "dropped 1 row(s) with a NaN MOS" in result.output
    listing = runner.invoke(main, ["manifest", "datasets"])
    assert all(name in listing.output for name in list_datasets())
