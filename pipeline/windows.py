"""Window grids over a frame at native resolution (CLiF-VQA eqs. 1-2).

An m×n grid of ``size``×``size`` windows is spread evenly from edge to edge: along an axis of
length L with k windows, window j starts at ``round(j * (L - size) / (k - 1))`` (a single window
is centred). Neighbouring windows overlap when ``k * size > L``; the windows cover every pixel
exactly when ``L <= k * size`` on both axes. Frames smaller than one window are upscaled first
(aspect ratio kept) so that every window lies inside the frame.

``fit="cover"`` additionally downscales frames too large for the grid just enough that the
windows cover them; the default ``fit="native"`` never downscales and samples large frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FITS = ("native", "cover")
MAX_GRID = 9


@dataclass(frozen=True)
class WindowGrid:
    """m rows × n columns of square windows of ``size`` pixels."""

    rows: int = 3
    cols: int = 3
    size: int = 224
    fit: str = "native"

    def __post_init__(self) -> None:
        for name, k in (("rows", self.rows), ("cols", self.cols)):
            if not 1 <= k <= MAX_GRID:
                raise ValueError(f"grid {name} must be between 1 and {MAX_GRID}, got {k}")
        if self.size < 1:
            raise ValueError(f"window size must be positive, got {self.size}")
        if self.fit not in FITS:
            raise ValueError(f"window fit must be one of {FITS}, got {self.fit!r}")

    @property
    def n_windows(self) -> int:
        return self.rows * self.cols

    def working_size(self, height: int, width: int) -> tuple[int, int]:
        """Size (H, W) the frame is resized to before cutting windows."""
        if height < 1 or width < 1:
            raise ValueError(f"frame must be non-empty, got {height}x{width}")
        scale = max(1.0, self.size / height, self.size / width)
        if self.fit == "cover" and scale == 1.0:
            scale = min(1.0, self.rows * self.size / height, self.cols * self.size / width)
        return (
            max(self.size, round(height * scale)),
            max(self.size, round(width * scale)),
        )

    def boxes(self, height: int, width: int) -> np.ndarray:
        """Window boxes ``(top, left, bottom, right)`` in the working frame, row-major, (m*n, 4)."""
        h, w = self.working_size(height, width)
        tops = _starts(h, self.rows, self.size)
        lefts = _starts(w, self.cols, self.size)
        out = np.array(
            [(t, x, t + self.size, x + self.size) for t in tops for x in lefts], dtype=np.int64
        )
        return out


def _starts(length: int, k: int, size: int) -> list[int]:
    if k == 1:
        return [(length - size) // 2]
    return [round(j * (length - size) / (k - 1)) for j in range(k)]


def cut_windows(frame: torch.Tensor, grid: WindowGrid) -> torch.Tensor:  # noqa: F821
    """Cut the grid's windows out of one frame.

    ``frame`` is a (3, H, W) uint8 tensor; returns (m*n, 3, size, size) uint8 windows. Pixels
    are copied as they are unless the frame has to be resized first (bicubic, rounded).
    """
    import torch

    if frame.ndim != 3 or frame.shape[0] != 3 or frame.dtype != torch.uint8:
        raise ValueError(
            f"expected a (3, H, W) uint8 frame, got {tuple(frame.shape)} {frame.dtype}"
        )
    views = window_views(frame.permute(1, 2, 0), grid)
    return torch.stack([v.permute(2, 0, 1) for v in views])


def window_views(frame: torch.Tensor, grid: WindowGrid) -> list:  # noqa: F821
    """The grid's windows of one (H, W, 3) uint8 frame (as decoded) as m*n (size, size, 3)
    views: no copy unless the frame has to be resized first (bicubic, rounded). The extractor
    copies them once, straight into the model's input."""
    import torch
    import torch.nn.functional as F

    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != torch.uint8:
        raise ValueError(
            f"expected an (H, W, 3) uint8 frame, got {tuple(frame.shape)} {frame.dtype}"
        )
    height, width, _ = frame.shape
    h, w = grid.working_size(height, width)
    x = frame
    if (h, w) != (height, width):
        x = F.interpolate(
            frame.permute(2, 0, 1)[None].float(), size=(h, w), mode="bicubic",
            align_corners=False, antialias=h < height,
        )[0]
        x = x.round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0)
    boxes = grid.boxes(height, width)
    return [x[t:b, left:r] for t, left, b, r in boxes.tolist()]
