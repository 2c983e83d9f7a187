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
    clip_offset_rng,
    clip_rng,
    fastvqa_scaled_size,
    fastvqa_upscale,
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


def test_default_plan_is_fastvqa_test_sampling():
    plan = ClipPlan()  # FAST-VQA-B test time: 4 clips x 32 frames, interval 2
    idx = plan.clip_indices(240)
    assert idx.shape == (4, 32)
    assert (np.diff(idx, axis=1) % 240 == 2).all()  # consecutive clip frames are 2 apart
    # 240 // 4 = 60 frames per segment, not more than the 64-frame span: no offset
    assert list(idx[:, 0]) == [0, 60, 120, 180]
    assert list(idx[3, -4:]) == [(180 + 2 * k) % 240 for k in range(28, 32)]  # wraps


@pytest.mark.parametrize("n", [16, 50, 64, 100, 129, 240, 256, 257])
def test_segments_not_longer_than_a_span_start_at_their_first_frame(n):
    plan = ClipPlan()
    assert list(plan.clip_starts(n)) == [n // 4 * k for k in range(4)]
    idx = plan.clip_indices(n)
    assert idx.max() < n and (idx[:, 0] == plan.clip_starts(n) % n).all()


def test_fifty_frames_give_four_different_clips():
    idx = ClipPlan().clip_indices(50)  # upstream: starts 0, 12, 24, 36, looping
    assert len({tuple(row) for row in idx}) == 4
    assert list(idx[1, :3]) == [12, 14, 16] and list(idx[1, -2:]) == [(12 + 60) % 50, 24]


def test_long_segments_get_seeded_offsets_in_upstream_range():
    plan = ClipPlan(seed=3)
    n = 1000  # 250-frame segments: offset in [0, 250 - 64)
    starts = plan.clip_starts(n)
    offsets = starts - np.arange(4) * 250
    assert (offsets >= 0).all() and (offsets < 186).all() and len(set(offsets)) > 1
    expected = clip_offset_rng(3, n).integers(0, 186, size=4)  # the documented mapping
    np.testing.assert_array_equal(offsets, expected)
    np.testing.assert_array_equal(ClipPlan(seed=3).clip_starts(n), starts)  # reproducible
    assert not np.array_equal(ClipPlan(seed=4).clip_starts(n), starts)
    # every offset upstream can draw is reachable, and none beyond: 0 .. segment - span - 1
    seen = np.concatenate([ClipPlan(seed=s).clip_starts(n) - np.arange(4) * 250
                           for s in range(300)])
    assert seen.min() == 0 and seen.max() == 185


def test_centred_sampler_keeps_sample_frames_test_mode():
    plan = ClipPlan(sampler="centred")
    assert list(plan.clip_starts(240)) == [22, 66, 110, 154]  # int(k*a + a/2), a = 177/4
    assert list(plan.clip_starts(50)) == [0, 0, 0, 0]  # shorter than a span: all at 0


def test_short_video_loops_its_frames():
    plan = ClipPlan(clip_len=32, frame_interval=2, n_clips=2)
    idx = plan.clip_indices(20)  # shorter than one 64-frame span
    assert idx.shape == (2, 32)
    assert list(idx[:, 0]) == [0, 10]
    assert list(idx[0][:12]) == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 0, 2]
    assert plan.indices(SimpleNamespace(n_frames=20)) == list(range(0, 20, 2))
    tiny = ClipPlan().clip_indices(3)  # fewer frames than clips: all clips start at frame 0
    assert (tiny == tiny[0]).all() and list(tiny[0, :4]) == [0, 2, 1, 0]


def test_indices_are_the_sorted_union_and_the_plan_pickles():
    plan = ClipPlan(clip_len=8, frame_interval=3, n_clips=5)
    info = SimpleNamespace(n_frames=97)
    wanted = plan.indices(info)
    assert wanted == sorted(set(plan.clip_indices(97).ravel().tolist()))
    again = pickle.loads(pickle.dumps(plan))
    assert again == plan and again.indices(info) == wanted


@pytest.mark.parametrize("bad", [{"clip_len": 0}, {"frame_interval": 0}, {"n_clips": -1},
                                 {"sampler": "uniform"}])
def test_bad_plan_parameters_are_refused(bad):
    with pytest.raises(FragmentError, match=next(iter(bad))):
        ClipPlan(**bad)


def test_video_without_frames_is_refused():
    with pytest.raises(FragmentError, match="0 frames"):
        ClipPlan().clip_indices(0)


# ------------------------------------------------------------------ spatial geometry

def any_frame_and_grid(test):
    """Run a geometry property over drawn frame sizes, grids, patch sizes and seeds."""
    drawn = given(height=st.integers(1, 2200), width=st.integers(1, 2200),
                  grid=st.integers(1, 9), patch=st.integers(1, 48), seed=st.integers(0, 2**31))
    return settings(max_examples=60, deadline=None)(drawn(test))


