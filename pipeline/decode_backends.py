"""Low-level frame readers behind :mod:`vqa_pipe.pipeline.decode`: PyAV and decord.

Readers yield ``(index, time_s, rgb)`` tuples for a non-decreasing list of frame
indices and raise :class:`BackendError` with a reason (without the file name:
:mod:`~vqa_pipe.pipeline.decode` adds it). Use the public API in ``decode`` instead.

What is opened: only the container formats in :data:`VIDEO_DEMUXERS` (FFmpeg's
``format_whitelist``), only through the ``file`` protocol (``protocol_whitelist``). FFmpeg
would otherwise take a JPEG or PNG named ``.mp4`` for a one-frame video, follow an ffconcat or
HLS playlist to other files or URLs, read numbered image sequences, or open network streams
named in an SDP file. A refused file is described from its first bytes (``sniff``) or, failing
that, by the FFmpeg demuxer that would have read it. decord opens files itself, without these
limits, so it is only ever given a file PyAV has opened under them (``decode.probe`` runs first).
"""

from __future__ import annotations

import bisect
import functools
import math
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import av
import numpy as np
from vqa_pipe.pipeline.errors import VqaPipeError

RawFrame = tuple[int, float, np.ndarray]

DECORD_CHUNK = 8  # frames per decord get_batch call
DECORD_GROUP_BYTES = 128 * 2**20  # decoded frames decord_read holds between seeks
DECORD_MAX_FILE_BYTES = 128 * 2**20  # larger files go to PyAV under "auto" (decord_read)
TEXT_CODECS = frozenset({"ansi", "bintext", "xbin", "idf"})  # FFmpeg renders text files as video

VIDEO_DEMUXERS: dict[str, str] = {
    "mov": "MP4/MOV/M4V/3GP",
    "matroska": "Matroska/WebM",
    "avi": "AVI",
    "mpegts": "MPEG-TS",
    "mpeg": "MPEG-PS/VOB",
    "flv": "FLV",
    "asf": "ASF/WMV",
    "ogg": "Ogg",
    "mxf": "MXF",
    "nut": "NUT",
    "rm": "RealMedia",
    "dv": "DV",
    "yuv4mpegpipe": "Y4M",
    "ivf": "IVF",
    "obu": "AV1 OBU",
    "h264": "raw H.264",
    "hevc": "raw H.265",
    "vvc": "raw H.266",
    "m4v": "raw MPEG-4 video",
    "mpegvideo": "raw MPEG-1/2 video",
}
"""FFmpeg demuxers a video may be read with (name: what users call it). Each reads only the
file it is given. Not here: image formats (still images and GIF/APNG/WebP animations),
playlists and manifests (concat, hls, dash), image sequences (image2), network descriptions
(sdp, rtsp), and the many game, audio and subtitle formats FFmpeg also reads."""

# Demuxers that open other files, URLs or devices: never used, not even to name a refused file.
_OPENS_OTHERS = frozenset({
    "concat", "hls", "dash", "image2", "dvdvideo", "imf", "mlv", "vobsub", "sdp", "rtsp",
    "rtp", "sap", "webm_dash_manifest", "lavfi", "avisynth", "vapoursynth", "alsa", "fbdev",
    "kmsgrab", "oss", "video4linux2", "v4l2", "x11grab", "xcbgrab", "pulse", "jack",
})
_SNIFF_BYTES = 4096
_ISO_IMAGE_BRANDS = frozenset({
    b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif", b"avis",
})


DECODE_THREADS = 0
"""FFmpeg threads per decoder (0: as many as FFmpeg likes, usually the core count). A pool
of N background decoders gives each ``cores // N`` (``decode_in_background(threads=)``), so
that N decoders do not each start a thread per core."""


class BackendError(VqaPipeError):
    """A reader could not deliver; the message is the reason, without the path."""


class StreamEnded(BackendError):
    """The stream ran out before every requested frame was decoded."""

    def __init__(self, n_decoded: int, last: RawFrame | None) -> None:
        super().__init__(f"the stream ended after {n_decoded} frames")
        self.n_decoded = n_decoded
        self.last = last


@dataclass(frozen=True)
class ProbeResult:
    width: int  # coded size, before display rotation
    height: int
    fps: float
    n_frames: int
    duration_s: float
    rotation: int  # counter-clockwise degrees, a multiple of 90 in [0, 360)
    codec: str
    pix_fmt: str
    frame_times: tuple[float, ...] | None = None  # presentation times, see packet_times


