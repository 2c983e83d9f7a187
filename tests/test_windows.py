"""Window placement as properties: inside the frame, evenly spread, covering when the grid can."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from vqa_pipe.pipeline.windows import WindowGrid, cut_windows

sizes = st.integers(min_value=1, max_value=4000)
grids = st.integers(min_value=1, max_value=9)


def _coverage(h: int, w: int, boxes: np.ndarray) -> np.ndarray:
    covered = np.zeros((h, w), dtype=bool)
    for top, left, bottom, right in boxes:
        covered[top:bottom, left:right] = True
    return covered


@settings(max_examples=300, deadline=None)
@given(height=sizes, width=sizes, rows=grids, cols=grids, fit=st.sampled_from(["native", "cover"]))
def test_boxes_inside_frame_and_window_sized(height, width, rows, cols, fit):
    grid = WindowGrid(rows, cols, 224, fit)
    h, w = grid.working_size(height, width)
    boxes = grid.boxes(height, width)
    assert boxes.shape == (rows * cols, 4)
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= h).all() and (boxes[:, 3] <= w).all()
    assert ((boxes[:, 2] - boxes[:, 0]) == 224).all() and ((boxes[:, 3] - boxes[:, 1]) == 224).all()
    # never shrunk below a window, never upscaled unless a side is shorter than a window
    assert h >= 224 and w >= 224
    if fit == "native" and height >= 224 and width >= 224:
        assert (h, w) == (height, width)


@settings(max_examples=120, deadline=None)
@given(height=st.integers(1, 2016), width=st.integers(1, 2016), rows=grids, cols=grids)
def test_native_windows_cover_every_pixel_when_the_grid_spans_the_frame(height, width, rows, cols):
    grid = WindowGrid(rows, cols, 224, "native")
    h, w = grid.working_size(height, width)
    if h > rows * 224 or w > cols * 224:
        return  # a grid this small cannot cover this frame at native resolution (documented)
    assert _coverage(h, w, grid.boxes(height, width)).all()


@settings(max_examples=120, deadline=None)
@given(height=st.integers(224, 3000), width=st.integers(224, 3000), rows=grids, cols=grids)
def test_cover_fit_covers_every_pixel(height, width, rows, cols):
    grid = WindowGrid(rows, cols, 224, "cover")
    h, w = grid.working_size(height, width)
    assert _coverage(h, w, grid.boxes(height, width)).all()


def test_native_large_frame_is_sampled_not_resized():
    grid = WindowGrid(3, 3, 224, "native")
    assert grid.working_size(1080, 1920) == (1080, 1920)
    boxes = grid.boxes(1080, 1920)
    # spread evenly from edge to edge: first and last windows touch the borders
    assert boxes[:, 1].min() == 0 and boxes[:, 3].max() == 1920
    assert boxes[:, 0].min() == 0 and boxes[:, 2].max() == 1080
    assert sorted(set(boxes[:, 1].tolist())) == [0, 848, 1696]


@pytest.mark.parametrize("rows,cols", [(0, 3), (3, 10)])
def test_grid_limits(rows, cols):
    with pytest.raises(ValueError, match="between 1 and 9"):
        WindowGrid(rows, cols)


def test_cut_windows_are_native_pixels():
    frame = torch.randint(0, 256, (3, 540, 960), dtype=torch.uint8)
    grid = WindowGrid(2, 3, 224)
    windows = cut_windows(frame, grid)
    assert windows.shape == (6, 3, 224, 224)
    top, left, bottom, right = grid.boxes(540, 960)[4]
    assert windows.dtype == torch.uint8
    assert torch.equal(windows[4], frame[:, top:bottom, left:right])


def test_cut_windows_upscales_a_tiny_frame():
    frame = torch.full((3, 144, 192), 200, dtype=torch.uint8)
    windows = cut_windows(frame, WindowGrid(3, 3, 224))
    assert windows.shape == (9, 3, 224, 224)
    assert (windows == 200).all()
