"""Video decoding: probe, frame sampling, streaming frame readers, a killable background decoder.

Frames always come out as C-contiguous ``HxWx3`` uint8 RGB at native resolution,
whatever the input (yuv420p, 10-bit, gray, odd sizes, portrait).

Backends: ``"auto"`` tries decord first and falls back to PyAV when decord is
absent, refuses the video (frame count differing from the container's, timestamps
that do not increase, a rotated stream, a file or a plan for which PyAV is the
better choice: see Memory) or fails or returns a wrong-shaped frame mid-way (the
remaining frames then come from PyAV). PyAV decodes sequentially from the start
and is the reference.

Memory: a reader's memory does not grow with the video's length, however slow the
consumer. PyAV holds the frame being handed out and FFmpeg's decoder state. decord
0.6 does not on its own: after every seek (each new GOP) it reads the rest of the
file into a packet queue (its reading loop spins until its decoder thread has
produced a frame), and while the caller is away its decoder thread turns the queued
packets into full-size RGB frames that stay queued until the next seek. A decord
reader paused by a slow consumer thus grew with the length of the video (a
background worker reached 3.5 GB on a long 720p video). So decord is used in groups:
the wanted frames of one GOP, at most ``decode_backends.DECORD_GROUP_BYTES`` (128
MiB) of RGB, are decoded back to back, then the reader is rewound (which drops both
queues and stops decord's thread) before the group is handed out. That costs nothing
when the next group starts a later GOP (decord seeks there anyway), but a GOP with
more wanted frames than a group holds is re-decoded from its keyframe for each
further group. The compressed read-ahead remains: up to the size of the file. Hence,
with ``"auto"``, PyAV decodes a file larger than
``decode_backends.DECORD_MAX_FILE_BYTES`` (128 MiB), and a video whose re-decoding
would decode more frames than one sequential PyAV pass (dense sampling of long GOPs,
such as every frame of a 720p video whose GOPs are longer than 48 frames). A forced
``"decord"`` is never refused for these: it re-decodes (slower) and may hold the
whole compressed file.

Display rotation: honoured. A stream with a display matrix (phone videos) comes
out the way a player shows it, turned by multiples of 90 degrees; ``VideoInfo``
reports the displayed ``width``/``height`` and the ``rotation`` applied. Flips and
angles that are not right angles are ignored. decord 0.6 returns garbage for such
streams, so rotated videos are always decoded with PyAV.

Frame counts: when a container over-reports its frame count by a few frames (at
most ``max(3, 2%)``), requested frames past the real end are served by the last
decoded frame: same pixels and ``time_s``, the requested ``index`` (so consumers
that match frames by index still get every frame they planned for). A larger
shortfall, such as a truncated file, is a :class:`DecodeError`.

Inputs: only video containers are opened (MP4/MOV, Matroska/WebM, AVI, MPEG-TS/PS, FLV,
WMV, Ogg, MXF, NUT, Y4M, IVF and raw H.264/H.265/MPEG streams: ``decode_backends.VIDEO_DEMUXERS``),
and only as local files. Still and animated images (JPEG, PNG, GIF, WebP, HEIF/AVIF...),
playlists (ffconcat, HLS, DASH), image sequences and SDP files are refused with a
:class:`DecodeError` saying what the file is, whatever its name.

Time: frames are sampled by presentation time. :func:`probe` reads every packet's pts (a
demux pass, no decoding) into ``VideoInfo.frame_times``; :class:`FrameSampling` follows them
for variable-frame-rate videos, and ``Frame.time_s`` is the decoded frame's pts (PyAV) or
decord's timestamp of it, both in seconds from the stream's start.

Hangs: :func:`iter_frames` runs in the calling process and cannot be interrupted.
:func:`decode_in_background` decodes in a worker process that is killed after
``timeout_s`` without progress; use it for any batch of untrusted files.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
from vqa_pipe.pipeline import decode_backends as _backends
from vqa_pipe.pipeline.errors import VqaPipeError
from vqa_pipe.pipeline.frame_sampling import FrameSampling  # noqa: F401 - re-exported

if TYPE_CHECKING:
    from vqa_pipe.pipeline.decode_worker import BackgroundDecoder

BACKENDS = ("auto", "decord", "pyav")


class DecodeError(VqaPipeError):
    """A video could not be decoded; ``str()`` is one line: the file, then the reason.

    ``path`` is the path as given; in the message, characters that would break the line
    (newlines, control characters, undecodable bytes) are shown as Python escapes, and the
    reason's runs of white space (FFmpeg and decord messages may span lines) become one space.
    """

    def __init__(self, path: str | os.PathLike, reason: str = "cannot be decoded") -> None:
        self.path = os.fspath(path)
        if isinstance(self.path, bytes):
            self.path = os.fsdecode(self.path)
        self.reason = " ".join(str(reason).split()) or "cannot be decoded"
        super().__init__(f"{printable_path(self.path)}: {self.reason}")

    def __reduce__(self):
        return (type(self), (self.path, self.reason))


def printable_path(path: str) -> str:
    """``path`` with characters that are not printable shown as escapes (``\\n``, ``\\x00``)."""
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode("ascii")
        for c in path
    )


class DecodeTimeout(DecodeError):
    """The decoder made no progress within the time limit and was killed."""


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe` learns. ``width``/``height`` are the displayed size.

    ``n_frames`` comes from the container header (or a demux count when the header
    has none); ``duration_s`` and ``fps`` are best effort (0.0 when unknown).
    """

    width: int
    height: int
    fps: float
    n_frames: int
    duration_s: float
    rotation: int = 0  # counter-clockwise degrees applied to reach display orientation
    codec: str = ""
    pix_fmt: str = ""
    frame_times: tuple[float, ...] | None = None
    """Presentation time (s, from the stream start) of each frame in display order, from the
    packets' pts; ``None`` when unknown (no pts, or packets that disagree with the header)."""


