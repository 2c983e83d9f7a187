"""CLIPVQA's frame view against fixtures made by CLIPVQA's own code (tests/fixtures/clip/).

The fixtures come from ``tests/fixtures/clip/regenerate.py`` run on a CLIPVQA checkout; these
tests rebuild the same inputs (seeded frames, real frames decoded with PyAV, seeded weights)
and run this project's code only.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import fixture_module
from vqa_pipe.pipeline.decode import VideoInfo, iter_frames
from vqa_pipe.pipeline.frame_sampling import TSNSampling
from vqa_pipe.pipeline.frame_view import (
    CLIPVQA_MEAN,
    CLIPVQA_STD,
    clipvqa_frame,
    resize_linear,
    resize_short_side,
)

FIXTURES = Path(__file__).parent / "fixtures" / "clip"
FRAMES = json.loads((FIXTURES / "frame_input.json").read_text())
META = json.loads((FIXTURES / "clipvqa_meta.json").read_text())
SEED = FRAMES["seed"]


def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def _normalised(crop: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(crop).permute(2, 0, 1).float() / 255.0
    mean = torch.tensor(CLIPVQA_MEAN).view(3, 1, 1)
    std = torch.tensor(CLIPVQA_STD).view(3, 1, 1)
    return ((x - mean) / std).numpy()


def _check(entry: dict, crop: np.ndarray) -> None:
    sample = np.array(entry["crop_every16"], dtype=np.uint8)
    diff = np.abs(crop[::16, ::16].astype(int) - sample)
    assert _sha(crop) == entry["crop_sha256"], (
        f"crop differs from CLIPVQA's: {int((diff > 0).sum())} of {diff.size} sampled values, "
        f"max {int(diff.max())}"
    )
    x = _normalised(crop)
    np.testing.assert_allclose(x.reshape(3, -1).mean(1), entry["norm_mean"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(x.reshape(3, -1).std(1), entry["norm_std"], rtol=0, atol=1e-5)
    corners = x[:, [0, 0, -1, -1, 111], [0, -1, 0, -1, 97]]
    np.testing.assert_allclose(corners, entry["norm_corners"], rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "entry", [e for e in FRAMES["frames"] if "synthetic" in e],
    ids=lambda e: "x".join(map(str, e["synthetic"])),
)
def test_synthetic_frames_are_cropped_exactly_as_clipvqa_does(entry):
    h, w = entry["synthetic"]
    frame = np.random.default_rng([SEED, h, w]).integers(0, 256, (h, w, 3), dtype=np.uint8)
    _check(entry, clipvqa_frame(frame, 224))


def _real_frame(sample_videos, entry) -> np.ndarray:
    path = sample_videos[entry["video"]]["path"]
    (frame,) = list(iter_frames(path, [entry["frame"]], backend="pyav"))
    assert frame.rgb.shape == tuple(entry["frame_shape"])
    if _sha(frame.rgb) != entry["frame_sha256"]:
        pytest.fail(
            f"PyAV decodes {entry['video']} frame {entry['frame']} differently from when the "
            "fixture was made (another FFmpeg?): regenerate tests/fixtures/clip"
        )
    return frame.rgb


@pytest.mark.parametrize(
    "entry", [e for e in FRAMES["frames"] if "video" in e], ids=lambda e: e["video"]
)
def test_real_frames_are_cropped_exactly_as_clipvqa_does(entry, sample_videos):
    _check(entry, clipvqa_frame(_real_frame(sample_videos, entry), 224))


def test_the_check_can_fail():
    """Pillow-style rounding of the same resize must not pass: the fixture is that sharp."""
    entry = next(e for e in FRAMES["frames"] if e.get("synthetic") == [144, 192])
    frame = np.random.default_rng([SEED, 144, 192]).integers(0, 256, (144, 192, 3), np.uint8)
    h, w = resize_short_side(144, 192, 256)
    x = torch.nn.functional.interpolate(
        torch.from_numpy(frame).permute(2, 0, 1)[None].float(), size=(h, w), mode="bilinear",
        align_corners=False,
    )[0].round().clamp(0, 255).byte().permute(1, 2, 0).numpy()
    top, left = (h - 224) // 2, (w - 224) // 2
    with pytest.raises(AssertionError):
        _check(entry, x[top : top + 224, left : left + 224])


def test_resize_sizes_follow_mmcv_rounding():
    assert resize_short_side(540, 960, 256) == (256, 455)
    assert resize_short_side(720, 406, 256) == (454, 256)
    assert resize_short_side(144, 192, 256) == (256, 341)
    assert resize_linear(np.zeros((5, 7, 3), np.uint8), 5, 7).shape == (5, 7, 3)


# ------------------------------------------------------------------------ TSN sampling
TSN = json.loads((FIXTURES / "tsn_indices.json").read_text())["indices"]


@pytest.mark.parametrize("segments", sorted(int(t) for t in TSN))
def test_tsn_sampling_matches_clipvqa_test_sampler(segments):
    plan = TSNSampling(segments)
    for n, expected in TSN[str(segments)].items():
        info = VideoInfo(640, 360, 30.0, int(n), int(n) / 30.0)
        assert plan.indices(info) == expected, f"n_frames={n}"
    assert plan.config() == {"kind": "tsn", "segments": segments}
    assert pickle.loads(pickle.dumps(plan)) == plan


def test_tsn_sampling_refuses_bad_settings():
    with pytest.raises(ValueError, match="segments"):
        TSNSampling(0)


# ------------------------------------------------------------------------ embeddings
# the weight rule the fixtures were made with: regenerate.py's own seeded_state
_regenerate = fixture_module(FIXTURES / "regenerate.py", "clip_regenerate")
assert _regenerate.SEED == SEED, "regenerate.py's seed is not the fixtures' seed"
seeded_state = _regenerate.seeded_state


@pytest.fixture(scope="module")
def openai_layout_folder(tmp_path_factory):
    """The fixture's tiny OpenAI-layout CLIP as a hub folder (open_clip_config.json + weights)."""
    from safetensors.torch import save_file
    from vqa_pipe.pipeline.clip_model import load_clip

    tiny = META["tiny"]
    model_cfg = {
        "embed_dim": tiny["embed_dim"],
        "quick_gelu": True,
        "vision_cfg": {"image_size": tiny["image"], "layers": tiny["layers"],
                       "width": tiny["width"], "head_width": 64, "patch_size": tiny["patch"]},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": tiny["text_width"],
                     "heads": tiny["text_width"] // 64, "layers": tiny["text_layers"]},
    }
    folder = tmp_path_factory.mktemp("openai-layout")
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg}))
    import open_clip

    shapes = {
        k: tuple(v.shape)
        for k, v in open_clip.create_model(f"local-dir:{folder}", load_weights=False)
        .state_dict().items()
    }
    state = {k: torch.from_numpy(v) for k, v in seeded_state(shapes).items()}
    save_file(state, str(folder / "open_clip_model.safetensors"))
    assert load_clip(f"local-dir:{folder}").quick_gelu
    return folder


