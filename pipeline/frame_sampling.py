"""Which frames of a video the semantic branch looks at: picklable frame plans.

A plan has ``indices(info) -> list[int]`` (non-decreasing) and ``config() -> dict`` (what a
store records). Plans travel to the decode worker, so they are small frozen dataclasses.

- :class:`FrameSampling`: ``fps`` frames per second evenly spread in time (``None``: every
  frame), capped by ``max_frames``; indices are unique.
- :class:`TSNSampling`: TSN-style segment sampling of exactly ``segments`` frames, one per
  segment, as CLIPVQA's test-mode sampler does (mmaction2's ``SampleFrames`` with
  ``clip_len=1, frame_interval=2, test_mode=True``): with n frames and T segments,
  ``avg = (n - 1) / T`` and frame ``k`` is ``int(k * avg + avg / 2)``; a video of one frame
  gives T zeros. Indices repeat when ``n <= T``: the branch then repeats the frame's rows, so
  a video always yields T rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from vqa_pipe.pipeline.decode import VideoInfo

@dataclass(frozen=True)
class FrameSampling:
    """Frames evenly spaced in time: ``fps`` per second (``None``: every frame), capped.

    The video is cut into ``k`` equal time segments and the frame shown at the middle
    of each is taken, so indices are sorted, unique and within range. Time is the
    presentation time (pts): for a variable-frame-rate video see :func:`vfr_indices`.
    """

    fps: float | None = 2.0
    max_frames: int | None = 64

    def __post_init__(self) -> None:
        fps = self.fps
        if fps is not None and not (
            isinstance(fps, (int, float)) and fps > 0 and math.isfinite(fps)
        ):
            raise ValueError(f"FrameSampling.fps must be a positive number or None, got {fps!r}")
        if self.max_frames is not None and not (
            isinstance(self.max_frames, int) and self.max_frames >= 1
        ):
            raise ValueError(
                f"FrameSampling.max_frames must be an integer >= 1 or None, got {self.max_frames!r}"
            )

    @classmethod
    def from_spec(cls, fps: float | str | None, max_frames: int | None = 64) -> FrameSampling:
        """Build from a config value: a number, a numeric string, or ``"all"``/``None``."""
        if fps is None or (isinstance(fps, str) and fps.strip().lower() == "all"):
            return cls(None, max_frames)
        try:
            value = float(fps)
        except (TypeError, ValueError):
            raise ValueError(
                f"frame rate must be a positive number or 'all', got {fps!r}"
            ) from None
        return cls(value, max_frames)

    def config(self) -> dict:
        return {"kind": "fps", "fps": self.fps, "max_frames": self.max_frames, "by": "pts"}

    def indices(self, info: VideoInfo) -> list[int]:
        if variable_frame_times(info) is not None:
            return vfr_indices(info, self.fps, self.max_frames)
        n = int(info.n_frames)
        if n <= 0:
            return []
        if self.fps is None:
            k = n
        else:
            duration = n / info.fps if info.fps and info.fps > 0 else info.duration_s
            k = max(1, round(duration * self.fps)) if duration and duration > 0 else n
        k = min(k, n, self.max_frames or n)
        if k == n:
            return list(range(n))
        step = n / k
        return [int((i + 0.5) * step) for i in range(k)]


def variable_frame_times(info: VideoInfo) -> tuple[float, ...] | None:
    """``info.frame_times`` when frame index and time part ways, else ``None``.

    They part ways when some frame is shown more than a quarter of the mean frame interval
    away from where a constant frame rate would put it (index × mean interval): then taking
    frames evenly by index would not take them evenly in time. Timestamps rounded to the
    container's time base stay far below that, so constant-rate videos keep the index rule
    exactly.
    """
    times = getattr(info, "frame_times", None)
    if not times or len(times) < 3:
        return None
    stamps = np.asarray(times, dtype=np.float64)
    mean = (stamps[-1] - stamps[0]) / (len(stamps) - 1)
    if not mean > 0:
        return tuple(times)
    drift = np.abs(stamps - stamps[0] - mean * np.arange(len(stamps)))
    return tuple(times) if drift.max() > 0.25 * mean else None


def vfr_indices(info: VideoInfo, fps: float | None, max_frames: int | None) -> list[int]:
    """Frames evenly spaced in presentation time, from ``info.frame_times``.

    The video lasts from its first frame's time to its last frame's time plus the median
    frame interval (the last frame's own duration is not known). It is cut into
    ``k = round(duration * fps)`` equal segments (every frame: ``fps=None``), at most
    ``max_frames``, and the frame on screen at the middle of each segment is taken. A frame
    shown through several segment middles is taken once, so a video with long-held frames
    gives fewer than ``k`` frames.
    """
    times = np.asarray(info.frame_times, dtype=np.float64)
    n = len(times)
    if n <= 1:
        return list(range(n))
    duration = times[-1] + float(np.median(np.diff(times))) - times[0]
    k = n if fps is None else max(1, round(duration * fps))
    k = min(k, n, max_frames or n)
    if k == n:
        return list(range(n))
    middles = times[0] + (np.arange(k) + 0.5) * (duration / k)
    shown = np.searchsorted(times, middles + 1e-9 * max(1.0, duration), side="right") - 1
    return sorted({int(i) for i in np.clip(shown, 0, n - 1)})


@dataclass(frozen=True)
class TSNSampling:
    """``segments`` frames, one from the middle of each of as many equal segments (CLIPVQA)."""

    segments: int = 32

    def __post_init__(self) -> None:
        if isinstance(self.segments, bool) or not isinstance(self.segments, int) or (
            self.segments < 1
        ):
            raise ValueError(f"TSNSampling.segments must be an integer >= 1, got {self.segments!r}")

    def config(self) -> dict:
        return {"kind": "tsn", "segments": self.segments}

    def indices(self, info: VideoInfo) -> list[int]:
        n = int(info.n_frames)
        if n <= 0:
            return []
        if n <= 1:  # upstream: fewer frames than its clip span (2) -> all zeros
            return [0] * self.segments
        avg = (n - 1) / float(self.segments)
        return [int(k * avg + avg / 2.0) % n for k in range(self.segments)]
