"""The spatial branch on real videos: fragment clips, cached map shapes, determinism, errors.

A shrunk Video Swin (same code path, embed dim 8, one block per stage) keeps this fast; the
real swin3d_t architecture runs once, on one short clip.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle

import numpy as np
import pytest
import torch
from vqa_pipe.pipeline.branches import run_branches
from vqa_pipe.pipeline.fragments import FragmentError
from vqa_pipe.pipeline.spatial_branch import SpatialBranch
from vqa_pipe.pipeline.swin_backbone import SwinConfig, build_backbone, register_backbone
from vqa_pipe.pipeline.weights import WeightsError

MICRO = "test-swin-micro"
register_backbone(
    MICRO,
    SwinConfig(embed_dim=8, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1),
               frag_bias=(True, True, True, False), adaptive_window=True),
    exist_ok=True,
)
SHORT = dict(clip_len=8, frame_interval=2, n_clips=2)
SMALL_FRAGMENTS = dict(grid=4, patch=16)  # 64x64 fragments where geometry is not the point


def _branch(**kwargs) -> SpatialBranch:
    args = {"backbone_name": MICRO, "random_weights": True, **SHORT, **kwargs}
    return SpatialBranch(**args)


def _decoded(path, plan):
    from vqa_pipe.pipeline.decode import iter_frames, probe

    info = probe(path)
    return info, list(iter_frames(path, plan, info=info))


def _extract(branch, info, frames, key="video"):
    state = branch.start_video(key, info)
    for frame in frames:
        branch.add_frame(state, frame)
    return state, branch.finish_video(state)


SEEDS = range(6)  # the seeds the tests below use; the clip offsets depend on the seed


@pytest.fixture(scope="module")
def konvid(sample_videos):
    """The frames every seed's plan needs (each branch skips the frames it does not use)."""
    from vqa_pipe.pipeline.decode import iter_frames, probe

    path = sample_videos["konvid_10053703034.mp4"]["path"]
    info = probe(path)
    wanted = sorted({i for seed in SEEDS for i in _branch(seed=seed).plan().indices(info)})
    return info, list(iter_frames(path, wanted, info=info))


# ------------------------------------------------------------------ real videos


@pytest.mark.parametrize("name", ["konvid_10053703034.mp4", "lsvq_1724.mp4",
                                  "kinetics_FEQ-gdkTN4Q_000008_000018.mp4"])
def test_cached_arrays_have_the_documented_shapes(sample_videos, name):
    from vqa_pipe.pipeline.decode import iter_frames, probe

    path = sample_videos[name]["path"]
    branch = _branch(n_samplings=2)
    info = probe(path)
    out = run_branches(info, iter_frames(path, branch.plan(), info=info), [branch], name)
    arrays = out["spatial"]
    rows = 2 * 2  # n_clips * n_samplings
    c, t, h, w = branch.map_shape
    assert (c, t, h, w) == (64, 4, 7, 7)  # 8 * 2**3 channels, 8 frames / 2, 224 / 32
    assert arrays["clip_maps"].shape == (rows, c, t, h, w)
    assert arrays["clip_maps"].dtype == np.float16
    assert arrays["clip_pooled"].shape == (rows, c) and arrays["clip_pooled"].dtype == np.float32
    assert np.isfinite(arrays["clip_pooled"]).all()
    # the pooled vector is the global average of the map
    np.testing.assert_allclose(
        arrays["clip_maps"].astype(np.float32).mean(axis=(2, 3, 4)), arrays["clip_pooled"],
        atol=2e-3,
    )
    assert branch.bytes_per_video() == {"clip_pooled": rows * c * 4,
                                        "clip_maps": arrays["clip_maps"].nbytes}


def test_fragment_clips_are_native_patches_at_fixed_positions(konvid):
    info, frames = konvid
    branch = _branch(n_samplings=2, seed=5)
    state, _ = _extract(branch, info, frames)
    clips = branch.fragments(state)
    assert clips.shape == (2, 2, 8, 224, 224, 3)
    by_index = {f.index: f.rgb for f in frames}
    layouts = branch.layouts_for(info.height, info.width)
    clip_idx = branch.plan().clip_indices(info.n_frames)
    for s in range(2):
        for c in range(2):
            lay = layouts[s][c]
            for t in (0, 7):
                rgb = by_index[int(clip_idx[c, t])]
                for i, j in ((0, 0), (3, 4), (6, 6)):
                    top, left = lay.tops[i, j], lay.lefts[i, j]
                    np.testing.assert_array_equal(
                        clips[s, c, t, 32 * i : 32 * i + 32, 32 * j : 32 * j + 32],
                        rgb[top : top + 32, left : left + 32],
                    )
    # the two samplings of a clip look at different places
    assert not np.array_equal(clips[0, 0], clips[1, 0])