def test_frame_view_embeddings_and_level_texts_match_clipvqa(openai_layout_folder, sample_videos):
    from vqa_pipe.pipeline.clip_model import load_clip
    from vqa_pipe.pipeline.frame_sampling import FrameSampling
    from vqa_pipe.pipeline.prompts import load_prompts
    from vqa_pipe.pipeline.semantic_branch import SemanticBranch

    ref = np.load(FIXTURES / "clipvqa_embeddings.npz")
    clip = load_clip(f"local-dir:{openai_layout_folder}")
    branch = SemanticBranch(clip, load_prompts(), FrameSampling(), views=("frame",),
                            clip_tokens=True)
    # labels.csv has "bad " with a trailing space; CLIP's tokenizer strips it
    assert list(branch.level_labels) == [w.strip() for w in META["labels"]]
    # the tokenizer gives CLIPVQA's token ids, and the level texts its (unnormalised) embeddings
    tokens = clip._tokenizer(list(branch.level_labels)).numpy()[:, :8]
    np.testing.assert_array_equal(tokens, ref["level_tokens"])
    np.testing.assert_allclose(branch.level_text_embeddings, ref["level_text_embeddings"],
                               rtol=1e-4, atol=1e-4)
    assert np.abs(np.linalg.norm(branch.level_text_embeddings, axis=1) - 1).max() > 0.1
    # the frame view's embeddings and patch tokens of the real frames
    entries = [e for e in FRAMES["frames"] if "video" in e]
    frames = [_real_frame(sample_videos, e) for e in entries]
    crops = [clipvqa_frame(f, 224) for f in frames]
    state = branch.start_video("v", VideoInfo(1, 1, 1.0, 0, 0.0))
    for i, rgb in enumerate(frames):
        branch.add_frame(state, type("F", (), {"index": i, "time_s": float(i), "rgb": rgb})())
    state.planned = list(range(len(frames)))
    out = branch.finish_video(state)
    assert out["frame_embeddings"].dtype == np.float32
    assert out["frame_embeddings"].shape == ref["image_embeddings"].shape
    np.testing.assert_allclose(out["frame_embeddings"], ref["image_embeddings"],
                               rtol=1e-4, atol=1e-4)
    assert out["frame_tokens"].dtype == np.float16
    np.testing.assert_allclose(out["frame_tokens"][:2].astype(np.float32), ref["patch_tokens"],
                               rtol=2e-3, atol=2e-3)
    # the same weights built with GELU are detectably different
    from open_clip.transformer import QuickGELU

    gelu = load_clip(f"local-dir:{openai_layout_folder}")
    swapped = 0
    for module in gelu.model.modules():
        if isinstance(module, QuickGELU):
            module.forward = torch.nn.functional.gelu
            swapped += 1
    assert swapped == 4  # two blocks in each tower
    x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2)
    wrong = gelu.encode_images(x, mean=CLIPVQA_MEAN, std=CLIPVQA_STD, normalize=False).numpy()
    assert np.abs(wrong - ref["image_embeddings"]).max() > 1e-2  # 100x the tolerance above
