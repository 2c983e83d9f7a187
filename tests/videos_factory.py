"""Tiny synthetic test videos made with PyAV (its bundled FFmpeg), in a folder the test gives.

Every frame carries its own index: the bottom-left quadrant is gray level
``20 + 14 * (i % 16)``, the bottom-right ``20 + 14 * (i // 16)`` (up to 256 frames are
told apart, with room for codec error). :func:`frame_id` reads it back. The coded
top-left corner holds a white square, so a test can tell which way a frame was turned.

Codecs that work with the FFmpeg bundled in PyAV 18 (checked): ``libx264`` 8-bit
and 10-bit (``yuv420p10le``) in ``.mp4``; ``ffv1`` with true ``gray``, ``gray10le``,
``yuv420p10le`` and odd sizes in ``.mkv``. libx264 quietly stores ``gray`` as
``yuv420p``, so gray tests use ffv1.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

LEVEL0, STEP = 20, 14


def frame_pattern(index: int, width: int, height: int) -> np.ndarray:
    """The RGB picture of frame ``index`` (all three channels equal)."""
    img = np.zeros((height, width, 3), np.uint8)
    half_h, half_w = height // 2, width // 2
    img[half_h:, :half_w] = LEVEL0 + STEP * (index % 16)
    img[half_h:, half_w:] = LEVEL0 + STEP * ((index // 16) % 16)
    side = max(4, min(width, height) // 5)
    img[:side, :side] = 255
    return img


def frame_id(rgb: np.ndarray) -> int:
    """The index written into a frame by :func:`frame_pattern` (coded orientation)."""
    height, width = rgb.shape[:2]
    half_h, half_w = height // 2, width // 2
    margin_h, margin_w = max(1, height // 16), max(1, width // 16)
    low = rgb[half_h + margin_h : height - margin_h, margin_w : half_w - margin_w].mean()
    high = rgb[half_h + margin_h : height - margin_h, half_w + margin_w : width - margin_w].mean()
    return int(round((low - LEVEL0) / STEP)) + 16 * int(round((high - LEVEL0) / STEP))


def make_video(
    path: str | Path,
    *,
    width: int = 64,
    height: int = 48,
    n_frames: int = 20,
    fps: int = 10,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    rotation: int = 0,
    gop: int | None = None,
) -> Path:
    """Encode a small video at ``path`` and return it.

    ``rotation`` (degrees counter-clockwise) is stored as a display matrix, the way
    phones mark portrait videos; the pixels stay in coded orientation. ``gop``
    (libx264 only) puts a keyframe exactly every ``gop`` frames; by default x264
    decides (one every 250 frames at most).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if codec == "libx264":
            options = {"crf": "12", "preset": "ultrafast"}
            if gop:
                options["x264-params"] = f"keyint={gop}:min-keyint={gop}:scenecut=0"
            stream.options = options
        if rotation:
            stream.set_display_rotation(rotation)
        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(frame_pattern(i, width, height), format="rgb24")
            for packet in stream.encode(frame.reformat(format=pix_fmt)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_corrupt(path: str | Path, n_bytes: int = 64 * 1024, seed: int = 0) -> Path:
    """Random bytes with a video file name."""
    path = Path(path)
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, n_bytes, np.uint8).tobytes())
    return path


def write_truncated(source: str | Path, path: str | Path, fraction: float = 0.3) -> Path:
    """The first ``fraction`` of ``source``'s bytes."""
    data = Path(source).read_bytes()
    path = Path(path)
    path.write_bytes(data[: int(len(data) * fraction)])
    return path
