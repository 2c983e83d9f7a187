"""The semantic branch against an independent CLIP computation, and its frame view end to end."""

from __future__ import annotations

import os
import zlib

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from vqa_pipe.pipeline.clip_model import TINY_MODEL, _open_clip, load_clip
from vqa_pipe.pipeline.decode import VideoInfo, probe
from vqa_pipe.pipeline.frame_sampling import FrameSampling, TSNSampling
from vqa_pipe.pipeline.manifest import ManifestRow, write_manifest
from vqa_pipe.pipeline.prompts import load_prompts
from vqa_pipe.pipeline.semantic_branch import SemanticBranch, SemanticConfigError
from vqa_pipe.pipeline.store import FeatureStore
from vqa_pipe.stages.extract import run_extract

TINY_QG = "vqa-tiny-clip-quickgelu"
FP16_ROUNDING = 3e-4  # half an fp16 ulp just below 1 is 2.4e-4


def _seeded_weights(name: str, path, seed: int = 7) -> None:
    """Random weights strong enough that GELU and QuickGELU give visibly different outputs."""
    model = _open_clip().create_model(name, load_weights=False)
    state = {}
    for key, value in sorted(model.state_dict().items()):
        g = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(key.encode()))
        noise = torch.randn(value.shape, generator=g)
        if key.endswith(".weight") and ".ln" in f".{key.split('.')[-2]}"[:3]:
            state[key] = 1.0 + 0.1 * noise
        elif key == "logit_scale":
            state[key] = torch.tensor(float(np.log(100.0)))
        else:
            state[key] = 0.2 * noise
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))


class _Frame:
    def __init__(self, index, rgb):
        self.index, self.time_s, self.rgb = index, index / 10.0, rgb


@pytest.mark.parametrize("name,other", [(TINY_MODEL, TINY_QG), (TINY_QG, TINY_MODEL)])
def test_window_embeddings_equal_an_independent_open_clip_computation(tmp_path, name, other):
    import open_clip

    weights = tmp_path / "weights.safetensors"
    _seeded_weights(name, weights)
    clip = load_clip(name, str(weights))
    assert clip.quick_gelu == name.endswith("-quickgelu")
    branch = SemanticBranch(clip, load_prompts(), FrameSampling(None, None), grid=(2, 3))
    rng = np.random.default_rng(11)
    frames = [rng.integers(0, 256, (300, 500, 3), dtype=np.uint8) for _ in range(2)]
    state = branch.start_video("v", VideoInfo(500, 300, 10.0, 2, 0.2))
    for i, rgb in enumerate(frames):
        branch.add_frame(state, _Frame(i, rgb))
    out = branch.finish_video(state)
    got = out["window_embeddings"].astype(np.float32)
    assert got.shape == (2, 6, 64) and out["window_embeddings"].dtype == np.float16

    # independently: windows cut by hand (2 rows over 300 px: tops 0 and 76; 3 columns over
    # 500 px: lefts 0, 138, 276), the model's mean/std, open_clip's own model and loader
    def reference(model_name):
        model = open_clip.create_model(model_name, pretrained=str(weights)).eval()
        pre = model.visual.preprocess_cfg
        mean = torch.tensor(pre["mean"]).view(1, 3, 1, 1)
        std = torch.tensor(pre["std"]).view(1, 3, 1, 1)
        crops = [f[t : t + 224, x : x + 224] for f in frames for t in (0, 76)
                 for x in (0, 138, 276)]
        x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255.0
        with torch.no_grad():
            emb = model.encode_image((x - mean) / std)
        return torch.nn.functional.normalize(emb, dim=-1).numpy().reshape(2, 6, -1)

    np.testing.assert_allclose(got, reference(name), rtol=0, atol=FP16_ROUNDING)
    # the other activation on the same file is well outside that tolerance (measured: 10x)
    assert np.abs(got - reference(other)).max() > 5 * FP16_ROUNDING


