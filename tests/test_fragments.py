"""Fragment sampling (FAST-VQA St-GMS): clip plans and patch geometry, on real frames."""

from __future__ import annotations

import pickle
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from vqa_pipe.pipeline.fragments import (
    ClipPlan,
    FragmentError,
    clip_rng,
    fragment_clip,
    fragment_layout,
    resize_rgb,
    upscaled_size,
)


def _frames(path, indices):
    from vqa_pipe.pipeline.decode import iter_frames

    return [f.rgb for f in iter_frames(path, indices)]


def _check_geometry(layout, height, width):
    """Every patch lies inside the frame and inside its own grid cell."""
    g, s = layout.grid, layout.patch
    sh, sw = layout.scaled_hw
    ch, cw = sh // g, sw // g
    for i in range(g):
        for j in range(g):
            top, left = int(layout.tops[i, j]), int(layout.lefts[i, j])
            assert i * ch <= top and top + s <= (i + 1) * ch, (i, j, top, ch)
            assert j * cw <= left and left + s <= (j + 1) * cw, (i, j, left, cw)
    assert sh >= g * s and sw >= g * s


# ------------------------------------------------------------------ temporal plan


def test_default_plan_spreads_four_clips_of_32_frames_two_apart():
    plan = ClipPlan()  # FAST-VQA-B test time: 4 clips x 32 frames, interval 2
    idx = plan.clip_indices(240)
    assert idx.shape == (4, 32)
    assert (np.diff(idx, axis=1) == 2).all()  # consecutive clip frames are 2 apart
    starts = idx[:, 0]
    assert (np.diff(starts) > 0).all() and idx.max() < 240
    # evenly spread: the same gap between clip starts, margins at both ends alike
    gaps = np.diff(starts)
    assert gaps.max() - gaps.min() <= 1
    assert abs(int(starts[0]) - (240 - 1 - int(idx[-1, -1]))) <= 2
    assert list(starts) == [22, 66, 110, 154]  # FAST-VQA's int(k*a + a/2), a = 177/4


def test_short_video_loops_its_frames():
    plan = ClipPlan(clip_len=32, frame_interval=2, n_clips=2)
    idx = plan.clip_indices(20)  # shorter than one 64-frame span
    assert idx.shape == (2, 32)
    assert (idx[0] == idx[1]).all()  # every clip starts at frame 0
    assert list(idx[0][:12]) == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 0, 2]
    assert plan.indices(SimpleNamespace(n_frames=20)) == list(range(0, 20, 2))


def test_indices_are_the_sorted_union_and_the_plan_pickles():
    plan = ClipPlan(clip_len=8, frame_interval=3, n_clips=5)
    info = SimpleNamespace(n_frames=97)
    wanted = plan.indices(info)
    assert wanted == sorted(set(plan.clip_indices(97).ravel().tolist()))
    again = pickle.loads(pickle.dumps(plan))
    assert again == plan and again.indices(info) == wanted


@pytest.mark.parametrize("bad", [{"clip_len": 0}, {"frame_interval": 0}, {"n_clips": -1}])
def test_bad_plan_parameters_are_refused(bad):
    with pytest.raises(FragmentError, match=next(iter(bad))):
        ClipPlan(**bad)


def test_video_without_frames_is_refused():
    with pytest.raises(FragmentError, match="0 frames"):
        ClipPlan().clip_indices(0)


# ------------------------------------------------------------------ spatial geometry


@settings(max_examples=60, deadline=None)
@given(
    height=st.integers(1, 2200),
    width=st.integers(1, 2200),
    grid=st.integers(1, 9),
    patch=st.integers(1, 48),
    seed=st.integers(0, 2**31),
)
def test_any_frame_size_gives_patches_inside_their_cells(height, width, grid, patch, seed):
    layout = fragment_layout(height, width, grid=grid, patch=patch, rng=clip_rng(seed, 0, 0))
    _check_geometry(layout, height, width)
    sh, sw = layout.scaled_hw
    if min(height, width) >= grid * patch:
        assert (sh, sw) == (height, width) and not layout.upscaled
    else:  # upscaled: shorter side exactly grid*patch, aspect ratio kept to half a pixel
        k = grid * patch / min(height, width)
        assert min(sh, sw) == grid * patch
        assert abs(sh - height * k) <= 0.5 + 1e-6 and abs(sw - width * k) <= 0.5 + 1e-6


