"""Hostile inputs: each gets a clear one-line error naming the item, never a silent wrong result.

The corpus is generated here (tiny files in ``tmp_path``): label files and manifests in
Latin-1 and UTF-16, unwritable manifest destinations, KoNViD info files with wrong types,
label paths that leave the dataset root, images and playlists named ``.mp4``, a
variable-frame-rate clip, and file names that would break a one-line message.
"""

from __future__ import annotations

import os
import shutil
from fractions import Fraction
from pathlib import Path

import av
import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from videos_factory import frame_id, frame_pattern, make_video, write_corrupt
from vqa_pipe.pipeline.datasets import read_labels
from vqa_pipe.pipeline.decode import (
    DecodeError,
    FrameSampling,
    VideoInfo,
    decode_in_background,
    iter_frames,
    probe,
)
from vqa_pipe.pipeline.decode_backends import decord_available
from vqa_pipe.pipeline.manifest import ManifestError, ManifestRow, read_manifest, write_manifest
from vqa_pipe.pipeline.splits import SplitError, read_konvid_info
from vqa_pipe.stages.manifest import ManifestParams, run

from vqa_pipe.cli import main

NO_DECORD = decord_available()


def _one_line(text: str) -> bool:
    return "\n" not in text.strip() and "Traceback" not in text


# ------------------------------------------------------------------ 1. encodings


LATIN1_CSV = "path,mos\nclips/caf\u00e9.mp4,3.5\nclips/b.mp4,4\n"


@pytest.mark.parametrize(
    ("name", "dataset", "text", "bad_line"),
    [
        ("labels.csv", "csv", LATIN1_CSV, 2),
        ("labels.txt", "konvid", "a.mp4, -1, -1, 3.1\nd\u00e9j\u00e0.mp4, -1, -1, 3\n", 2),
        ("KONVID_1K_metadata.csv", "konvid",
         "flickr_id,mos,width\n123,3.1,640\n456,2.0,640\n789,3.0,6\u00b240\n", 4),
    ],
)
def test_latin1_label_files_are_refused_naming_file_line_and_fix(
    tmp_path, name, dataset, text, bad_line
):
    path = tmp_path / name
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(ManifestError) as caught:
        read_labels(dataset, tmp_path, path)
    message = str(caught.value)
    assert f"{path}:{bad_line}:" in message and "UTF-8" in message
    assert "iconv" in message and _one_line(message)


def test_utf8_label_files_with_or_without_bom_are_read_as_written(tmp_path):
    for bom in (b"", b"\xef\xbb\xbf"):
        path = tmp_path / "labels.csv"
        path.write_bytes(bom + LATIN1_CSV.encode("utf-8"))
        rows = read_labels("csv", tmp_path, path, allow_outside_root=False).rows
        assert rows[0].video_id == "caf\u00e9" and rows[0].path == tmp_path / "clips/caf\u00e9.mp4"


