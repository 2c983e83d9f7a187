"""FAST-VQA fragments (St-GMS): grid mini-patches at native resolution, aligned over a clip.

This module reproduces FAST-VQA's test-time sampling (``fastvqa/datasets/fusion_datasets.py``
of VQAssessment/FAST-VQA-and-FasterVQA): ``FragmentSampleFrames`` for the clips and
``get_spatial_fragments`` for the patches. ``tests/fixtures/fastvqa/`` holds the upstream
outputs the tests compare against.

**Temporal** (:class:`ClipPlan`, ``sampler="fastvqa"``, the default). FAST-VQA builds its
test sampler as ``FragmentSampleFrames(clip_len, num_clips, frame_interval)``: the video's
``N`` frames are cut into ``n_clips`` equal segments of ``N // n_clips`` frames; clip ``k``
starts at ``k * (N // n_clips)`` plus an offset drawn in ``[0, N // n_clips - span)`` when the
segment is longer than ``span = clip_len * frame_interval`` (else 0), and takes ``clip_len``
frames ``frame_interval`` apart; indices past the end wrap around (``% N``), i.e. a short
video is looped. For 240 frames and the defaults (4 clips, 32 frames, interval 2) the clips
start at 0, 60, 120 and 180; for 50 frames at 0, 12, 24 and 36.

Upstream draws the offsets with ``np.random.randint(0, N // n_clips - span, size=n_clips)``
from NumPy's global generator, a new draw per call. Here they are seeded:
``np.random.default_rng([seed, N]).integers(0, N // n_clips - span, size=n_clips)`` (same
range, upper bound excluded as upstream): one video is always sampled the same way.
``sampler="centred"`` keeps mmaction's ``SampleFrames`` test mode (starts
``int(k*a + a/2)``, ``a = (N - span + 1) / n_clips``; all clips at 0 when ``N < span``),
which FAST-VQA's ``vqa.py`` demo uses.

**Spatial** (:func:`fragment_layout`). With ``size = grid * patch`` and a frame of ``H x W``:

* ``small_frames="fastvqa"`` (the default, upstream's ``fallback_type="upsample"``): when
  ``r = min(H / size, W / size) < 1`` the frame is upscaled with
  ``torch.nn.functional.interpolate(frame / 255, scale_factor=1 / r, mode="bilinear")``,
  multiplied by 255 and cast back to uint8 (truncated), exactly as upstream. The patch grid is
  still computed from the *original* ``H x W``, as upstream does: cell ``(i, j)`` starts at
  ``(min(H // grid * i, H - patch), min(W // grid * j, W - patch))`` and the patches are cut
  from the upscaled frame there, so they cover only its top-left ``H x W`` part (upstream's
  behaviour, kept for fidelity; frames under ``patch`` pixels, which upstream cannot handle,
  are refused).
* ``small_frames="resize"``: the frame is upscaled with Pillow (bilinear, aspect ratio kept)
  so that its shorter side is ``size``, and the grid is computed on the upscaled frame.

Frames at least ``size`` on both sides are used at native resolution in both modes. Each
cell's patch is offset inside the cell by a draw in ``[0, H // grid - patch)`` rows and
``[0, W // grid - patch)`` columns (0 when the cell is not larger than the patch), the range of
upstream's ``torch.randint``. The offsets are drawn once per clip and kept for every frame
of the clip, so each patch is a mini-cube that keeps temporal distortions. Sampling ``s`` of
clip ``c`` draws from ``numpy.random.default_rng([seed, s, c])`` (upstream: unseeded
``torch.randint``), rows first, then columns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from vqa_pipe.pipeline.errors import VqaPipeError

SAMPLERS: tuple[str, ...] = ("fastvqa", "centred")
SMALL_FRAMES: tuple[str, ...] = ("fastvqa", "resize")


class FragmentError(VqaPipeError):
    """Bad fragment parameters or frames that cannot be fragmented."""


def clip_offset_rng(seed: int, n_frames: int) -> np.random.Generator:
    """The generator of the temporal offsets of a video of ``n_frames`` frames."""
    return np.random.default_rng([int(seed), int(n_frames)])


@dataclass(frozen=True)
class ClipPlan:
    """Frame indices of ``n_clips`` clips of a video (a picklable FramePlan).

    ``sampler``: ``fastvqa`` (FragmentSampleFrames, test mode) or ``centred`` (SampleFrames,
    test mode); ``seed`` seeds the ``fastvqa`` offsets (see the module docstring).
    """

    clip_len: int = 32
    frame_interval: int = 2
    n_clips: int = 4
    sampler: str = "fastvqa"
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("clip_len", "frame_interval", "n_clips"):
            if int(getattr(self, name)) < 1:
                raise FragmentError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.sampler not in SAMPLERS:
            raise FragmentError(
                f"unknown clip sampler {self.sampler!r}; choose one of {', '.join(SAMPLERS)}"
            )

    @property
    def span(self) -> int:
        """Frames covered by one clip (before wrapping)."""
        return self.clip_len * self.frame_interval

    def clip_starts(self, n_frames: int) -> np.ndarray:
        """(n_clips,) first frame of each clip (before wrapping)."""
        n_frames = int(n_frames)
        if n_frames < 1:
            raise FragmentError(f"cannot sample clips from a video with {n_frames} frames")
        if self.sampler == "fastvqa":
            segment = n_frames // self.n_clips
            starts = np.arange(self.n_clips, dtype=np.int64) * segment
            if segment > self.span:
                starts += clip_offset_rng(self.seed, n_frames).integers(
                    0, segment - self.span, size=self.n_clips)
            return starts
        avg = (n_frames - self.span + 1) / self.n_clips
        if n_frames > self.span - 1:
            return (np.arange(self.n_clips) * avg + avg / 2).astype(np.int64)
        return np.zeros(self.n_clips, dtype=np.int64)

    def clip_indices(self, n_frames: int) -> np.ndarray:
        """(n_clips, clip_len) frame indices, each in ``[0, n_frames)``."""
        starts = self.clip_starts(n_frames)
        idx = starts[:, None] + np.arange(self.clip_len)[None, :] * self.frame_interval
        return idx % int(n_frames)

    def indices(self, info: Any) -> list[int]:
        """Sorted distinct frame indices all clips need (``info.n_frames`` frames)."""
        return sorted({int(i) for i in self.clip_indices(info.n_frames).ravel()})


def upscaled_size(height: int, width: int, min_side: int) -> tuple[int, int]:
    """Frame size after upscaling so that both sides are >= ``min_side`` (unchanged if so);
    the ``small_frames="resize"`` variant."""
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


def fastvqa_upscale(rgb: np.ndarray, scale: float) -> np.ndarray:
    """FAST-VQA's upsampling of a small HxWx3 uint8 frame: bilinear by ``scale`` on the
    0-1 range (``align_corners=False``, torch's output size ``floor(side * scale)``), then
    ``* 255`` truncated to uint8."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None]
    with torch.no_grad():
        y = F.interpolate(x / 255.0, scale_factor=scale, mode="bilinear")
        y = (y * 255.0).to(torch.uint8)
    return y[0].permute(1, 2, 0).contiguous().numpy()


def fastvqa_scaled_size(height: int, width: int, size: int) -> tuple[float, tuple[int, int]]:
    """FAST-VQA's upscaling factor for a ``height x width`` frame and the upscaled size
    ``(1.0, (height, width))`` when no upscaling is needed)."""
    ratio = min(height / size, width / size)
    if ratio >= 1:
        return 1.0, (height, width)
    scale = 1 / ratio
    return scale, (math.floor(height * scale), math.floor(width * scale))


@dataclass(frozen=True, eq=False)
class FragmentLayout:
    """Where one clip's mini-patches come from.

    ``tops``/``lefts`` are (grid, grid) pixel positions of each cell's patch in the frame as
    sampled: the native frame, or the upscaled one when ``upscale`` is not ``"none"``
    (``"fastvqa"``: torch bilinear by ``scale``; ``"resize"``: Pillow to ``scaled_hw``).
    """

    frame_hw: tuple[int, int]
    scaled_hw: tuple[int, int]
    grid: int
    patch: int
    tops: np.ndarray
    lefts: np.ndarray
    upscale: str = "none"
    scale: float = 1.0

    @property
    def size(self) -> int:
        return self.grid * self.patch

    @property
    def upscaled(self) -> bool:
        return self.upscale != "none"

    def scale_frame(self, rgb: np.ndarray) -> np.ndarray:
        """The frame the patches are cut from (the input itself unless upscaled)."""
        if self.upscale == "fastvqa":
            return fastvqa_upscale(rgb, self.scale)
        if self.upscale == "resize":
            return resize_rgb(rgb, self.scaled_hw)
        return rgb

    def extract(self, rgb: np.ndarray) -> np.ndarray:
        """The (grid*patch, grid*patch, 3) fragment frame of one HxWx3 frame."""
        if rgb.ndim != 3 or tuple(rgb.shape[:2]) != self.frame_hw:
            raise FragmentError(
                f"frame of shape {tuple(rgb.shape)} does not match the clip's frame size "
                f"{self.frame_hw}"
            )
        return self.take(self.scale_frame(rgb))

    def take(self, scaled: np.ndarray) -> np.ndarray:
        """Splice the patches of a frame already at ``scaled_hw`` (no checks, no resizing)."""
        steps = np.arange(self.patch)
        rows = (self.tops[:, :, None] + steps)[:, :, :, None]  # G, G, S, 1
        cols = (self.lefts[:, :, None] + steps)[:, :, None, :]  # G, G, 1, S
        cubes = scaled[rows, cols]  # G, G, S, S, 3
        return cubes.transpose(0, 2, 1, 3, 4).reshape(self.size, self.size, scaled.shape[2])


def _offsets(rng: np.random.Generator | None, cell: int, patch: int, grid: int) -> np.ndarray:
    if rng is None or cell <= patch:
        return np.zeros((grid, grid), dtype=np.int64)
    return rng.integers(0, cell - patch, size=(grid, grid))


def fragment_layout(
    height: int,
    width: int,
    *,
    grid: int = 7,
    patch: int = 32,
    rng: np.random.Generator | None = None,
    small_frames: str = "fastvqa",
    offsets: tuple[np.ndarray, np.ndarray] | None = None,
) -> FragmentLayout:
    """One clip's patch positions for a ``height x width`` frame (see the module docstring).

    Args:
        rng: draws the offsets inside the cells (rows, then columns); None: no offsets.
        small_frames: ``fastvqa`` or ``resize``, how frames under ``grid*patch`` are handled.
        offsets: explicit (grid, grid) row and column offsets instead of ``rng`` (e.g. the
            draws of an upstream run), each within its cell's range.
    """
    if grid < 1 or patch < 1:
        raise FragmentError(f"grid and patch must be >= 1, got grid={grid}, patch={patch}")
    if height < 1 or width < 1:
        raise FragmentError(f"cannot fragment a {width}x{height} frame")
    if small_frames not in SMALL_FRAMES:
        raise FragmentError(
            f"unknown small_frames {small_frames!r}; choose one of {', '.join(SMALL_FRAMES)}"
        )
    size = grid * patch
    if small_frames == "fastvqa":
        scale, scaled_hw = fastvqa_scaled_size(height, width, size)
        upscale = "fastvqa" if scale != 1.0 else "none"
        grid_h, grid_w = height, width  # upstream keeps the size before upscaling
        if min(height, width) < patch:
            raise FragmentError(
                f"a {width}x{height} frame is smaller than one {patch}-pixel patch, which "
                "FAST-VQA's fragment sampling cannot handle; use small_frames='resize'"
            )
    else:
        scaled_hw = upscaled_size(height, width, size)
        scale = 1.0
        upscale = "resize" if scaled_hw != (height, width) else "none"
        grid_h, grid_w = scaled_hw
    cell_h, cell_w = grid_h // grid, grid_w // grid
    base_t = np.minimum(np.arange(grid) * cell_h, grid_h - patch)[:, None]
    base_l = np.minimum(np.arange(grid) * cell_w, grid_w - patch)[None, :]
    if offsets is not None:
        off_t, off_l = (np.asarray(o, dtype=np.int64).reshape(grid, grid) for o in offsets)
        for name, off, cell in (("row", off_t, cell_h), ("column", off_l, cell_w)):
            high = max(cell - patch, 1)
            if off.min() < 0 or off.max() >= high:
                raise FragmentError(f"{name} offsets must lie in [0, {high}), got "
                                    f"[{off.min()}, {off.max()}]")
    else:
        off_t = _offsets(rng, cell_h, patch, grid)
        off_l = _offsets(rng, cell_w, patch, grid)
    tops = (base_t + off_t).astype(np.int64)
    lefts = (base_l + off_l).astype(np.int64)
    return FragmentLayout((height, width), tuple(scaled_hw), grid, patch, tops, lefts,
                          upscale, float(scale))


def clip_rng(seed: int, sampling: int, clip: int) -> np.random.Generator:
    """The generator of one sampling of one clip: reproducible, independent streams."""
    return np.random.default_rng([int(seed), int(sampling), int(clip)])


def fragment_clip(frames: np.ndarray, layout: FragmentLayout) -> np.ndarray:
    """(T, H, W, 3) frames -> (T, G*S, G*S, 3) fragments, one layout for the whole clip."""
    return np.stack([layout.extract(f) for f in frames])
