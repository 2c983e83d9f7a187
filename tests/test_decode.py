"""Decoding: sampling, decord vs PyAV, odd inputs, broken files, hangs, bounded memory."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from videos_factory import frame_id, make_video, write_corrupt, write_truncated
from vqa_pipe.pipeline.decode import (
    DecodeError,
    DecodeTimeout,
    FramePlan,
    FrameSampling,
    VideoInfo,
    decode_in_background,
    iter_frames,
    probe,
)

KONVID = "konvid_3339962845.mp4"  # moov atom at the end of the file
FASTSTART = "nomos_video-1621367634.mp4"  # moov atom at the start: a cut file still opens


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> dict[str, Path]:
    """Small synthetic videos, made once for this module (about a second in all)."""
    d = tmp_path_factory.mktemp("synth")
    return {
        "plain": make_video(d / "plain.mp4", n_frames=20),
        "ten_bit": make_video(d / "ten_bit.mp4", pix_fmt="yuv420p10le", n_frames=12),
        "gray": make_video(d / "gray.mkv", codec="ffv1", pix_fmt="gray", n_frames=12),
        "gray10": make_video(d / "gray10.mkv", codec="ffv1", pix_fmt="gray10le", n_frames=12),
        "odd": make_video(d / "odd.mkv", codec="ffv1", width=65, height=49, n_frames=12),
        "rot90": make_video(d / "rot90.mp4", rotation=90, n_frames=10),
        "seven": make_video(d / "seven.mp4", n_frames=7),
        "long": make_video(d / "long.mp4", width=32, height=32, n_frames=600, fps=25),
        "gop8": make_video(d / "gop8.mp4", n_frames=20, gop=8),  # keyframes 0, 8, 16
    }


def _live_children() -> set[int]:
    return {p.pid for p in multiprocessing.active_children()}


# ---------------------------------------------------------------- sampling


def info_of(n_frames: int, fps: float) -> VideoInfo:
    return VideoInfo(640, 360, fps, n_frames, n_frames / fps if fps else 0.0)


@settings(max_examples=200, deadline=None)
@given(
    n_frames=st.integers(1, 20_000),
    video_fps=st.floats(1.0, 120.0),
    target=st.one_of(st.none(), st.floats(0.1, 30.0)),
    cap=st.one_of(st.none(), st.integers(1, 300)),
)
def test_sampling_indices_are_sorted_unique_in_range_and_capped(n_frames, video_fps, target, cap):
    got = FrameSampling(target, cap).indices(info_of(n_frames, video_fps))
    assert got == sorted(set(got))
    assert 0 <= got[0] and got[-1] < n_frames
    assert 1 <= len(got) <= (cap or n_frames)
    duration = n_frames / video_fps
    if target is not None:
        expected = min(max(1, round(duration * target)), n_frames, cap or n_frames)
        assert len(got) == expected
    if len(got) > 2:  # evenly spaced in time: gaps differ by at most one frame
        gaps = np.diff(got)
        assert gaps.max() - gaps.min() <= 1


def test_two_per_second_by_default_and_all_means_every_frame():
    ten_s = info_of(300, 30.0)
    assert len(FrameSampling().indices(ten_s)) == 20
    assert FrameSampling(None, None).indices(ten_s) == list(range(300))
    assert len(FrameSampling(None, 64).indices(ten_s)) == 64  # 'all' is capped too
    assert len(FrameSampling(2.0, 8).indices(ten_s)) == 8
    assert FrameSampling.from_spec("all", None).indices(info_of(5, 25.0)) == [0, 1, 2, 3, 4]
    assert FrameSampling.from_spec("4").fps == 4.0
    assert FrameSampling().indices(info_of(1, 30.0)) == [0]  # one frame: still sampled
    assert FrameSampling().indices(VideoInfo(64, 48, 0.0, 0, 0.0)) == []
    assert isinstance(FrameSampling(), FramePlan)


@pytest.mark.parametrize(
    "make",
    [
        lambda: FrameSampling(0.0),
        lambda: FrameSampling(2.0, 0),
        lambda: FrameSampling.from_spec("x"),
    ],
)
def test_bad_sampling_settings_are_refused(make):
    with pytest.raises(ValueError, match="must be"):
        make()


def test_bad_indices_and_backend_are_refused(synth):
    with pytest.raises(ValueError, match="must not decrease"):
        iter_frames(synth["plain"], [3, 1])
    with pytest.raises(ValueError, match="negative"):
        iter_frames(synth["plain"], [-1])
    with pytest.raises(ValueError, match="auto, decord, pyav"):
        iter_frames(synth["plain"], [0], backend="ffmpeg")


# ---------------------------------------------------------------- real videos


def test_probe_matches_the_published_facts_of_every_sample(sample_videos):
    for name, row in sample_videos.items():
        info = probe(row["path"])
        assert (info.width, info.height) == (int(row["width"]), int(row["height"])), name
        assert info.n_frames == int(row["frames"]), name
        assert info.fps == pytest.approx(float(row["fps"]), rel=2e-3), name


@pytest.mark.slow
def test_decord_and_pyav_agree_on_a_real_video(sample_videos):
    path = sample_videos[KONVID]["path"]
    plan = FrameSampling()
    ref = list(iter_frames(path, plan, backend="pyav"))
    got = list(iter_frames(path, plan, backend="decord"))
    assert [f.index for f in got] == [f.index for f in ref] == plan.indices(probe(path))
    for a, b in zip(got, ref, strict=True):
        assert a.time_s == pytest.approx(b.time_s, abs=1e-3)
        diff = np.abs(a.rgb.astype(np.int16) - b.rgb.astype(np.int16))
        assert diff.mean() < 0.5 and diff.max() <= 16, f"frame {a.index} differs"
    # and consecutive frames really differ, so the comparison could catch an off-by-one
    assert np.abs(ref[0].rgb.astype(int) - ref[1].rgb.astype(int)).mean() > 1.0


def test_decord_and_pyav_agree_on_the_start_of_every_sample(sample_videos):
    wanted = [0, 1, 2, 14, 15, 31, 47]  # neighbours, and jumps that make decord seek
    for name, row in sample_videos.items():
        ref = list(iter_frames(row["path"], wanted, backend="pyav"))
        got = list(iter_frames(row["path"], wanted, backend="decord"))
        assert [f.index for f in got] == [f.index for f in ref] == wanted, name
        for a, b in zip(got, ref, strict=True):
            diff = np.abs(a.rgb.astype(np.int16) - b.rgb.astype(np.int16))
            assert diff.mean() < 0.5 and diff.max() <= 16, f"{name} frame {a.index} differs"


@pytest.mark.parametrize("fixture, shape", [("portrait_video", (720, 406, 3)),
                                            ("tiny_video", (144, 192, 3))])
def test_portrait_and_tiny_real_videos_come_out_at_native_size(request, fixture, shape):
    path = request.getfixturevalue(fixture)
    frames = list(iter_frames(path, FrameSampling()))
    assert len(frames) == len(FrameSampling().indices(probe(path))) >= 16
    for f in frames:
        assert f.rgb.shape == shape and f.rgb.dtype == np.uint8 and f.rgb.flags.c_contiguous
    assert frames[0].rgb.std() > 5  # a picture, not a blank


# ---------------------------------------------------------------- synthetic formats


@pytest.mark.parametrize("backend", ["pyav", "decord", "auto"])
@pytest.mark.parametrize("kind, pix_fmt", [("ten_bit", "yuv420p10le"), ("gray", "gray"),
                                           ("gray10", "gray10le"), ("odd", "yuv420p")])
def test_ten_bit_gray_and_odd_sizes_come_out_rgb8(synth, backend, kind, pix_fmt):
    info = probe(synth[kind])
    assert info.pix_fmt == pix_fmt  # the input really is what the test claims
    wanted = [0, 3, 3, 7, 11]
    frames = list(iter_frames(synth[kind], wanted, backend=backend))
    assert [f.index for f in frames] == wanted
    for f in frames:
        assert f.rgb.shape == (info.height, info.width, 3)
        assert f.rgb.dtype == np.uint8 and f.rgb.flags.c_contiguous
        assert frame_id(f.rgb) == f.index  # the right frame, with sane levels
    if kind.startswith("gray"):
        assert np.array_equal(frames[0].rgb[..., 0], frames[0].rgb[..., 2])


def test_display_rotation_is_honoured(synth):
    used = []
    info = probe(synth["rot90"])
    assert (info.width, info.height, info.rotation) == (48, 64, 90)
    frames = list(iter_frames(synth["rot90"], [0, 5], on_backend=lambda b, r: used.append(b)))
    assert used == ["pyav"]  # decord turns such streams into garbage
    rgb = frames[0].rgb
    assert rgb.shape == (64, 48, 3)
    # the coded top-left marker is shown bottom-left after a quarter turn counter-clockwise
    assert rgb[-4:, :4].mean() > 240 and rgb[:4, :4].mean() < 60
    assert frame_id(np.rot90(rgb, k=-1)) == 0 and frame_id(np.rot90(frames[1].rgb, k=-1)) == 5


def test_a_few_over_reported_frames_are_served_by_the_last_one(synth):
    real = probe(synth["plain"])  # 20 frames
    claims = VideoInfo(real.width, real.height, real.fps, 22, real.duration_s)
    used = []
    frames = list(iter_frames(synth["plain"], [18, 19, 20, 21], info=claims,
                              on_backend=lambda b, r: used.append((b, r))))
    # decord is not trusted with a count that differs from the container's (it may hang)
    assert used[0] == ("decord", None) and used[1][0] == "pyav" and "counts 20" in used[1][1]
    assert [f.index for f in frames] == [18, 19, 20, 21]  # what was asked for ...
    assert [frame_id(f.rgb) for f in frames] == [18, 19, 19, 19]  # ... the last real picture
    assert frames[3].time_s == frames[1].time_s > frames[0].time_s
    lies = VideoInfo(real.width, real.height, real.fps, 40, real.duration_s)
    with pytest.raises(DecodeError, match="truncated"):
        list(iter_frames(synth["plain"], FrameSampling(None, None), info=lies))


class _FlakyReader:
    """A decord ``VideoReader`` that goes wrong: bad timestamps, or wrong-shaped frames later."""

    mode = "shape"
    real: type = object  # the real decord.VideoReader, set by the test

    def __init__(self, path, **kwargs) -> None:
        self._real = self.real(path, **kwargs)
        self._calls = 0

    def __len__(self) -> int:
        return len(self._real)

    def __getattr__(self, name):
        return getattr(self._real, name)

    def get_frame_timestamp(self, indices):
        stamps = self._real.get_frame_timestamp(indices)
        return stamps[::-1].copy() if self.mode == "stamps" else stamps

    def get_batch(self, indices):
        self._calls += 1
        batch = self._real.get_batch(indices)
        if self._calls == 2:  # the second GOP (frames 8-15) comes back with two channels
            return type("Wrong", (), {"asnumpy": lambda _: batch.asnumpy()[..., :2]})()
        return batch


@pytest.mark.parametrize("mode, decord_frames", [("shape", 8), ("stamps", 0)])
def test_auto_falls_back_to_pyav_when_decord_goes_wrong(synth, monkeypatch, mode, decord_frames):
    decord = pytest.importorskip("decord")
    monkeypatch.setattr(_FlakyReader, "mode", mode)
    monkeypatch.setattr(_FlakyReader, "real", decord.VideoReader)
    monkeypatch.setattr(decord, "VideoReader", _FlakyReader)
    used = []
    frames = list(iter_frames(synth["gop8"], list(range(20)),
                              on_backend=lambda b, r: used.append((b, r))))
    assert [frame_id(f.rgb) for f in frames] == list(range(20))  # nothing lost or repeated
    assert [b for b, _ in used] == ["decord", "pyav"]
    assert f"after {decord_frames} frames" in used[1][1]
    with pytest.raises(DecodeError, match="gop8.mp4"):  # forced decord: no fallback
        list(iter_frames(synth["gop8"], list(range(20)), backend="decord"))


def test_decord_works_in_groups_and_auto_prefers_pyav_where_it_is_better(synth, monkeypatch):
    pytest.importorskip("decord")
    from vqa_pipe.pipeline import decode_backends

    keys = [0, 8, 16]
    assert decode_backends.decord_groups([1, 3, 5, 9, 17, 18], keys, 2) == [
        [1, 3], [5], [9], [17, 18]]
    assert decode_backends.decord_cost([[1, 3], [5], [9], [17, 18]], keys) == 4 + 6 + 2 + 3
    # two frames per group: a group that continues a GOP is re-decoded from its keyframe
    monkeypatch.setattr(decode_backends, "DECORD_GROUP_BYTES", 2 * 64 * 48 * 3)
    for name, wanted in [("plain", list(range(20))), ("gop8", [0, 3, 3, 5, 7, 8, 12, 13, 19])]:
        frames = list(iter_frames(synth[name], wanted, backend="decord"))
        assert [f.index for f in frames] == wanted
        assert [frame_id(f.rgb) for f in frames] == wanted, name
    used = []  # every frame of one GOP: decord would decode 2+4+...+20 frames, PyAV 20
    frames = list(iter_frames(synth["plain"], list(range(20)),
                              on_backend=lambda b, r: used.append((b, r))))
    assert [b for b, _ in used] == ["decord", "pyav"] and "would decode 110 frames" in used[1][1]
    assert [frame_id(f.rgb) for f in frames] == list(range(20))
    used.clear()  # one frame per GOP costs nothing extra: decord stays
    frames = list(iter_frames(synth["gop8"], [2, 9, 17], on_backend=lambda b, r: used.append(b)))
    assert used == ["decord"] and [frame_id(f.rgb) for f in frames] == [2, 9, 17]
    # decord may read a whole file into memory: larger files go to PyAV under "auto"
    monkeypatch.setattr(decode_backends, "DECORD_MAX_FILE_BYTES", 1000)
    used.clear()
    frames = list(iter_frames(synth["gop8"], [2, 9, 17],
                              on_backend=lambda b, r: used.append((b, r))))
    assert [b for b, _ in used] == ["decord", "pyav"] and "may hold all of it" in used[1][1]
    assert [frame_id(f.rgb) for f in frames] == [2, 9, 17]
    frames = list(iter_frames(synth["gop8"], [2, 9, 17], backend="decord"))  # forced: no limit
    assert [frame_id(f.rgb) for f in frames] == [2, 9, 17]


# ---------------------------------------------------------------- broken files


@pytest.fixture(scope="module")
def broken(tmp_path_factory, sample_videos) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("broken")
    empty = d / "empty.mp4"
    empty.write_bytes(b"")
    text = d / "notes.txt"
    text.write_text("not a video\n" * 50)  # FFmpeg would happily show it as ANSI art
    return {
        "text": text,
        "corrupt": write_corrupt(d / "corrupt.mp4"),
        "empty": empty,
        "missing": d / "missing.mp4",
        "truncated": write_truncated(sample_videos[KONVID]["path"], d / "truncated.mp4"),
        "truncated_faststart": write_truncated(sample_videos[FASTSTART]["path"], d / "cut.mp4"),
    }


@pytest.mark.parametrize("kind, reason", [
    ("corrupt", "not a readable video"), ("empty", "not a readable video"),
    ("missing", "file not found"), ("truncated", "not a readable video"),
    ("text", "a text file"),
    ("truncated_faststart", "truncated"),
])
def test_broken_files_raise_a_decode_error_naming_the_file(broken, kind, reason):
    path = broken[kind]
    with pytest.raises(DecodeError, match=reason) as caught:
        list(iter_frames(path, FrameSampling()))
    assert str(path) in str(caught.value) and caught.value.path == str(path)


@pytest.mark.slow
def test_background_run_records_each_broken_video_and_goes_on(broken, synth, tiny_video):
    items = [("plain", synth["plain"])] + [(k, p) for k, p in broken.items()]
    items += [("tiny", tiny_video)]
    seen: dict[str, object] = {}
    opened: dict[str, bool] = {}
    with decode_in_background(items, FrameSampling(), timeout_s=30) as videos:
        for video in videos:
            try:
                seen[video.key] = [f.index for f in video.frames]
            except DecodeError as err:
                assert video.path in str(err) and video.error is err
                seen[video.key] = err
                opened[video.key] = video.info is not None
    assert list(seen) == [k for k, _ in items]  # every item reported, in order
    assert seen["plain"] == FrameSampling().indices(probe(synth["plain"]))
    assert seen["tiny"] == FrameSampling().indices(probe(tiny_video))
    for kind in broken:
        assert isinstance(seen[kind], DecodeError), kind
    assert "truncated" in str(seen["truncated_faststart"])
    # a cut file whose index survives opens (info known) and fails while decoding
    assert opened == {kind: kind == "truncated_faststart" for kind in broken}


# ---------------------------------------------------------------- the worker process


@pytest.mark.slow
def test_a_hanging_open_times_out_and_the_next_video_is_decoded(tmp_path, synth):
    fifo = tmp_path / "never_written.mp4"
    os.mkfifo(fifo)  # opening it blocks until a writer comes: none will
    before = _live_children()
    items = [("hang", fifo), ("plain", synth["plain"])]
    with decode_in_background(items, [0, 1, 2], timeout_s=3.0) as videos:
        hang = next(videos)
        with pytest.raises(DecodeTimeout, match="no progress for 3 s") as caught:
            list(hang.frames)
        assert str(fifo) in str(caught.value)
        plain = next(videos)
        assert [frame_id(f.rgb) for f in plain.frames] == [0, 1, 2]
        assert videos.restarts == 1
    assert _live_children() <= before  # the killed and the replacement worker are both gone


class _CrashOnSeven:
    """A plan that kills the worker process on the 7-frame video (as a segfault would)."""

    def indices(self, info: VideoInfo) -> list[int]:
        if info.n_frames == 7:
            os._exit(3)
        return list(range(min(info.n_frames, 5)))


@pytest.mark.slow
def test_a_crashing_worker_fails_only_its_video(synth):
    items = [("seven", synth["seven"]), ("plain", synth["plain"])]
    with decode_in_background(items, _CrashOnSeven(), timeout_s=30) as videos:
        seven, plain = next(videos), None
        assert seven.info is None and "died (exit code 3)" in str(seven.error)
        with pytest.raises(DecodeError, match="seven.mp4"):
            next(seven.frames)
        plain = next(videos)
        assert [frame_id(f.rgb) for f in plain.frames] == [0, 1, 2, 3, 4]


@pytest.mark.slow
def test_the_worker_stays_at_most_prefetch_frames_ahead(synth):
    prefetch = 4
    all_frames = FrameSampling(None, None)
    with decode_in_background([("long", synth["long"])], all_frames, prefetch_frames=prefetch,
                              timeout_s=30) as videos:
        video = next(videos)
        first = next(video.frames)
        # wait until the worker has run ahead and stopped (blocked on the full queue)
        last, still_since, give_up = -1, time.monotonic(), time.monotonic() + 30
        while time.monotonic() < give_up and last <= prefetch:
            now = videos.frames_in_flight
            if now != last:
                last, still_since = now, time.monotonic()
            elif now >= 1 and time.monotonic() - still_since > 1.0:
                break
            time.sleep(0.05)
        assert videos.frames_in_flight <= prefetch  # not 599: the queue holds it back
        rest = list(video.frames)
        pid = videos.worker_pid
        assert pid in _live_children()  # idle, waiting for another video
    assert pid not in _live_children()  # leaving the with-block stopped and joined it
    assert first.index == 0 and [f.index for f in rest] == list(range(1, 600))
    assert [frame_id(f.rgb) for f in rest[-3:]] == [i % 256 for i in (597, 598, 599)]


@pytest.mark.slow
def test_leaving_a_video_early_skips_it_and_closing_stops_the_worker(synth):
    before = _live_children()
    videos = decode_in_background(
        [("long", synth["long"]), ("plain", synth["plain"]), ("seven", synth["seven"])],
        FrameSampling(None, None), prefetch_frames=8, restart_every=1, timeout_s=30,
    )
    long = next(videos)
    assert next(long.frames).index == 0
    plain = next(videos)  # moving on abandons the rest of "long"
    assert [frame_id(f.rgb) for f in plain.frames] == list(range(20))  # no stale frames
    with pytest.raises(RuntimeError, match="moved on"):
        next(long.frames)
    seven = next(videos)  # restart_every=1: a fresh worker per video
    assert len(list(seven.frames)) == 7 and videos.restarts >= 2
    videos.close()
    assert _live_children() <= before
    with pytest.raises(StopIteration):
        next(videos)


@pytest.mark.slow
def test_an_exception_in_the_consumer_stops_the_worker(synth):
    before = _live_children()

    def consume() -> None:
        for video in decode_in_background([("long", synth["long"])], FrameSampling(None, None)):
            for _ in video.frames:
                raise KeyError("consumer failed")

    with pytest.raises(KeyError):
        consume()
    assert _live_children() <= before


def _worker_peak_rss_mib(path: Path, backend: str) -> tuple[float, list[int]]:
    """Peak RSS (VmHWM) of a fresh decoder worker that serves ``path`` to a slow consumer."""
    indices = []
    with decode_in_background([("v", path)], FrameSampling(2.0, None), prefetch_frames=4,
                              backend=backend, timeout_s=60) as videos:
        video = next(videos)
        for frame in video.frames:
            indices.append(frame.index)
            time.sleep(0.03)  # a slow consumer (CLIP on a CPU): the worker waits on the queue
        with open(f"/proc/{videos.worker_pid}/status") as fh:  # still alive, idle
            peak = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
    return peak / 1024, indices


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_the_workers_memory_does_not_grow_with_video_length(tmp_path, backend):
    """A video 4x longer must not raise the worker's peak RSS beyond a tolerance.

    decord 0.6 reads packets far ahead of the frame it returns and, while the caller
    waits on a slow consumer, decodes them to RGB in a background thread (~0.7 MiB a
    frame here): without the rewind after each group the peak was ~80 MiB for 100 frames
    and ~230 MiB for 400. With it, the two differ by the frames of the largest group
    (one GOP: 20 wanted frames, ~14 MiB) and the queue holds 4 frames. Comparing two
    lengths, not the thirds of one run: decord's read-ahead decodes at full speed, so
    on a fast machine the growth is over before the first third has been consumed.
    """
    if backend == "decord":
        pytest.importorskip("decord")
    size = {"width": 640, "height": 360, "fps": 25}
    short = make_video(tmp_path / "short.mp4", n_frames=100, **size)
    long = make_video(tmp_path / "long.mp4", n_frames=400, **size)
    peak_short, got_short = _worker_peak_rss_mib(short, backend)
    peak_long, got_long = _worker_peak_rss_mib(long, backend)
    assert got_long == FrameSampling(2.0, None).indices(probe(long))  # all 32 frames came
    tolerance_mib = 40.0  # ~58 frames of 640x360
    assert peak_long - peak_short < tolerance_mib, (
        f"{backend} worker peak RSS {peak_short:.0f} MiB for 100 frames, "
        f"{peak_long:.0f} MiB for 400"
    )