@pytest.mark.parametrize(
    "name",
    ["konvid_10053703034.mp4", "lsvq_1724.mp4", "kinetics_HyZMiWeJyMw_000072_000082.mp4"],
)
def test_patches_are_native_resolution_crops(sample_videos, name):
    path = sample_videos[name]["path"]
    frame = _frames(path, [5])[0]
    height, width = frame.shape[:2]
    layout = fragment_layout(height, width, rng=clip_rng(0, 0, 0))
    assert not layout.upscaled
    _check_geometry(layout, height, width)
    frag = layout.extract(frame)
    assert frag.shape == (224, 224, 3) and frag.dtype == np.uint8
    for i in range(7):
        for j in range(7):
            t, left = layout.tops[i, j], layout.lefts[i, j]
            np.testing.assert_array_equal(
                frag[32 * i : 32 * i + 32, 32 * j : 32 * j + 32],
                frame[t : t + 32, left : left + 32],
            )


def test_portrait_cells_follow_the_tall_frame(portrait_video):
    frame = _frames(portrait_video, [0])[0]
    assert frame.shape[:2] == (720, 406)
    layout = fragment_layout(720, 406, rng=clip_rng(3, 0, 0))
    # cells are 720 // 7 = 102 rows by 406 // 7 = 58 columns: rows spread further than columns
    assert layout.tops[-1].min() >= 6 * 102 and layout.lefts[:, -1].min() >= 6 * 58
    assert layout.tops.max() + 32 <= 714 and layout.lefts.max() + 32 <= 406
    assert layout.extract(frame).shape == (224, 224, 3)


def test_small_frame_is_upscaled_then_tiled(tiny_video):
    frame = _frames(tiny_video, [0])[0]
    assert frame.shape[:2] == (144, 192)
    layout = fragment_layout(144, 192, rng=clip_rng(0, 0, 0))
    assert layout.upscaled and layout.scaled_hw == upscaled_size(144, 192, 224) == (224, 299)
    big = resize_rgb(frame, layout.scaled_hw)
    frag = layout.extract(frame)
    # 224 rows / 7 cells = 32: the patches tile the upscaled height exactly, row for row
    assert (layout.tops == 32 * np.arange(7)[:, None]).all()
    for i in range(7):
        for j in range(7):
            left = layout.lefts[i, j]
            np.testing.assert_array_equal(
                frag[32 * i : 32 * i + 32, 32 * j : 32 * j + 32],
                big[32 * i : 32 * i + 32, left : left + 32],
            )
    # upscaling is a plain bilinear resize: the mean colour is kept
    assert np.abs(big.reshape(-1, 3).mean(0) - frame.reshape(-1, 3).mean(0)).max() < 2.0


def test_same_positions_in_every_frame_of_a_clip(sample_videos):
    path = sample_videos["konvid_5115335471.mp4"]["path"]
    frames = np.stack(_frames(path, [10, 12, 14, 16]))
    layout = fragment_layout(*frames.shape[1:3], rng=clip_rng(1, 0, 2))
    clip = fragment_clip(frames, layout)
    assert clip.shape == (4, 224, 224, 3)
    for t in range(4):
        i, j = 3, 5
        top, left = layout.tops[i, j], layout.lefts[i, j]
        np.testing.assert_array_equal(
            clip[t, 96:128, 160:192], frames[t, top : top + 32, left : left + 32]
        )
    # the content moves between frames while the mini-cube stays where it was
    assert not np.array_equal(clip[0], clip[-1])


def test_seeds_reproduce_and_differ():
    a = fragment_layout(540, 960, rng=clip_rng(7, 0, 1))
    b = fragment_layout(540, 960, rng=clip_rng(7, 0, 1))
    np.testing.assert_array_equal(a.tops, b.tops)
    np.testing.assert_array_equal(a.lefts, b.lefts)
    for other in (clip_rng(8, 0, 1), clip_rng(7, 1, 1), clip_rng(7, 0, 2)):
        c = fragment_layout(540, 960, rng=other)
        assert not (np.array_equal(a.tops, c.tops) and np.array_equal(a.lefts, c.lefts))


def test_without_rng_patches_sit_at_cell_corners():
    layout = fragment_layout(700, 1400, grid=7, patch=32)
    assert list(layout.tops[:, 0]) == [100 * i for i in range(7)]
    assert list(layout.lefts[0]) == [200 * j for j in range(7)]


def test_wrong_frame_size_is_refused():
    layout = fragment_layout(540, 960, rng=clip_rng(0, 0, 0))
    with pytest.raises(FragmentError, match="does not match"):
        layout.extract(np.zeros((720, 1280, 3), np.uint8))


@pytest.mark.parametrize("bad", [{"grid": 0}, {"patch": 0}])
def test_bad_fragment_parameters_are_refused(bad):
    with pytest.raises(FragmentError, match="must be >= 1"):
        fragment_layout(540, 960, **bad)
