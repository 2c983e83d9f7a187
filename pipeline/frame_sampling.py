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
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vqa_pipe.pipeline.decode import VideoInfo

SAMPLINGS = ("fps", "tsn")


@dataclass(frozen=True)
class FrameSampling:
    """Frames evenly spaced in time: ``fps`` per second (``None``: every frame), capped.

    The video is cut into ``k`` equal time segments and the frame at the middle
    of each is taken, so indices are sorted, unique and within range.
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
        return {"kind": "fps", "fps": self.fps, "max_frames": self.max_frames}

    def indices(self, info: VideoInfo) -> list[int]:
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


def make_sampling(spec: dict[str, Any]) -> FrameSampling | TSNSampling:
    """A plan from its ``config()`` form (``{"kind": "fps"|"tsn", ...}``), e.g. from a preset."""
    if not isinstance(spec, dict) or spec.get("kind", "fps") not in SAMPLINGS:
        raise ValueError(
            f"frame sampling must be a mapping with kind one of {SAMPLINGS}, got {spec!r}"
        )
    body = {k: v for k, v in spec.items() if k != "kind"}
    try:
        if spec.get("kind", "fps") == "tsn":
            return TSNSampling(**body)
        return FrameSampling.from_spec(body.get("fps", 2.0), body.get("max_frames", 64))
    except TypeError as err:
        raise ValueError(f"bad frame sampling {spec!r}: {err}") from None