def test_same_seed_same_features_other_seed_other_features(konvid):
    info, frames = konvid
    _, a = _extract(_branch(seed=1, **SMALL_FRAGMENTS), info, frames)
    _, b = _extract(_branch(seed=1, **SMALL_FRAGMENTS), info, frames)
    _, c = _extract(_branch(seed=2, **SMALL_FRAGMENTS), info, frames)
    np.testing.assert_array_equal(a["clip_pooled"], b["clip_pooled"])
    np.testing.assert_array_equal(a["clip_maps"], b["clip_maps"])
    assert not np.allclose(a["clip_pooled"], c["clip_pooled"])


def test_extra_samplings_keep_the_first_rows(konvid):
    info, frames = konvid
    _, one = _extract(_branch(seed=4, **SMALL_FRAGMENTS), info, frames)
    _, three = _extract(_branch(seed=4, n_samplings=3, **SMALL_FRAGMENTS), info, frames)
    assert three["clip_pooled"].shape[0] == 3 * 2
    # sampling-major rows: sampling 0 is the single-sampling result
    np.testing.assert_allclose(three["clip_pooled"][:2], one["clip_pooled"], rtol=1e-5, atol=1e-6)
    assert not np.allclose(three["clip_pooled"][2:4], one["clip_pooled"])


def test_batch_size_does_not_change_results(konvid):
    info, frames = konvid
    _, one = _extract(_branch(batch_clips=1, n_samplings=2, **SMALL_FRAGMENTS), info, frames)
    _, four = _extract(_branch(batch_clips=3, n_samplings=2, **SMALL_FRAGMENTS), info, frames)
    np.testing.assert_allclose(one["clip_pooled"], four["clip_pooled"], rtol=1e-4, atol=1e-5)


def test_pooled_only_when_maps_are_not_wanted(konvid):
    info, frames = konvid
    branch = _branch(store_maps=False, **SMALL_FRAGMENTS)
    _, out = _extract(branch, info, frames)
    assert set(out) == {"clip_pooled"}
    assert branch.config()["store_maps"] is False and "clip_maps" not in branch.bytes_per_video()


def test_real_swin3d_t_on_one_short_clip(portrait_video):
    branch = SpatialBranch("swin3d_t", random_weights=True, clip_len=4, n_clips=1)
    info, frames = _decoded(portrait_video, branch.plan())
    _, out = _extract(branch, info, frames, "lsvq_1724")
    assert out["clip_maps"].shape == (1, 768, 2, 7, 7)
    assert out["clip_pooled"].shape == (1, 768)
    assert np.isfinite(out["clip_maps"]).all()


def test_default_branch_sizes():
    branch = SpatialBranch(random_weights=True)  # FAST-VQA-B: 4 clips of 32 frames, 7x7x32
    assert branch.map_shape == (768, 16, 7, 7)
    assert branch.bytes_per_video() == {"clip_pooled": 4 * 768 * 4,
                                        "clip_maps": 4 * 768 * 16 * 7 * 7 * 2}


# ------------------------------------------------------------------ short and broken input


def test_short_video_loops_and_missing_tail_is_filled(sample_videos, caplog):
    from vqa_pipe.pipeline.decode import VideoInfo

    path = sample_videos["kinetics_FEQ-gdkTN4Q_000008_000018.mp4"]["path"]
    branch = _branch(clip_len=16, frame_interval=4, n_clips=3)  # span 64 frames
    info, frames = _decoded(path, branch.plan())
    # pretend the container claimed 20 more frames than the decoder delivers
    liar = VideoInfo(info.width, info.height, info.fps, info.n_frames + 20, info.duration_s)
    wanted = branch.plan().indices(liar)
    assert max(wanted) >= info.n_frames
    kept = [f for f in frames if f.index in set(wanted)]
    with caplog.at_level(logging.WARNING):
        state, out = _extract(branch, liar, kept, "kinetics_tiny")
    assert out["clip_pooled"].shape == (3, 64)
    assert "kinetics_tiny" in caplog.text and "not decoded" in caplog.text
    clips = branch.fragments(state)
    assert clips[:, -1, -1].any()  # the missing tail holds the last decoded frame