def test_utf16_label_file_is_named_as_such(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_bytes(LATIN1_CSV.encode("utf-16"))  # what spreadsheet "Unicode text" writes
    with pytest.raises(ManifestError, match="UTF-16") as caught:
        read_labels("csv", tmp_path, path)
    assert f"{path}:1:" in str(caught.value) and _one_line(str(caught.value))


def test_utf16_without_bom_or_a_binary_file_is_named_by_its_nul_byte(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_bytes(LATIN1_CSV.encode("utf-16-le"))
    with pytest.raises(ManifestError, match="NUL byte") as caught:
        read_labels("csv", tmp_path, path)
    assert f"{path}:1:" in str(caught.value) and _one_line(str(caught.value))


def test_latin1_manifest_is_refused_naming_file_and_line(tmp_path):
    path = tmp_path / "m.csv"
    body = "video_id,path,mos,mos_scale\na,a.mp4,3,1-5\ncaf\u00e9,b.mp4,3,1-5\n"
    path.write_bytes(body.encode("latin-1"))
    with pytest.raises(ManifestError) as caught:
        read_manifest(path)
    assert f"{path}:3:" in str(caught.value) and "UTF-8" in str(caught.value)
    assert _one_line(str(caught.value))
    check = CliRunner().invoke(main, ["manifest", "check", str(path)])
    assert check.exit_code == 1 and f"{path}:3:" in check.output and _one_line(check.output)


def test_cli_build_with_a_latin1_label_file_says_so_in_one_line(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_bytes(LATIN1_CSV.encode("latin-1"))
    result = CliRunner().invoke(main, ["manifest",
        "build", "csv", "--root", str(tmp_path), "--out", str(tmp_path / "m.csv"),
        "--no-check-files"])
    assert result.exit_code == 1 and f"{path}:2:" in result.output
    assert _one_line(result.output)


# ------------------------------------------------------------------ 2. unwritable --out


def _unwritable_outs(tmp_path: Path) -> dict[str, Path]:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    folder = tmp_path / "a_folder"
    folder.mkdir()
    return {"parent is a file": blocker / "m.csv", "out is a folder": folder}


@pytest.mark.parametrize("case", ["parent is a file", "out is a folder"])
def test_unwritable_out_is_one_error_naming_the_path(tmp_path, case):
    (tmp_path / "labels.csv").write_text("path,mos\na.mp4,3\n")
    out = _unwritable_outs(tmp_path)[case]
    with pytest.raises(ManifestError, match="cannot write the manifest") as caught:
        run(ManifestParams(dataset="csv", root=tmp_path, out=out, check_files=False))
    assert str(out) in str(caught.value) and _one_line(str(caught.value))
    result = CliRunner().invoke(main, ["manifest",
        "build", "csv", "--root", str(tmp_path), "--out", str(out), "--no-check-files"])
    # click refuses an existing folder itself (usage error, exit 2); the error line names it
    error = result.output.strip().splitlines()[-1]
    assert result.exit_code in (1, 2) and "Traceback" not in result.output
    assert error.startswith("Error:") and str(out) in error


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only folder")
def test_read_only_folder_is_one_error_naming_the_path(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(ManifestError, match="cannot write the manifest"):
            write_manifest([ManifestRow("a", tmp_path / "a.mp4", 3.0, "1-5")], folder / "m.csv")
    finally:
        folder.chmod(0o755)


# ------------------------------------------------------------------ 3. KoNViD info .mat


def _write_info_mat(path: Path, n: int = 6, n_perm: int = 4, **override) -> Path:
    """A small MATLAB v7.3 file shaped like VSFA's KoNViD-1kinfo.mat (h5py, as MATLAB does).

    ``override`` replaces a key by a value (written as a plain dataset or, for ``"group"``,
    an empty group) or removes it (``None``).
    """
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        refs = f.create_group("#refs#")
        names = []
        for i in range(n):
            text = f"{1000 + i}_original_centercrop_960x540_8s.mp4"
            ds = refs.create_dataset(f"n{i}", data=np.array([[ord(c)] for c in text], np.uint16))
            ds.attrs["MATLAB_class"] = np.bytes_(b"char")
            names.append(ds.ref)
        values = {
            "video_names": np.array([names], dtype=h5py.ref_dtype),
            "scores": rng.uniform(1, 5, (1, n)),
            "index": np.stack([rng.permutation(n) + 1 for _ in range(n_perm)], axis=1)
            .astype(np.float64),  # (n, n_perm), as in the real file
            "ref_ids": np.arange(1, n + 1, dtype=np.float64)[None, :],
        }
        values.update(override)
        for key, value in values.items():
            if value is None:
                continue
            if isinstance(value, str) and value == "group":
                f.create_group(key)
            else:
                f.create_dataset(key, data=value)
    return path


def test_a_well_formed_small_info_mat_reads(tmp_path):
    names, perms = read_konvid_info(_write_info_mat(tmp_path / "info.mat"))
    assert len(names) == 6 and names[0].startswith("1000_") and perms.shape == (4, 6)
    assert all(sorted(p) == list(range(6)) for p in perms)


BAD_MATS = [
    ("video_names", {"video_names": np.arange(6, dtype=np.float64)[None, :]}),
    ("video_names", {"video_names": "group"}),
    ("video_names", {"video_names": None}),
    ("index", {"index": np.array([[b"a", b"b"]] * 6)}),
    ("index", {"index": np.arange(1, 7, dtype=np.float64)}),
    ("index", {"index": np.full((6, 4), 1.5)}),
    ("index", {"index": np.full((5, 3), 1.0)}),
    ("index", {"index": "group"}),
    ("index", {"index": None}),
    ("scores", {"scores": np.array([[b"x"] * 6])}),
    ("scores", {"scores": np.ones((1, 5))}),
    ("ref_ids", {"ref_ids": np.ones((1, 3))}),
]


@pytest.mark.parametrize(("key", "override"), BAD_MATS,
                         ids=[f"{k}-{i}" for i, (k, _) in enumerate(BAD_MATS)])
def test_info_mat_with_wrong_types_names_file_and_key(tmp_path, key, override):
    path = _write_info_mat(tmp_path / "info.mat", **override)
    with pytest.raises(SplitError) as caught:
        read_konvid_info(path)
    message = str(caught.value)
    assert str(path) in message and f"'{key}'" in message and _one_line(message)


def test_info_mat_that_is_not_hdf5_names_the_file(tmp_path):
    path = tmp_path / "info.mat"
    path.write_bytes(b"MATLAB 5.0 MAT-file" + bytes(200))
    with pytest.raises(SplitError, match="MATLAB v7.3") as caught:
        read_konvid_info(path)
    assert str(path) in str(caught.value) and _one_line(str(caught.value))


# ------------------------------------------------------------------ 4. paths leaving the root


@pytest.mark.parametrize(
    ("dataset", "name", "text", "line"),
    [
        ("konvid", "labels.txt", "a.mp4, -1, -1, 3\n../../../etc/passwd, -1, -1, 3\n", 2),
        ("konvid", "labels.txt", "a.mp4, -1, -1, 3\n/etc/passwd, -1, -1, 3\n", 2),
        ("csv", "labels.csv", "path,mos\na.mp4,3\nsub/../../outside.mp4,4\n", 3),
        ("konvid", "KONVID_1K_metadata.csv", "flickr_id,mos\n1,3\n../../2,4\n", 3),
    ],
)
def test_label_paths_leaving_the_root_are_refused_naming_the_line(
    tmp_path, dataset, name, text, line
):
    root = tmp_path / "root"
    root.mkdir()
    (root / name).write_text(text)
    with pytest.raises(ManifestError, match="outside the dataset root") as caught:
        read_labels(dataset, root, root / name)
    message = str(caught.value)
    assert f"line {line}:" in message and str(root) in message
    assert "allow_outside_root" in message
    table = read_labels(dataset, root, root / name, allow_outside_root=True)
    assert len(table.rows) == 2 and [n for n, _ in table.outside_root] == [line]


def test_stage_refuses_outside_paths_unless_allowed(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "elsewhere.mp4"
    outside.touch()
    (root / "a.mp4").touch()
    (root / "labels.csv").write_text(f"path,mos\na.mp4,3\n{outside},4\n")
    with pytest.raises(ManifestError, match="outside the dataset root"):
        run(ManifestParams(dataset="csv", root=root, out=tmp_path / "m.csv"))
    report = run(ManifestParams(dataset="csv", root=root, out=tmp_path / "m.csv",
                                allow_outside_root=True))
    assert report.n_rows == 2
    assert ManifestParams.from_dict({"dataset": "csv", "root": root, "out": "m.csv",
                                     "allow_outside_root": True}).allow_outside_root


def test_symlinks_inside_the_root_are_accepted_even_when_they_point_elsewhere(tmp_path):
    root = tmp_path / "root"
    (root / "v").mkdir(parents=True)
    store = tmp_path / "big_disk"
    store.mkdir()
    make_video(store / "real.mp4", n_frames=4)
    (root / "v" / "a.mp4").symlink_to(store / "real.mp4")
    (root / "linked").symlink_to(store, target_is_directory=True)
    (root / "labels.csv").write_text("path,mos\nv/a.mp4,3\nlinked/real.mp4,4\n./v/../v/a.mp4,3\n")
    with pytest.raises(ManifestError, match="duplicate video id 'a'"):  # same id, not a leak
        read_labels("csv", root, root / "labels.csv")
    (root / "labels.csv").write_text("path,mos\nv/a.mp4,3\nlinked/real.mp4,4\n")
    rows = read_labels("csv", root, root / "labels.csv").rows
    assert [r.path for r in rows] == [root / "v/a.mp4", root / "linked/real.mp4"]


# ------------------------------------------------------------------ 5. inputs that are not videos


@pytest.fixture(scope="module")
def not_videos(tmp_path_factory) -> dict[str, Path]:
    from PIL import Image

    d = tmp_path_factory.mktemp("not_videos")
    real = make_video(d / "real.mp4", n_frames=6)
    picture = Image.fromarray(frame_pattern(0, 64, 48))
    out = {}
    for kind, fmt in (("jpeg", "JPEG"), ("png", "PNG"), ("bmp", "BMP"), ("webp", "WEBP")):
        out[kind] = d / f"{kind}_image.mp4"
        picture.save(out[kind], format=fmt)
    out["jpg_named_jpg"] = d / "photo.jpg"
    picture.save(out["jpg_named_jpg"], format="JPEG")
    out["gif"] = d / "animated.mp4"
    frames = [Image.fromarray(frame_pattern(i, 64, 48)) for i in range(4)]
    frames[0].save(out["gif"], format="GIF", save_all=True, append_images=frames[1:],
                   duration=100)
    out["ffconcat"] = d / "playlist.mp4"
    out["ffconcat"].write_text(f"ffconcat version 1.0\nfile '{real.name}'\nfile '{real.name}'\n")
    out["m3u8"] = d / "stream.m3u8"
    out["m3u8"].write_text(
        f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\n{real.name}\n#EXT-X-ENDLIST\n")
    out["m3u8_as_mp4"] = d / "stream_m3u8.mp4"
    shutil.copy(out["m3u8"], out["m3u8_as_mp4"])
    out["sdp"] = d / "session.mp4"
    out["sdp"].write_text("v=0\no=- 0 0 IN IP4 127.0.0.1\ns=x\nc=IN IP4 127.0.0.1\n"
                          "t=0 0\nm=video 5004 RTP/AVP 96\na=rtpmap:96 H264/90000\n")
    out["avif"] = d / "photo_avif.mp4"  # an ISO-BMFF image: the MP4 demuxer reads it as a video
    try:
        picture.save(out["avif"], format="AVIF")
    except (KeyError, OSError, ValueError):  # a Pillow without AVIF: its first bytes will do
        out["avif"].write_bytes(b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf"
                                + bytes(64))
    out["text"] = d / "notes.mp4"
    out["text"].write_text("caf\u00e9 " * 100)
    return out


NOT_VIDEOS = [
    ("jpeg", "JPEG image"), ("png", "PNG image"), ("bmp", "BMP image"), ("webp", "WebP image"),
    ("jpg_named_jpg", "JPEG image"), ("gif", "GIF image"),
    ("ffconcat", "ffconcat playlist"), ("m3u8", "HLS playlist"), ("m3u8_as_mp4", "HLS playlist"),
    ("sdp", "SDP session description"), ("text", "text file"), ("avif", "HEIF/AVIF image"),
]


@pytest.mark.parametrize(("kind", "what"), NOT_VIDEOS, ids=[k for k, _ in NOT_VIDEOS])
def test_files_that_are_not_videos_are_refused_saying_what_they_are(not_videos, kind, what):
    path = not_videos[kind]
    with pytest.raises(DecodeError, match=what) as caught:
        probe(path)
    assert caught.value.path == str(path) and str(path) in str(caught.value)
    assert _one_line(str(caught.value))
    with pytest.raises(DecodeError, match=what):
        list(iter_frames(path, [0]))


@pytest.mark.slow
def test_background_decoder_records_non_videos_and_goes_on(not_videos):
    items = [(k, not_videos[k]) for k in ("ffconcat", "jpeg", "m3u8")]
    items.append(("real", not_videos["jpeg"].parent / "real.mp4"))
    results = {}
    with decode_in_background(items, [0, 1], timeout_s=30) as videos:
        for video in videos:
            try:
                results[video.key] = [frame_id(f.rgb) for f in video.frames]
            except DecodeError as err:
                results[video.key] = str(err)
    assert results["real"] == [0, 1]
    for key in ("ffconcat", "jpeg", "m3u8"):
        assert isinstance(results[key], str) and str(not_videos[key]) in results[key]
        assert _one_line(results[key])


ORDINARY = [("a.mp4", "libx264"), ("b.mkv", "ffv1"), ("c.avi", "mpeg4"),
            ("d.webm", "libvpx-vp9"), ("e.ts", "libx264"), ("f.mpg", "mpeg2video"),
            ("g.wmv", "wmv2"), ("h.ogv", "theora"), ("i.mov", "libx264")]


@pytest.mark.parametrize(("name", "codec"), ORDINARY, ids=[n for n, _ in ORDINARY])
def test_ordinary_containers_are_still_accepted(tmp_path, name, codec):
    try:
        av.Codec(codec, "w")
    except av.codec.codec.UnknownCodecError:
        pytest.skip(f"this FFmpeg build has no {codec} encoder")
    path = make_video(tmp_path / name, codec=codec, n_frames=4)
    assert probe(path).n_frames == 4
    assert [frame_id(f.rgb) for f in iter_frames(path, [0, 3], backend="pyav")] == [0, 3]


# ------------------------------------------------------------------ 6. variable frame rate


# 10 frames at 2 fps (0-5 s), then 30 frames at 30 fps (5-6 s): index-based sampling takes
# most of its frames from the first five seconds' few frames far too rarely, and vice versa
VFR_MS = [500 * i for i in range(10)] + [5000 + round(1000 * j / 30) for j in range(30)]


def make_vfr_video(path: Path, times_ms, *, codec: str = "libx264", start_ms: int = 0) -> Path:
    """Frames with the given presentation times (ms); frame i carries pattern i."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.time_base = Fraction(1, 1000)
        if codec == "libx264":
            stream.options = {"crf": "12", "preset": "ultrafast"}
        for i, t in enumerate(times_ms):
            frame = av.VideoFrame.from_ndarray(frame_pattern(i, 64, 48), format="rgb24")
            frame = frame.reformat(format="yuv420p")
            frame.pts, frame.time_base = start_ms + t, Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _by_time(times_s, fps):
    """The expected picks: frame shown at the middle of each of k equal time segments."""
    duration = times_s[-1] + float(np.median(np.diff(times_s))) - times_s[0]
    k = max(1, round(duration * fps))
    picks = []
    for i in range(k):
        target = times_s[0] + (i + 0.5) * duration / k
        picks.append(max(j for j, t in enumerate(times_s) if t <= target + 1e-9))
    return sorted(set(picks))


@pytest.fixture(scope="module")
def vfr(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("vfr")
    return {
        "mp4": make_vfr_video(d / "vfr.mp4", VFR_MS),
        "mkv": make_vfr_video(d / "vfr.mkv", VFR_MS, codec="ffv1", start_ms=1000),
    }


@pytest.mark.parametrize("container", ["mp4", "mkv"])
def test_vfr_sampling_is_evenly_spaced_in_presentation_time(vfr, container):
    info = probe(vfr[container])
    times = [t / 1000 for t in VFR_MS]
    assert info.frame_times is not None
    assert np.allclose(info.frame_times, times, atol=1e-3)
    expected = _by_time(times, 2.0)
    assert expected[:10] == list(range(10)) and expected[10:] == [17, 32]  # sanity
    assert FrameSampling(2.0, None).indices(info) == expected
    # the old index rule would have taken frames 1, 5, 8, ... : far from evenly in time
    assert FrameSampling(2.0, None).indices(info) != [int((i + 0.5) * 40 / 12) for i in range(12)]


@pytest.mark.parametrize("backend", ["pyav", "decord"])
@pytest.mark.parametrize("container", ["mp4", "mkv"])
def test_vfr_frames_and_times_are_the_real_ones(vfr, container, backend):
    if backend == "decord" and NO_DECORD:
        pytest.skip(NO_DECORD)
    frames = list(iter_frames(vfr[container], FrameSampling(2.0, None), backend=backend))
    expected = _by_time([t / 1000 for t in VFR_MS], 2.0)
    assert [f.index for f in frames] == expected
    assert [frame_id(f.rgb) for f in frames] == expected  # the pixels of those frames
    assert np.allclose([f.time_s for f in frames], [VFR_MS[i] / 1000 for i in expected],
                       atol=1e-3)  # presentation times from the stream start


def test_cfr_sampling_is_unchanged_by_the_time_rule(tmp_path):
    def old_rule(n, fps, plan):
        k = n if plan.fps is None else max(1, round(n / fps * plan.fps))
        k = min(k, n, plan.max_frames or n)
        return list(range(n)) if k == n else [int((i + 0.5) * n / k) for i in range(k)]

    for n, fps, tb in ((1, 25, 12800), (7, 10, 10240), (250, 29.97, 30000), (301, 30, 15360),
                       (1001, 24, 16000), (64, 60, 1000), (333, 25, 90000)):
        ticks = [round(j * tb / fps) for j in range(n)]  # pts as muxers round them
        info = VideoInfo(640, 360, float(fps), n, n / fps,
                         frame_times=tuple(t / tb for t in ticks))
        for plan in (FrameSampling(2.0, 64), FrameSampling(0.5, None), FrameSampling(None, 16),
                     FrameSampling(7.0, None)):
            assert plan.indices(info) == old_rule(n, fps, plan), (n, fps, plan)


def test_probe_of_a_cfr_video_reports_its_frame_times(tmp_path):
    path = make_video(tmp_path / "cfr.mp4", n_frames=12, fps=10)
    info = probe(path)
    assert np.allclose(info.frame_times, np.arange(12) / 10)


# ------------------------------------------------------------------ 8. one-line decode errors


def test_decode_errors_are_one_line_even_for_odd_file_names(tmp_path):
    odd = write_corrupt(tmp_path / "two\nlines\r.mp4")
    with pytest.raises(DecodeError) as caught:
        probe(odd)
    message = str(caught.value)
    assert _one_line(message) and "two\\nlines\\r.mp4" in message
    assert caught.value.path == str(odd)
    err = DecodeError(odd, "FFmpeg said:\n  something\n  went wrong")
    shown = str(odd).replace("\n", "\\n").replace("\r", "\\r")
    assert str(err) == f"{shown}: FFmpeg said: something went wrong"
    assert err.path == str(odd) and err.reason == "FFmpeg said: something went wrong"


class _MultiLinePlan:
    """A plan that fails with a multi-line message."""

    def indices(self, info: VideoInfo) -> list[int]:
        raise ValueError("first line\nsecond line")


@pytest.mark.slow
def test_every_background_failure_is_one_line_naming_the_video(tmp_path):
    plain = make_video(tmp_path / "plain.mp4", n_frames=4)
    items = [("plan", plain), ("nul", tmp_path / "a\x00b.mp4"),
             ("dir", tmp_path), ("corrupt", write_corrupt(tmp_path / "c.mp4"))]
    reasons = {}
    with decode_in_background(items, _MultiLinePlan(), timeout_s=30) as videos:
        for video in videos:
            with pytest.raises(DecodeError) as caught:
                list(video.frames)
            reasons[video.key] = str(caught.value)
    assert list(reasons) == ["plan", "nul", "dir", "corrupt"]
    for key in reasons:
        assert _one_line(reasons[key]), reasons[key]
    assert reasons["plan"].startswith(str(plain)) and "first line second line" in reasons["plan"]
    assert reasons["nul"].startswith(str(tmp_path / "a\\x00b.mp4"))


# ------------------------------------------------------------------ 7. file fingerprints


def test_fingerprint_tells_unchanged_touched_changed_and_missing(tmp_path):
    from vqa_pipe.pipeline import fingerprint as fp

    path = tmp_path / "v.mp4"
    data = bytearray(np.random.default_rng(1).integers(0, 256, 3 * 2**20, np.uint8).tobytes())
    path.write_bytes(data)
    first = fp.file_fingerprint(path)
    assert first.size == len(data) and first.mtime_ns == path.stat().st_mtime_ns
    assert fp.FileFingerprint.from_dict(first.to_dict()) == first
    assert fp.compare_fingerprint(first, path) == "unchanged"

    os.utime(path, ns=(first.mtime_ns + 10**9, first.mtime_ns + 10**9))  # touched, or copied
    assert fp.compare_fingerprint(first, path) == "touched"
    data[len(data) // 2] ^= 0xFF  # same size, one byte in the middle
    path.write_bytes(data)
    assert fp.compare_fingerprint(first, path) == "changed"
    path.write_bytes(bytes(data) + b"x")  # one byte longer
    assert fp.compare_fingerprint(first, path) == "changed"
    path.unlink()
    assert fp.compare_fingerprint(first, path) == "missing"


def test_fingerprint_of_an_unchanged_file_does_not_read_it(tmp_path, monkeypatch):
    from vqa_pipe.pipeline import fingerprint as fp

    path = tmp_path / "v.mp4"
    path.write_bytes(b"0123456789" * 1000)
    recorded = fp.file_fingerprint(path)

    def no_reading(*args, **kwargs):
        raise AssertionError("read the file")

    monkeypatch.setattr(fp, "sample_digest", no_reading)
    assert fp.compare_fingerprint(recorded, path) == "unchanged"
    cheap = fp.file_fingerprint(path, sample=False)
    assert cheap.sample_sha256 is None and cheap.size == 10000
    os.utime(path, ns=(1, 1))
    assert fp.compare_fingerprint(cheap, path) == "changed"  # no digest: cannot tell a touch


def test_fingerprint_of_a_missing_file_is_an_error_naming_it(tmp_path):
    from vqa_pipe.pipeline.errors import VqaPipeError
    from vqa_pipe.pipeline.fingerprint import file_fingerprint

    with pytest.raises(VqaPipeError, match="gone.mp4"):
        file_fingerprint(tmp_path / "gone.mp4")