@functools.lru_cache(maxsize=1)
def _open_options() -> dict[str, str]:
    available = {part for name in av.formats_available for part in name.split(",")}
    return {
        "format_whitelist": ",".join(n for n in VIDEO_DEMUXERS if n in available),
        "protocol_whitelist": "file",
    }


@functools.lru_cache(maxsize=1)
def _naming_options() -> dict[str, str]:
    """Open options that let any self-contained demuxer read a file, only to name what it is."""
    names = set()
    for name in av.formats_available:
        try:
            if not av.ContainerFormat(name).is_input:
                continue
        except (ValueError, av.FFmpegError):
            continue
        parts = set(name.split(","))
        if not parts & _OPENS_OTHERS:
            names |= parts
    return {"format_whitelist": ",".join(sorted(names)), "protocol_whitelist": "file"}


def _open(path: str) -> av.container.InputContainer:
    """Open ``path`` with PyAV, accepting only the container formats in VIDEO_DEMUXERS."""
    try:
        mode = os.stat(path).st_mode
        if stat.S_ISDIR(mode):
            raise BackendError("is a directory, not a video file")
        if stat.S_ISREG(mode):
            with open(path, "rb") as fh:
                head = fh.read(64)
            if head[4:8] == b"ftyp" and head[8:12] in _ISO_IMAGE_BRANDS:
                raise BackendError(sniff(head) or "an image")  # the mov demuxer would take it
    except FileNotFoundError:
        raise BackendError("file not found") from None
    except PermissionError:
        raise BackendError("permission denied") from None
    except ValueError:  # a NUL byte in the path
        raise BackendError("the path holds a NUL byte") from None
    except OSError as err:
        raise BackendError(f"cannot be read ({err.strerror or err})") from None
    try:
        return av.open(path, mode="r", metadata_errors="ignore", container_options=_open_options())
    except FileNotFoundError:
        raise BackendError("file not found") from None
    except IsADirectoryError:
        raise BackendError("is a directory, not a video file") from None
    except PermissionError:
        raise BackendError("permission denied") from None
    except av.FFmpegError as err:
        raise BackendError(_refusal(path, err)) from None


def _refusal(path: str, err: av.FFmpegError) -> str:
    """Why ``path`` did not open: what it is when that can be told, else FFmpeg's reason."""
    head = b""
    try:
        if stat.S_ISREG(os.stat(path).st_mode):
            with open(path, "rb") as fh:
                head = fh.read(_SNIFF_BYTES)
    except OSError:
        pass
    why = sniff(head)
    if why:
        return why
    if getattr(err, "errno", None) == 22:  # EINVAL: the format is not on the whitelist
        try:
            with av.open(path, mode="r", metadata_errors="ignore",
                         container_options=_naming_options()) as container:
                fmt = container.format
                return (
                    f"not a video container vqa-pipe reads: FFmpeg reads it as "
                    f"{fmt.long_name} ({fmt.name}); accepted: {', '.join(VIDEO_DEMUXERS.values())}"
                )
        except av.FFmpegError:
            pass
    return f"not a readable video container ({_ffmpeg_reason(err)})"


def sniff(head: bytes) -> str | None:
    """Why a file whose first bytes are ``head`` is not a video, when they tell; else None."""
    if not head:
        return None
    still = "not a video (vqa-pipe refuses still and animated images)"
    magics = (
        (b"\xff\xd8\xff", f"a JPEG image, {still}"),
        (b"\x89PNG\r\n\x1a\n", f"a PNG image, {still}"),
        (b"GIF87a", f"a GIF image, {still}"),
        (b"GIF89a", f"a GIF image, {still}"),
        (b"II*\x00", f"a TIFF image, {still}"),
        (b"MM\x00*", f"a TIFF image, {still}"),
        (b"\xff\x0a", f"a JPEG XL image, {still}"),
        (b"\x00\x00\x00\x0cJXL ", f"a JPEG XL image, {still}"),
        (b"\x00\x00\x00\x0cjP  ", f"a JPEG 2000 image, {still}"),
        (b"BM", f"a BMP image, {still}"),
        (b"%PDF", "a PDF document, not a video"),
        (b"PK\x03\x04", "a ZIP archive, not a video"),
    )
    for magic, why in magics:
        if head.startswith(magic):
            return why
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return f"a WebP image, {still}"
    if head[4:8] == b"ftyp" and head[8:12] in _ISO_IMAGE_BRANDS:
        return f"a HEIF/AVIF image (brand {head[8:12].decode('ascii', 'replace')}), {still}"
    text = _as_text(head)
    if text is None:
        return None
    first = text.lstrip("\ufeff \t\r\n")
    others = "it would make FFmpeg read other files or URLs"
    if first.startswith("ffconcat version"):
        return f"an ffconcat playlist, not a video ({others})"
    if first.startswith("#EXTM3U"):
        return f"an HLS playlist, not a video ({others})"
    if first.startswith("<?xml") and "<MPD" in first:
        return f"a DASH manifest, not a video ({others})"
    if first.startswith("v=0"):
        return "an SDP session description, not a video (it would make FFmpeg open network streams)"
    return "a text file, not a video"