@any_frame_and_grid
def test_resize_mode_gives_patches_inside_their_cells(height, width, grid, patch, seed):
    layout = fragment_layout(height, width, grid=grid, patch=patch, rng=clip_rng(seed, 0, 0),
                             small_frames="resize")
    _check_geometry(layout, height, width)
    sh, sw = layout.scaled_hw
    if min(height, width) >= grid * patch:
        assert (sh, sw) == (height, width) and not layout.upscaled
    else:  # upscaled: shorter side exactly grid*patch, aspect ratio kept to half a pixel
        k = grid * patch / min(height, width)
        assert min(sh, sw) == grid * patch
        assert abs(sh - height * k) <= 0.5 + 1e-6 and abs(sw - width * k) <= 0.5 + 1e-6


@any_frame_and_grid
def test_fastvqa_mode_grid_follows_the_original_size(height, width, grid, patch, seed):
    if min(height, width) < patch:
        with pytest.raises(FragmentError, match="small_frames='resize'"):
            fragment_layout(height, width, grid=grid, patch=patch)
        return
    layout = fragment_layout(height, width, grid=grid, patch=patch, rng=clip_rng(seed, 0, 0))
    ch, cw = height // grid, width // grid
    base_t = np.minimum(np.arange(grid) * ch, height - patch)
    base_l = np.minimum(np.arange(grid) * cw, width - patch)
    off_t = layout.tops - base_t[:, None]
    off_l = layout.lefts - base_l[None, :]
    assert off_t.min() >= 0 and off_t.max() < max(1, ch - patch)
    assert off_l.min() >= 0 and off_l.max() < max(1, cw - patch)
    # every patch lies in the original frame's extent (hence in the upscaled frame too)
    assert layout.tops.max() + patch <= height and layout.lefts.max() + patch <= width
    sh, sw = layout.scaled_hw
    if min(height, width) >= grid * patch:
        assert (sh, sw) == (height, width) and not layout.upscaled
        _check_geometry(layout, height, width)  # native frames: the same cells as 'resize'
    else:
        assert layout.upscale == "fastvqa" and min(sh / (grid * patch), sw / (grid * patch)) < 1.01
        assert min(sh, sw) in (grid * patch - 1, grid * patch)  # floor(side / ratio)


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


def test_small_frame_resize_mode_upscales_then_tiles(tiny_video):
    frame = _frames(tiny_video, [0])[0]
    assert frame.shape[:2] == (144, 192)
    layout = fragment_layout(144, 192, rng=clip_rng(0, 0, 0), small_frames="resize")
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


def test_small_frame_fastvqa_mode_cuts_the_upscaled_frame_on_the_original_grid(tiny_video):
    frame = _frames(tiny_video, [0])[0]
    layout = fragment_layout(144, 192, rng=clip_rng(0, 0, 0))  # the default mode
    scale, size = fastvqa_scaled_size(144, 192, 224)
    assert layout.upscale == "fastvqa" and layout.scale == scale == 1 / (144 / 224)
    assert size == layout.scaled_hw == (223, 298)  # floor(144 * 224/144) is 223 in doubles
    big = fastvqa_upscale(frame, scale)
    assert big.shape == (223, 298, 3)
    # cells of 144 // 7 = 20 rows and 192 // 7 = 27 columns, clamped to the original frame;
    # cells smaller than a patch: no offsets
    assert list(layout.tops[:, 0]) == [0, 20, 40, 60, 80, 100, 112]
    assert list(layout.lefts[0]) == [0, 27, 54, 81, 108, 135, 160]
    frag = layout.extract(frame)
    for i in range(7):
        for j in range(7):
            t, left = layout.tops[i, j], layout.lefts[i, j]
            np.testing.assert_array_equal(frag[32 * i : 32 * i + 32, 32 * j : 32 * j + 32],
                                          big[t : t + 32, left : left + 32])
    # only the top-left 144 x 192 of the upscaled frame is seen, as upstream does
    assert layout.tops.max() + 32 == 144 and layout.lefts.max() + 32 == 192


def test_fastvqa_upscale_is_torch_bilinear_on_the_unit_range():
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, size=(90, 160, 3), dtype=np.uint8)
    scale = 224 / 90
    ours = fastvqa_upscale(frame, scale)
    x = torch.from_numpy(frame).permute(2, 0, 1)[None].float()
    ref = F.interpolate(x / 255.0, scale_factor=scale, mode="bilinear") * 255.0
    ref = ref[0].permute(1, 2, 0).numpy()
    assert ours.shape == ref.shape == (224, 398, 3)
    np.testing.assert_array_equal(ours, np.trunc(ref).astype(np.uint8))  # truncated, not rounded
    assert (np.abs(ours.astype(float) - ref) < 1).all()


def test_explicit_offsets_are_checked():
    layout = fragment_layout(540, 960, offsets=(np.full((7, 7), 44), np.arange(49) % 105))
    assert layout.tops[0, 0] == 44 and layout.lefts[0, 1] == 137 + 1
    with pytest.raises(FragmentError, match=r"row offsets must lie in \[0, 45\)"):
        fragment_layout(540, 960, offsets=(np.full((7, 7), 45), np.zeros((7, 7))))


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
    with pytest.raises(FragmentError, match="unknown small_frames 'crop'"):
        fragment_layout(540, 960, small_frames="crop")