def test_views_and_options_are_checked():
    clip = load_clip(TINY_MODEL, random_weights=True)
    prompts = load_prompts()
    with pytest.raises(SemanticConfigError, match="non-empty selection"):
        SemanticBranch(clip, prompts, FrameSampling(), views=())
    with pytest.raises(SemanticConfigError, match="non-empty selection"):
        SemanticBranch(clip, prompts, FrameSampling(), views=("frames",))
    with pytest.raises(SemanticConfigError, match="add the 'frame' view"):
        SemanticBranch(clip, prompts, FrameSampling(), clip_tokens=True)
    with pytest.raises(SemanticConfigError, match="frame_norm"):
        SemanticBranch(clip, prompts, FrameSampling(), views=("frame",), frame_norm="imagenet")
    branch = SemanticBranch(clip, prompts, FrameSampling())
    assert branch.softmax == "all" and branch.config()["softmax"] == "all"
    assert "frame_view" not in branch.config() and set(branch.branch_arrays()) == {
        "text_embeddings"}
    cfg = branch.config()
    for key in ("quick_gelu", "mean", "std", "image_size"):
        assert key in cfg


def test_tsn_plan_with_repeated_frames_gives_t_rows():
    clip = load_clip(TINY_MODEL, random_weights=True)
    branch = SemanticBranch(clip, load_prompts(), TSNSampling(8), views=("windows", "frame"),
                            clip_tokens=True, grid=(1, 1))
    info = VideoInfo(256, 240, 10.0, 3, 0.3)
    planned = TSNSampling(8).indices(info)
    assert planned == [0, 0, 0, 0, 1, 1, 1, 1]  # CLIPVQA's sampler on a 3-frame video
    state = branch.start_video("short", info)
    rng = np.random.default_rng(5)
    for i in sorted(set(planned)):
        branch.add_frame(state, _Frame(i, rng.integers(0, 256, (240, 256, 3), dtype=np.uint8)))
    out = branch.finish_video(state)
    for name in ("frame_times", "frame_scores", "window_embeddings", "frame_embeddings",
                 "frame_tokens"):
        assert out[name].shape[0] == 8, name
    first = planned.index(planned[-1])
    np.testing.assert_array_equal(out["frame_embeddings"][first], out["frame_embeddings"][-1])
    assert out["frame_tokens"].shape == (8, 49, 64) and out["frame_tokens"].dtype == np.float16
    assert out["frame_embeddings"].shape == (8, 64)
    assert out["frame_embeddings"].dtype == np.float32
    # a planned frame that never arrives is an error naming it
    state = branch.start_video("gap", info)
    branch.add_frame(state, _Frame(0, rng.integers(0, 256, (240, 256, 3), dtype=np.uint8)))
    with pytest.raises(ValueError, match=r"gap: frames \[1\] were planned but not decoded"):
        branch.finish_video(state)


def test_frame_view_config_and_level_texts():
    clip = load_clip(TINY_MODEL, random_weights=True)
    branch = SemanticBranch(clip, load_prompts(), TSNSampling(32), views=("frame",))
    cfg = branch.config()
    assert cfg["views"] == ["frame"] and cfg["sampling"] == {"kind": "tsn", "segments": 32}
    fv = cfg["frame_view"]
    assert fv["resize_short_side"] == 256 and fv["center_crop"] == 224
    assert fv["normalization"] == "clipvqa" and fv["tokens"] is False
    np.testing.assert_allclose(fv["mean"], [0.485, 0.456, 0.406], atol=1e-9)
    assert fv["level_labels"] == ["bad", "poor", "fair", "good", "great", "excellent"]
    arrays = branch.branch_arrays()
    level = arrays["level_text_embeddings"]
    assert level.shape == (6, 64) and level.dtype == np.float32
    again = clip.encode_texts(fv["level_labels"], normalize=False).numpy()
    np.testing.assert_allclose(level, again, rtol=1e-6)
    assert not np.allclose(np.linalg.norm(level, axis=1), 1.0)  # not L2-normalised
    assert "grid" not in cfg and "feature_names" not in cfg