def test_video_shorter_than_a_clip(tiny_video):
    from vqa_pipe.pipeline.decode import VideoInfo, iter_frames, probe

    info = probe(tiny_video)
    short = VideoInfo(info.width, info.height, info.fps, 5, 0.5)
    branch = _branch()
    assert branch.plan().indices(short) == [0, 1, 2, 3, 4]
    frames = list(iter_frames(tiny_video, [0, 1, 2, 3, 4], info=info))
    state, out = _extract(branch, short, frames)
    clips = branch.fragments(state)
    np.testing.assert_array_equal(clips[0, 0, 0], clips[0, 0, 5])  # frame 0 again at 2*5 % 5
    assert out["clip_pooled"].shape == (2, 64)


def test_no_frames_is_an_error_naming_the_video(konvid):
    info, _ = konvid
    branch = _branch()
    state = branch.start_video("konvid_10053703034", info)
    with pytest.raises(FragmentError, match="konvid_10053703034: no frames"):
        branch.finish_video(state)


def test_frame_size_change_is_an_error_naming_the_frame(konvid):
    info, frames = konvid
    branch = _branch()
    state = branch.start_video("vid7", info)
    branch.add_frame(state, frames[0])
    odd = type(frames[1])(frames[1].index, frames[1].time_s, frames[1].rgb[:200])
    with pytest.raises(FragmentError, match=f"vid7: frame {frames[1].index}"):
        branch.add_frame(state, odd)


def test_video_without_frames_in_header_is_refused():
    from vqa_pipe.pipeline.decode import VideoInfo

    with pytest.raises(FragmentError, match="empty.mp4"):
        _branch().start_video("empty.mp4", VideoInfo(320, 240, 25.0, 0, 0.0))


# ------------------------------------------------------------------ config and weights


def test_config_records_every_parameter_and_random_weights():
    branch = _branch(n_samplings=2, seed=3)
    config = branch.config()
    assert json.loads(json.dumps(config)) == config
    assert config["weights_identity"] == "random" and config["random_weights"] is True
    assert branch.random_weights
    for key, value in {"model": MICRO, "grid": 7, "patch": 32, "clip_len": 8,
                       "frame_interval": 2, "n_clips": 2, "n_samplings": 2, "seed": 3,
                       "store_maps": True, "map_shape": [64, 4, 7, 7]}.items():
        assert config[key] == value, key
    assert config["architecture"]["frag_bias"] == [True, True, True, False]


def test_weights_file_identity_is_name_and_sha256(tmp_path):
    model = build_backbone(MICRO).init_random(11)
    path = tmp_path / "micro_backbone.pth"
    torch.save(model.state_dict(), path)
    branch = SpatialBranch(MICRO, weights=path, **SHORT)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert branch.weights_identity == f"micro_backbone.pth sha256:{digest}"
    assert branch.config()["weights"]["sha256"] == digest and not branch.random_weights
    loaded = branch.model.state_dict()["layers.0.blocks.0.attn.qkv.weight"]
    assert torch.equal(loaded, model.state_dict()["layers.0.blocks.0.attn.qkv.weight"])


def test_missing_weights_are_refused_clearly(tmp_path):
    with pytest.raises(WeightsError, match="--random-weights"):
        SpatialBranch(MICRO, **SHORT)
    missing = tmp_path / "FAST_VQA_B_1_4.pth"
    with pytest.raises(WeightsError, match="not found") as err:
        SpatialBranch(MICRO, weights=missing, **SHORT)
    assert str(missing) in str(err.value)


def test_plan_pickles_and_covers_every_clip_frame(konvid):
    info, _ = konvid
    plan = pickle.loads(pickle.dumps(_branch().plan()))
    assert set(plan.indices(info)) == set(plan.clip_indices(info.n_frames).ravel().tolist())