@runtime_checkable
class FramePlan(Protocol):
    """Anything picklable that picks frame indices for a video."""

    def indices(self, info: VideoInfo) -> list[int]: ...


@dataclass
class Frame:
    """One decoded frame: the requested index, its time from the stream start, RGB pixels."""

    index: int
    time_s: float
    rgb: np.ndarray  # HxWx3 uint8, C-contiguous


@dataclass
class VideoFrames:
    """One video from :func:`decode_in_background`.

    ``frames`` yields :class:`Frame` objects and may raise :class:`DecodeError` or
    :class:`DecodeTimeout` for this video only. ``info`` is ``None`` and ``error``
    set when the video could not even be opened. ``backend`` is the backend in use
    (``"decord"``/``"pyav"``; it changes to ``"pyav"`` with ``fallback_reason`` set
    if decord gives up mid-way, ``"none"`` when nothing could be opened).
    """

    key: str
    path: str
    info: VideoInfo | None
    frames: Iterator[Frame]
    backend: str
    error: DecodeError | None = None
    fallback_reason: str | None = None


def probe(path: str | os.PathLike) -> VideoInfo:
    """Open ``path``, read its header and decode its first frame.

    Raises:
        DecodeError: the file is missing, not a video, or its first frame does not decode.
    """
    path = os.fspath(path)
    try:
        found = _backends.pyav_probe(path)
    except _backends.BackendError as err:
        raise DecodeError(path, str(err)) from None
    width, height = found.width, found.height
    if found.rotation in (90, 270):
        width, height = height, width
    return VideoInfo(width, height, found.fps, found.n_frames, found.duration_s,
                     found.rotation, found.codec, found.pix_fmt, found.frame_times)