def _as_text(head: bytes) -> str | None:
    """``head`` as text when it looks like a text file (UTF-8, no control bytes), else None."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.start < len(head) - 3:  # not merely a character cut at the end of the sample
            return None
        text = head[: err.start].decode("utf-8")
    if any(ord(c) < 32 and c not in "\t\r\n\f" for c in text):
        return None
    return text


def _ffmpeg_reason(err: av.FFmpegError) -> str:
    return getattr(err, "strerror", None) or str(err)


def _rotation_of(frame: av.VideoFrame) -> int:
    """Display rotation of ``frame`` as counter-clockwise degrees in {0, 90, 180, 270}."""
    try:
        degrees = float(frame.rotation or 0)
    except (AttributeError, TypeError, ValueError):
        return 0
    quarter = round(degrees / 90.0)
    if not math.isfinite(degrees) or abs(degrees - 90.0 * quarter) > 1.0:
        return 0  # not a right angle: left as coded
    return int(quarter % 4) * 90


def to_rgb(frame: av.VideoFrame, rotation: int) -> np.ndarray:
    """``frame`` as a C-contiguous HxWx3 uint8 RGB array, turned to display orientation."""
    rgb = frame.to_ndarray(format="rgb24")
    if rotation:
        rgb = np.rot90(rgb, k=rotation // 90)
    return np.ascontiguousarray(rgb)


def pyav_probe(path: str) -> ProbeResult:
    """Header facts plus one decoded frame (which proves the stream decodes)."""
    with _open(path) as container:
        if not container.streams.video:
            raise BackendError("the file has no video stream")
        stream = container.streams.video[0]
        codec = stream.codec_context.name
        if codec in TEXT_CODECS:
            raise BackendError(f"a text file (FFmpeg would render it as {codec} art), not a video")
        pix_fmt = stream.codec_context.pix_fmt or ""
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        n_frames = int(stream.frames or 0)
        if stream.duration and stream.time_base:
            duration_s = float(stream.duration * stream.time_base)
        elif container.duration:
            duration_s = container.duration / av.time_base
        else:
            duration_s = 0.0
        try:
            first = next(iter(container.decode(stream)), None)
        except av.FFmpegError as err:
            raise BackendError(f"the first frame does not decode ({_ffmpeg_reason(err)})") from None
        if first is None:
            raise BackendError("the video stream holds no decodable frame")
        width, height, rotation = first.width, first.height, _rotation_of(first)
        pix_fmt = pix_fmt or first.format.name
    count, times = packet_times(path, strict=n_frames <= 0)
    if n_frames <= 0:
        n_frames = count
    elif times is not None and not 0 <= n_frames - len(times) <= max(3, 0.02 * n_frames):
        times = None  # the header and the packets disagree (a cut file): decoding will tell
    if duration_s <= 0 and fps > 0:
        duration_s = n_frames / fps
    if fps <= 0 and duration_s > 0:
        fps = n_frames / duration_s
    return ProbeResult(width, height, fps, n_frames, duration_s, rotation, codec, pix_fmt,
                       times)


def packet_times(path: str, *, strict: bool = True) -> tuple[int, tuple[float, ...] | None]:
    """Frame count and presentation times of the video stream, by demuxing (no decoding).

    The times are the packets' ``pts`` in display order, in seconds from the stream's start
    time (the origin decoded frames' ``time_s`` use), for the packets a decoder turns into
    frames (empty and discarded packets are left out). They are ``None`` when a packet has
    no ``pts`` (raw elementary streams), or, unless ``strict``, when demuxing fails part-way.

    Raises:
        BackendError: demuxing fails and ``strict`` is set.
    """
    with _open(path) as container:
        stream = container.streams.video[0]
        pts: list[int] = []
        count, timed = 0, True
        try:
            for packet in container.demux(stream):
                if not packet.size or packet.is_discard:
                    continue
                count += 1
                if packet.pts is None:
                    timed = False
                elif timed:
                    pts.append(packet.pts)
        except av.FFmpegError as err:
            if strict:
                raise BackendError(f"demuxing failed ({_ffmpeg_reason(err)})") from None
            return count, None
        time_base = stream.time_base
        start = stream.start_time
    if not (timed and pts and time_base):
        return count, None
    ticks = np.sort(np.asarray(pts, dtype=np.int64))
    origin = start if start is not None else int(ticks[0])
    seconds = (ticks - origin).astype(np.float64) * time_base.numerator / time_base.denominator
    return count, tuple(seconds.tolist())


def pyav_read(path: str, indices: Sequence[int], rotation: int) -> Iterator[RawFrame]:
    """Decode sequentially from the start; convert only the requested frames.

    Raises :class:`StreamEnded` when the stream stops before the last requested
    index, carrying the last decoded frame so the caller can decide what to do.
    """
    if not indices:
        return
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.thread_count = DECODE_THREADS
        start = stream.start_time or 0
        time_base = stream.time_base
        pos, n_decoded, last = 0, 0, None
        frames = container.decode(stream)
        while pos < len(indices):
            try:
                frame = next(frames, None)
            except av.FFmpegError as err:
                raise BackendError(
                    f"PyAV failed at frame {n_decoded} ({_ffmpeg_reason(err)})"
                ) from None
            if frame is None:
                tail = None
                if last is not None:
                    tail = (n_decoded - 1, _time_of(last, start, time_base, n_decoded - 1, stream),
                            to_rgb(last, rotation))
                raise StreamEnded(n_decoded, tail)
            index = n_decoded
            n_decoded += 1
            last = frame
            if indices[pos] != index:
                continue
            time_s = _time_of(frame, start, time_base, index, stream)
            rgb = to_rgb(frame, rotation)
            while pos < len(indices) and indices[pos] == index:
                yield index, time_s, rgb
                pos += 1


def _time_of(frame: av.VideoFrame, start: int, time_base, index: int, stream) -> float:
    if frame.pts is not None and time_base:
        return float((frame.pts - start) * time_base)
    rate = stream.average_rate or stream.guessed_rate
    return index / float(rate) if rate else 0.0


@functools.lru_cache(maxsize=1)
def decord_available() -> str | None:
    """``None`` when decord imports, else the reason it does not."""
    try:
        import decord  # noqa: F401
    except Exception as err:  # ImportError, or a broken native library (OSError)
        return f"decord is not importable ({type(err).__name__}: {err})"
    return None


def decord_read(
    path: str,
    indices: Sequence[int],
    *,
    width: int,
    height: int,
    n_frames: int,
    pyav_fallback: bool = False,
) -> Iterator[RawFrame]:
    """Read with decord, refusing anything that looks wrong before or while decoding.

    Refuses (``BackendError``) when decord's frame count differs from the
    container's (the situation in which decord 0.6 may hang), when requested
    timestamps are not increasing (its known wrong-frame case), and when a frame
    comes back with the wrong shape. With ``pyav_fallback`` (PyAV takes over when
    this refuses) it also refuses where PyAV is the better choice: a file larger
    than :data:`DECORD_MAX_FILE_BYTES`, or a plan (below) that would decode more
    frames than one sequential PyAV pass.

    Memory: after every seek (each new GOP) decord 0.6 reads the rest of the file
    into its packet queue (its ``Pop`` does not wait while its decoder thread has
    produced nothing, so the reading loop spins to the end of the file), and the
    packets stay queued until the next seek. While the caller is away, the
    decoder thread keeps turning them into full-size RGB frames, so a paused
    reader grows without bound. The compressed read-ahead cannot be avoided (hence
    the file size limit); the decoded one is: the wanted frames are decoded in
    groups, one per GOP and at most :data:`DECORD_GROUP_BYTES` each, with no pause
    between ``get_batch`` calls, and the reader is rewound (``seek(0)``, which
    drops decord's queues and stops its thread) before the group's frames are
    handed out. The next group starts with a seek to its keyframe, which decord
    does anyway when the group starts a later GOP; a group that continues a GOP
    (one with more wanted frames than a group holds) re-decodes it from its
    keyframe.
    """
    if not indices:
        return
    if pyav_fallback:
        try:
            size = os.path.getsize(path)
        except OSError:
            size = 0  # decord will say what is wrong
        if size > DECORD_MAX_FILE_BYTES:
            raise BackendError(
                f"the file holds {size / 2**20:.0f} MiB and decord may hold all of it in "
                f"memory (more than {DECORD_MAX_FILE_BYTES / 2**20:.0f} MiB)"
            )
    try:
        import decord

        reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=DECODE_THREADS)
    except Exception as err:
        raise BackendError(f"decord could not open the file ({_short(err)})") from None
    try:
        count = len(reader)
        if count != n_frames:
            raise BackendError(f"decord counts {count} frames, the container {n_frames}")
        if indices[-1] >= count:
            raise BackendError(f"frame {indices[-1]} is past decord's last frame {count - 1}")
        unique = sorted(set(indices))
        try:
            stamps = np.asarray(reader.get_frame_timestamp(unique), dtype=np.float64)
        except Exception as err:
            raise BackendError(f"decord has no timestamps ({_short(err)})") from None
        starts = stamps.reshape(len(unique), -1)[:, 0]
        if not np.all(np.isfinite(starts)) or np.any(np.diff(starts) <= 0):
            raise BackendError("decord reports timestamps that do not increase with the index")
        times = dict(zip(unique, starts.tolist(), strict=True))
        try:
            keys = [int(k) for k in reader.get_key_indices()]
        except Exception as err:
            raise BackendError(f"decord has no keyframe index ({_short(err)})") from None
        per_group = max(1, DECORD_GROUP_BYTES // max(1, width * height * 3))
        groups = decord_groups(unique, keys, per_group)
        if pyav_fallback:
            cost, sequential = decord_cost(groups, keys), unique[-1] + 1
            if cost > sequential:
                raise BackendError(
                    f"decord would decode {cost} frames (holding at most {per_group} at a "
                    f"time), PyAV {sequential} in one pass"
                )
        pos = 0
        for group in groups:
            decoded = _decord_group(reader, group, width, height)
            try:
                reader.seek(0)  # drops decord's read-ahead before the consumer is waited on
            except Exception as err:
                raise BackendError(f"decord could not rewind ({_short(err)})") from None
            decoded.reverse()
            for index in group:
                rgb = decoded.pop()  # handed out, no longer held here
                while pos < len(indices) and indices[pos] == index:
                    yield index, times[index], rgb
                    pos += 1
            del rgb
    finally:
        del reader


def decord_groups(unique: Sequence[int], keys: Sequence[int], per_group: int) -> list[list[int]]:
    """``unique`` (sorted) cut at every GOP start and after ``per_group`` frames of one GOP.

    Every group lies within one GOP (``keys``: decord's keyframe indices), so that
    rewinding the reader after a group costs nothing when the next group starts a
    later GOP: decord seeks to that GOP's keyframe anyway.
    """
    groups: list[list[int]] = []
    last_gop = None
    for index in unique:
        gop = bisect.bisect_right(keys, index)
        if groups and gop == last_gop and len(groups[-1]) < per_group:
            groups[-1].append(index)
        else:
            groups.append([index])
        last_gop = gop
    return groups


def decord_cost(groups: Sequence[Sequence[int]], keys: Sequence[int]) -> int:
    """Frames decord decodes for :func:`decord_groups`: from each group's keyframe to its end."""
    total = 0
    for group in groups:
        gop = bisect.bisect_right(keys, group[0])
        total += group[-1] - (keys[gop - 1] if gop else 0) + 1
    return total


def _decord_group(reader, group: Sequence[int], width: int, height: int) -> list[np.ndarray]:
    """The frames of ``group``, decoded back to back (decord must not be left idle mid-way)."""
    out: list[np.ndarray] = []
    step = max(1, min(DECORD_CHUNK, DECORD_GROUP_BYTES // max(1, width * height * 3)))
    for lo in range(0, len(group), step):
        chunk = list(group[lo : lo + step])
        try:
            batch = reader.get_batch(chunk).asnumpy()
        except Exception as err:
            raise BackendError(f"decord failed on frames {chunk} ({_short(err)})") from None
        if batch.shape != (len(chunk), height, width, 3) or batch.dtype != np.uint8:
            raise BackendError(
                f"decord returned frames of shape {batch.shape} {batch.dtype}, "
                f"expected {(len(chunk), height, width, 3)} uint8"
            )
        out.extend(rgb.copy() for rgb in batch)  # views would keep the whole batch alive
        del batch
    return out


def _short(err: BaseException, limit: int = 200) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"