def test_store_accepts_the_results_and_refuses_another_config(tmp_path, konvid):
    from vqa_pipe.pipeline.store import FeatureStore, StoreError

    info, frames = konvid
    branch = _branch()
    _, arrays = _extract(branch, info, frames)
    store = FeatureStore.create_or_open(tmp_path / "s.zarr", ["a", "b"], part_size=2)
    store.ensure_branch("spatial", branch.config())
    store.write_part("spatial", 0, {"a": arrays, "b": "decode failed"})
    back = store.read("spatial", "clip_maps")
    np.testing.assert_array_equal(back["a"], arrays["clip_maps"])
    with pytest.raises(StoreError, match="n_clips"):
        store.ensure_branch("spatial", _branch(n_clips=3).config())


# ------------------------------------------------------------------ FAST-VQA sampling options


def test_small_frames_follow_the_chosen_mode(tiny_video):
    from vqa_pipe.pipeline.decode import probe

    info = probe(tiny_video)  # 192x144: smaller than 224 on both sides
    for mode in ("fastvqa", "resize"):
        branch = _branch(small_frames=mode, seed=2)
        assert branch.config()["small_frames"] == mode
        _, frames = _decoded(tiny_video, branch.plan())
        state, _ = _extract(branch, info, frames)
        clips = branch.fragments(state)
        layout = branch.layouts_for(info.height, info.width)[0][1]
        assert layout.upscale == mode
        first = int(branch.plan().clip_indices(info.n_frames)[1, 0])
        rgb = next(f.rgb for f in frames if f.index == first)
        np.testing.assert_array_equal(clips[0, 1, 0], layout.extract(rgb))
    assert _branch().config()["small_frames"] == "fastvqa"  # the default


def test_frame_under_one_patch_is_refused_naming_the_video_and_the_option():
    from vqa_pipe.pipeline.decode import Frame, VideoInfo

    branch = _branch()
    info = VideoInfo(48, 24, 25.0, 40, 1.6)
    state = branch.start_video("sliver.mp4", info)
    with pytest.raises(FragmentError, match="sliver.mp4: a 48x24 frame.*small_frames='resize'"):
        branch.add_frame(state, Frame(0, 0.0, np.zeros((24, 48, 3), np.uint8)))
    resized = _branch(small_frames="resize")
    state = resized.start_video("sliver.mp4", info)
    resized.add_frame(state, Frame(0, 0.0, np.zeros((24, 48, 3), np.uint8)))  # accepted


def test_clip_sampler_and_its_seed_choose_the_frames():
    from vqa_pipe.pipeline.decode import VideoInfo

    info = VideoInfo(640, 360, 25.0, 1000, 40.0)
    default = _branch(clip_len=32, frame_interval=2, n_clips=4, seed=0)
    assert default.config()["clip_sampler"] == "fastvqa"
    starts = default.plan().clip_starts(1000)
    assert (starts - 250 * np.arange(4) >= 0).all() and (starts - 250 * np.arange(4) < 186).all()
    other_seed = _branch(clip_len=32, frame_interval=2, n_clips=4, seed=1).plan()
    assert not np.array_equal(other_seed.clip_starts(1000), starts)
    centred = _branch(clip_len=32, frame_interval=2, n_clips=4, clip_sampler="centred")
    assert list(centred.plan().clip_starts(240)) == [22, 66, 110, 154]
    assert centred.config()["clip_sampler"] == "centred"
    assert default.plan().indices(info) != centred.plan().indices(info)


@pytest.mark.parametrize("bad", [{"clip_sampler": "uniform"}, {"small_frames": "crop"}])
def test_bad_sampling_options_are_refused(bad):
    with pytest.raises(FragmentError, match=repr(next(iter(bad.values())))):
        _branch(**bad)


def test_clips_of_several_videos_share_a_backbone_batch(konvid):
    """Two videos in flight: ready clips of both fill one backbone batch; each video gets its
    own outputs, equal to extracting it alone."""
    info, frames = konvid
    alone = _extract(_branch(seed=0, batch_clips=4), info, frames)[1]
    branch = _branch(seed=0, batch_clips=4)  # 2 clips per video: one batch holds two videos
    batches = []
    forward = branch._forward
    branch._forward = lambda clips: batches.append(len(clips)) or forward(clips)
    states = [branch.start_video(k, info) for k in "ab"]
    for frame in frames:  # interleaved, as two decoders deliver them
        for state in states:
            branch.add_frame(state, frame)
    outs = [branch.finish_video(state) for state in states]
    assert batches == [4]  # both videos' 2 clips in one call, none left for the second end
    for out in outs:
        for name, value in alone.items():
            np.testing.assert_allclose(out[name], value, atol=2e-3, err_msg=name)