def check_backend(backend: str) -> None:
    """Raise ``ValueError`` for an unknown backend or a forced decord that cannot import."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown decode backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "decord":
        missing = _backends.decord_available()
        if missing:
            raise ValueError(f"backend='decord' was requested but {missing}")


def resolve_indices(
    path: str | os.PathLike, plan: Sequence[int] | FramePlan, info: VideoInfo
) -> list[int]:
    """The frame indices ``plan`` asks for, checked: integers >= 0, non-decreasing."""
    source = "frame plan"
    if isinstance(plan, FramePlan):
        wanted = plan.indices(info)
        source = f"frame plan {type(plan).__name__}"
    elif isinstance(plan, (str, bytes)) or not isinstance(plan, Sequence | np.ndarray):
        raise TypeError(
            f"indices must be a sequence of ints or a FramePlan, got {type(plan).__name__}"
        )
    else:
        wanted = plan
    out: list[int] = []
    for pos, value in enumerate(wanted):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise ValueError(
                f"{source} for {os.fspath(path)}: index #{pos} is {value!r}, not an int"
            )
        value = int(value)
        if value < 0:
            raise ValueError(f"{source} for {os.fspath(path)}: index #{pos} is negative ({value})")
        if out and value < out[-1]:
            raise ValueError(
                f"{source} for {os.fspath(path)}: indices must not decrease "
                f"(#{pos} is {value} after {out[-1]})"
            )
        out.append(value)
    return out


def choose_backend(info: VideoInfo, backend: str) -> tuple[str, str | None]:
    """The backend to start with for ``backend`` and, for ``"auto"`` choosing PyAV, why."""
    if backend != "auto":
        return backend, None
    missing = _backends.decord_available()
    if missing:
        return "pyav", missing
    if info.rotation:
        return "pyav", f"rotated stream ({info.rotation} degrees): decord mishandles rotation"
    return "decord", None


def end_slack(n_frames: int) -> int:
    """How many frames a container may over-report before a short stream is an error."""
    return max(3, math.ceil(0.02 * max(n_frames, 0)))


def iter_frames(
    path: str | os.PathLike,
    indices: Sequence[int] | FramePlan,
    *,
    backend: str = "auto",
    info: VideoInfo | None = None,
    on_backend: Callable[[str, str | None], None] | None = None,
) -> Iterator[Frame]:
    """Stream exactly the requested frames, in order, in this process.

    Args:
        path: the video file.
        indices: non-decreasing frame indices, or a :class:`FramePlan` (given the probed info).
        backend: ``"auto"`` (decord, PyAV fallback), ``"decord"`` or ``"pyav"``.
        info: the result of :func:`probe` when already known (saves a probe).
        on_backend: called with ``(backend, reason)`` when decoding starts and on a fallback.

    Raises:
        DecodeError: at call time when the file cannot be probed, during iteration when
            decoding fails (decord failures fall back to PyAV under ``"auto"``).
        ValueError: unknown backend, or indices that are not non-negative and non-decreasing.
    """
    check_backend(backend)
    path = os.fspath(path)
    if info is None:
        info = probe(path)
    wanted = resolve_indices(path, indices, info)
    return _stream(path, wanted, info, backend, on_backend)


def _stream(
    path: str,
    wanted: list[int],
    info: VideoInfo,
    backend: str,
    on_backend: Callable[[str, str | None], None] | None,
) -> Iterator[Frame]:
    notify = on_backend or (lambda name, reason: None)
    current, reason = choose_backend(info, backend)
    notify(current, reason)
    done = 0
    if current == "decord":
        coded_w, coded_h = info.width, info.height  # decord is never used on rotated streams
        try:
            for index, time_s, rgb in _backends.decord_read(
                path, wanted, width=coded_w, height=coded_h, n_frames=info.n_frames,
                pyav_fallback=backend == "auto",
            ):
                yield Frame(index, time_s, rgb)
                done += 1
            return
        except _backends.BackendError as err:
            if backend == "decord":
                raise DecodeError(path, str(err)) from None
            notify("pyav", f"decord gave up after {done} frames: {err}")
    yield from _pyav_frames(path, wanted[done:], info)


def _pyav_frames(path: str, wanted: list[int], info: VideoInfo) -> Iterator[Frame]:
    served = 0
    try:
        for index, time_s, rgb in _backends.pyav_read(path, wanted, info.rotation):
            yield Frame(index, time_s, rgb)
            served += 1
    except _backends.StreamEnded as end:
        missing = wanted[served:]
        if end.last is None:
            raise DecodeError(path, "the video stream holds no decodable frame") from None
        last_index, last_time, last_rgb = end.last
        if missing[-1] - last_index > end_slack(info.n_frames):
            raise DecodeError(
                path,
                f"the stream ends after {end.n_decoded} frames but frame {missing[-1]} was "
                f"requested (the container reports {info.n_frames}); the file may be truncated",
            ) from None
        for index in missing:  # the requested index, the last frame's pixels and time
            yield Frame(index, last_time, last_rgb)
    except _backends.BackendError as err:
        raise DecodeError(path, str(err)) from None


def decode_in_background(
    items: Iterable[tuple[str, str | os.PathLike]],
    plan: FramePlan | Sequence[int],
    *,
    timeout_s: float = 60.0,
    prefetch_frames: int = 32,
    backend: str = "auto",
    restart_every: int | None = 200,
    threads: int = 0,
) -> BackgroundDecoder:
    """Decode ``(key, path)`` items one after another in a killable worker process.

    The worker runs ahead of the consumer through a queue of at most
    ``prefetch_frames`` messages, so memory depends on that bound, never on the
    length of a video. A video whose decoder makes no progress for ``timeout_s``
    seconds gets its worker killed and restarted; its ``frames`` raise
    :class:`DecodeTimeout` and the run goes on with the next item. A video that
    cannot be decoded raises :class:`DecodeError` from its ``frames`` (or arrives
    with ``info=None`` and ``error`` set). Moving on to the next video before
    exhausting ``frames`` skips the rest of that video.

    The worker is replaced every ``restart_every`` videos (decord leaks memory). ``threads``
    FFmpeg threads decode in it (0: FFmpeg's choice, usually one per core).
    Use the result as a context manager, or call ``close()``, to stop the worker
    promptly; it is also stopped when the iterator is exhausted or garbage-collected.
    The worker starts with the ``spawn`` method: scripts must guard their entry
    point with ``if __name__ == "__main__":``.

    Yields:
        :class:`VideoFrames`, in the order of ``items``.
    """
    from vqa_pipe.pipeline.decode_worker import BackgroundDecoder

    return BackgroundDecoder(
        items,
        plan,
        timeout_s=timeout_s,
        prefetch_frames=prefetch_frames,
        backend=backend,
        restart_every=restart_every,
        threads=threads,
    )
