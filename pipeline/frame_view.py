"""CLIPVQA's full-frame CLIP input, reproduced to the pixel.

CLIPVQA (GZHU-DVL/CLIPVQA, ``dataset/build.py``, test pipeline) prepares each sampled frame with
mmaction2-style transforms: ``Resize(scale=(-1, int(256 / 224 * S)))`` (the short side to 256 for
S = 224, the long side ``int(long * 256 / short + 0.5)``, through ``mmcv.imresize``, i.e.
OpenCV's ``cv2.resize`` with ``INTER_LINEAR`` on uint8 RGB), then ``CenterCrop(S)`` (offset
``(side - S) // 2``), then ``Normalize`` with ImageNet's mean/std in 0-255 units.

:func:`resize_linear` is OpenCV's uint8 bilinear resize written out in numpy: the same
fixed-point arithmetic (11-bit coefficients, the same rounding), so the crops are identical to
upstream's, byte for byte; OpenCV itself is not a dependency. That includes OpenCV's switch to
its 2x2 box filter when both axes shrink by exactly 2.
"""

from __future__ import annotations

import numpy as np

CLIPVQA_MEAN_255 = (123.675, 116.28, 103.53)  # ImageNet, in 0-255 units (dataset/build.py)
CLIPVQA_STD_255 = (58.395, 57.12, 57.375)
CLIPVQA_MEAN = tuple(m / 255.0 for m in CLIPVQA_MEAN_255)  # the same, for pixels in [0, 1]
CLIPVQA_STD = tuple(s / 255.0 for s in CLIPVQA_STD_255)
_BITS = 11
_ONE = 1 << _BITS  # OpenCV's INTER_RESIZE_COEF_SCALE


def resize_short_side(height: int, width: int, short: int) -> tuple[int, int]:
    """(new_height, new_width) with the short side ``short`` (mmcv ``rescale_size`` rounding)."""
    if height < 1 or width < 1:
        raise ValueError(f"frame must be non-empty, got {height}x{width}")
    factor = min(float("inf") / max(height, width), short / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def _linear_taps(
    src: int, dst: int, *, clamp_weights: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """OpenCV's source indices and 11-bit weights along one axis (resize.cpp, INTER_LINEAR).

    Along x OpenCV moves border taps inside the image with weights (1, 0); along y it keeps the
    weights and clamps only the row indices (``clamp_weights=False``), which rounds differently.
    """
    scale = 1.0 / (dst / src)  # cv::resize: scale_x = 1. / inv_scale_x, inv = dsize / ssize
    f = ((np.arange(dst, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    i0 = np.floor(f).astype(np.int64)
    f = (f - i0.astype(np.float32)).astype(np.float32)
    if clamp_weights:
        low = i0 < 0
        f[low], i0[low] = 0.0, 0
        high = i0 >= src - 1
        f[high], i0[high] = 0.0, src - 1
    w0 = np.rint((np.float32(1.0) - f) * np.float32(_ONE)).astype(np.int64)
    w1 = np.rint(f * np.float32(_ONE)).astype(np.int64)
    return np.clip(i0, 0, src - 1), np.clip(i0 + 1, 0, src - 1), w0, w1


def resize_linear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)`` for uint8 images."""
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim not in (2, 3):
        raise ValueError(f"expected an HxW or HxWxC uint8 image, got {img.shape} {img.dtype}")
    src_h, src_w = img.shape[:2]
    if (src_h, src_w) == (height, width):
        return img.copy()
    if src_h == 2 * height and src_w == 2 * width:  # OpenCV switches to INTER_AREA (fast)
        s = img.astype(np.int32)
        total = s[0::2, 0::2] + s[0::2, 1::2] + s[1::2, 0::2] + s[1::2, 1::2]
        return ((total + 2) >> 2).astype(np.uint8)
    x0, x1, a0, a1 = _linear_taps(src_w, width, clamp_weights=True)
    y0, y1, b0, b1 = _linear_taps(src_h, height, clamp_weights=False)
    extra = (1,) * (img.ndim - 2)
    a0, a1 = a0.reshape(1, -1, *extra), a1.reshape(1, -1, *extra)
    rows = np.unique(np.concatenate([y0, y1]))
    src = img[rows].astype(np.int64)
    horizontal = src[:, x0] * a0 + src[:, x1] * a1  # int, 2^11 scale
    where = np.searchsorted(rows, y0), np.searchsorted(rows, y1)
    top, bottom = horizontal[where[0]], horizontal[where[1]]
    b0 = b0.reshape(-1, 1, *extra)
    b1 = b1.reshape(-1, 1, *extra)
    out = (((b0 * (top >> 4)) >> 16) + ((b1 * (bottom >> 4)) >> 16) + 2) >> 2
    return np.clip(out, 0, 255).astype(np.uint8)


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The ``size`` x ``size`` centre of an image (mmaction2 ``CenterCrop`` offsets)."""
    h, w = image.shape[:2]
    if h < size or w < size:
        raise ValueError(f"cannot crop {size}x{size} out of {h}x{w}")
    top, left = (h - size) // 2, (w - size) // 2
    return image[top : top + size, left : left + size]


def clipvqa_frame(rgb: np.ndarray, size: int = 224) -> np.ndarray:
    """CLIPVQA's crop of one HxWx3 uint8 RGB frame: short side to ``int(256/224*size)``, centre
    crop ``size`` (uint8, not yet normalised; normalise with :data:`CLIPVQA_MEAN`/``STD``)."""
    short = int(256 / 224 * size)
    h, w = resize_short_side(rgb.shape[0], rgb.shape[1], short)
    return np.ascontiguousarray(center_crop(resize_linear(rgb, h, w), size))