def test_all_frames_and_the_frame_view_end_to_end(tmp_path, tiny_video):
    """fps=None (every frame) through decoding and the store, both views in one pass."""
    link = tmp_path / "tiny.mp4"
    os.symlink(tiny_video, link)
    manifest = write_manifest([ManifestRow("tiny", link, None, None)], tmp_path / "m.csv")
    clip = load_clip(TINY_MODEL, random_weights=True)
    branch = SemanticBranch(clip, load_prompts(), FrameSampling(None, None),
                            views=("windows", "frame"), clip_tokens=True, grid=(1, 1))
    summary = run_extract(manifest, tmp_path / "s.zarr", [branch], part_size=1, progress=False)
    assert summary.done == ["tiny"], summary.failed
    store = FeatureStore.open(tmp_path / "s.zarr")
    n = probe(tiny_video).n_frames
    arrays = store.arrays("semantic")
    expected = {
        "frame_times": ((n,), "float32"),
        "frame_scores": ((n, 2 * load_prompts().r), "float32"),
        "window_embeddings": ((n, 1, 64), "float16"),
        "frame_embeddings": ((n, 64), "float32"),
        "frame_tokens": ((n, 49, 64), "float16"),
    }
    for name, (shape, dtype) in expected.items():
        value = store.read("semantic", name, ["tiny"])["tiny"]
        assert value.shape == shape and str(value.dtype) == dtype, name
    assert set(arrays) >= set(expected)
    cfg = store.branch_config("semantic")
    assert cfg["sampling"] == {"kind": "fps", "fps": None, "max_frames": None, "by": "pts"}
    assert cfg["views"] == ["windows", "frame"] and cfg["frame_view"]["tokens"] is True
    times = store.read("semantic", "frame_times", ["tiny"])["tiny"]
    assert np.all(np.diff(times) > 0)


def test_windows_of_several_videos_share_a_clip_batch():
    """Two videos in flight (a decoder pool): the first video's end sends both videos' pending
    windows to CLIP in one batch, and each video gets exactly its own rows back."""
    clip = load_clip(TINY_MODEL, random_weights=True)
    branch = SemanticBranch(clip, load_prompts("default"), FrameSampling(None, None),
                            grid=(2, 2), batch_windows=1000)
    info = VideoInfo(width=64, height=48, fps=10.0, n_frames=3, duration_s=0.3)
    rng = np.random.default_rng(0)
    frames = {k: [_Frame(i, rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
                  for i in range(3)] for k in "ab"}
    alone = {}
    for key in "ab":  # one video at a time: the reference
        state = branch.start_video(key, info)
        for frame in frames[key]:
            branch.add_frame(state, frame)
        alone[key] = branch.finish_video(state)
    calls = []
    encode = clip.encode_images
    clip.encode_images = lambda images, **kw: calls.append(len(images)) or encode(images, **kw)
    states = {k: branch.start_video(k, info) for k in "ab"}
    for i in range(3):  # interleaved, as two decoders deliver them
        for key in "ab":
            branch.add_frame(states[key], frames[key][i])
    together = {k: branch.finish_video(states[k]) for k in "ab"}
    assert calls == [24]  # 2 videos x 3 frames x 4 windows, one batch
    for key in "ab":
        for name, value in alone[key].items():
            np.testing.assert_allclose(together[key][name], value, atol=1e-3, err_msg=name)


def test_a_failed_clip_batch_fails_every_video_it_held_and_the_branch_goes_on():
    """A cross-video batch that fails (say, out of GPU memory) fails each video whose windows
    were in it, with the real reason; videos started afterwards are encoded as usual."""
    clip = load_clip(TINY_MODEL, random_weights=True)
    branch = SemanticBranch(clip, load_prompts("default"), FrameSampling(None, None),
                            grid=(2, 2), batch_windows=1000)
    info = VideoInfo(width=64, height=48, fps=10.0, n_frames=2, duration_s=0.2)
    rng = np.random.default_rng(1)
    frames = [_Frame(i, rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)) for i in range(2)]
    encode = clip.encode_images

    def out_of_memory(images, **kw):
        raise RuntimeError("CUDA out of memory (simulated)")

    clip.encode_images = out_of_memory
    states = {k: branch.start_video(k, info) for k in "ab"}
    for frame in frames:
        for key in "ab":
            branch.add_frame(states[key], frame)
    for key in "ab":
        with pytest.raises(RuntimeError, match=rf"{key}: CLIP batch failed .*out of memory"):
            branch.finish_video(states[key])
    clip.encode_images = encode
    state = branch.start_video("c", info)
    for frame in frames:
        branch.add_frame(state, frame)
    out = branch.finish_video(state)
    assert out["window_embeddings"].shape[:2] == (2, 4)
