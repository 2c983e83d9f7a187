"""FAST-VQA fragments (St-GMS): grid mini-patches at native resolution, aligned over a clip.

Spatially, a frame is split into a ``grid x grid`` lattice of cells (cell size
``height // grid`` x ``width // grid``, as FAST-VQA); one ``patch x patch`` mini-patch is taken
per cell, at a random position inside the cell, and the patches are spliced in grid order into
a ``(grid*patch) x (grid*patch)`` fragment frame. The patch positions are drawn once per clip
and kept for every frame of the clip, so each patch is a mini-cube that keeps temporal
distortions. Frames smaller than ``grid*patch`` on either side are first upscaled (bilinear,
aspect ratio kept) so that their shorter side is ``grid*patch``; all other frames are used at
native resolution, never resized.

Temporally (:class:`ClipPlan`), ``n_clips`` clips of ``clip_len`` frames, ``frame_interval``
apart, are spread evenly over the video as in FAST-VQA's test-time sampling: with
``span = clip_len * frame_interval`` the clip starts are ``int(k*a + a/2)`` for
``a = (n_frames - span + 1) / n_clips``. A video shorter than one span starts every clip at
frame 0, and indices past the end wrap around (``index % n_frames``), i.e. the video is
looped, as upstream does.

Positions are deterministic: sampling ``s`` of clip ``c`` draws its offsets from
``numpy.random.default_rng([seed, s, c])``, independent of the video's id and content.

Differences from FAST-VQA's ``get_spatial_fragments`` (which draws unseeded offsets): offsets
may reach the last position of a cell (upstream stops one short), and cell sizes of upscaled
frames are taken from the upscaled size (upstream keeps the size before upscaling).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from vqa_pipe.pipeline.errors import VqaPipeError


class FragmentError(VqaPipeError):
    """Bad fragment parameters or frames that cannot be fragmented."""


@dataclass(frozen=True)
class ClipPlan:
    """Frame indices of ``n_clips`` clips spread over a video (a picklable FramePlan)."""

    clip_len: int = 32
    frame_interval: int = 2
    n_clips: int = 4

    def __post_init__(self) -> None:
        for name in ("clip_len", "frame_interval", "n_clips"):
            if int(getattr(self, name)) < 1:
                raise FragmentError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def span(self) -> int:
        """Frames covered by one clip (before wrapping)."""
        return self.clip_len * self.frame_interval

    def clip_indices(self, n_frames: int) -> np.ndarray:
        """(n_clips, clip_len) frame indices, each in ``[0, n_frames)``."""
        n_frames = int(n_frames)
        if n_frames < 1:
            raise FragmentError(f"cannot sample clips from a video with {n_frames} frames")
        avg = (n_frames - self.span + 1) / self.n_clips
        if n_frames > self.span - 1:
            starts = (np.arange(self.n_clips) * avg + avg / 2).astype(np.int64)
        else:
            starts = np.zeros(self.n_clips, dtype=np.int64)
        idx = starts[:, None] + np.arange(self.clip_len)[None, :] * self.frame_interval
        return idx % n_frames

    def indices(self, info: Any) -> list[int]:
        """Sorted distinct frame indices all clips need (``info.n_frames`` frames)."""
        return sorted({int(i) for i in self.clip_indices(info.n_frames).ravel()})


def upscaled_size(height: int, width: int, min_side: int) -> tuple[int, int]:
    """Frame size after upscaling so that both sides are >= ``min_side`` (unchanged if so)."""
    short = min(height, width)
    if short >= min_side:
        return height, width
    scale = min_side / short
    return max(min_side, round(height * scale)), max(min_side, round(width * scale))


def resize_rgb(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of an HxWx3 uint8 frame to ``size`` = (height, width) (Pillow)."""
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(rgb))
    return np.asarray(image.resize((size[1], size[0]), Image.Resampling.BILINEAR))


@dataclass(frozen=True, eq=False)
class FragmentLayout:
    """Where one clip's mini-patches come from.

    ``tops``/``lefts`` are (grid, grid) pixel positions of each cell's patch in the frame as
    sampled: the native frame, or the upscaled one when ``scaled_hw != frame_hw``.
    """

    frame_hw: tuple[int, int]
    scaled_hw: tuple[int, int]
    grid: int
    patch: int
    tops: np.ndarray
    lefts: np.ndarray

    @property
    def size(self) -> int:
        return self.grid * self.patch

    @property
    def upscaled(self) -> bool:
        return self.scaled_hw != self.frame_hw

    def extract(self, rgb: np.ndarray) -> np.ndarray:
        """The (grid*patch, grid*patch, 3) fragment frame of one HxWx3 frame."""
        if rgb.ndim != 3 or tuple(rgb.shape[:2]) != self.frame_hw:
            raise FragmentError(
                f"frame of shape {tuple(rgb.shape)} does not match the clip's frame size "
                f"{self.frame_hw}"
            )
        if self.upscaled:
            rgb = resize_rgb(rgb, self.scaled_hw)
        return self.take(rgb)

    def take(self, scaled: np.ndarray) -> np.ndarray:
        """Splice the patches of a frame already at ``scaled_hw`` (no checks, no resizing)."""
        steps = np.arange(self.patch)
        rows = (self.tops[:, :, None] + steps)[:, :, :, None]  # G, G, S, 1
        cols = (self.lefts[:, :, None] + steps)[:, :, None, :]  # G, G, 1, S
        cubes = scaled[rows, cols]  # G, G, S, S, 3
        return cubes.transpose(0, 2, 1, 3, 4).reshape(self.size, self.size, scaled.shape[2])


def fragment_layout(
    height: int,
    width: int,
    *,
    grid: int = 7,
    patch: int = 32,
    rng: np.random.Generator | None = None,
) -> FragmentLayout:
    """Draw one clip's patch positions for a ``height x width`` frame.

    Cell ``(i, j)`` spans rows ``[i*ch, (i+1)*ch)`` and columns ``[j*cw, (j+1)*cw)`` with
    ``ch = H // grid``, ``cw = W // grid`` (H, W after any upscaling); its patch lies wholly
    inside the cell, at a uniform random offset (the cell's top-left corner when ``rng`` is
    None).
    """
    if grid < 1 or patch < 1:
        raise FragmentError(f"grid and patch must be >= 1, got grid={grid}, patch={patch}")
    if height < 1 or width < 1:
        raise FragmentError(f"cannot fragment a {width}x{height} frame")
    sh, sw = upscaled_size(height, width, grid * patch)
    ch, cw = sh // grid, sw // grid
    base_t = np.arange(grid)[:, None] * ch
    base_l = np.arange(grid)[None, :] * cw
    if rng is None:
        off_t = np.zeros((grid, grid), dtype=np.int64)
        off_l = np.zeros((grid, grid), dtype=np.int64)
    else:
        off_t = rng.integers(0, ch - patch + 1, size=(grid, grid))
        off_l = rng.integers(0, cw - patch + 1, size=(grid, grid))
    tops = (base_t + off_t).astype(np.int64)
    lefts = (base_l + off_l).astype(np.int64)
    return FragmentLayout((height, width), (sh, sw), grid, patch, tops, lefts)


def clip_rng(seed: int, sampling: int, clip: int) -> np.random.Generator:
    """The generator of one sampling of one clip: reproducible, independent streams."""
    return np.random.default_rng([int(seed), int(sampling), int(clip)])


def fragment_clip(frames: np.ndarray, layout: FragmentLayout) -> np.ndarray:
    """(T, H, W, 3) frames -> (T, G*S, G*S, 3) fragments, one layout for the whole clip."""
    return np.stack([layout.extract(f) for f in frames])
