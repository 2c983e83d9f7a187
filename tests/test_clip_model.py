"""CLIP loading through the real code path, with a tiny model and checkpoint files made here."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from vqa_pipe.pipeline.clip_model import TINY_MODEL, load_clip
from vqa_pipe.pipeline.weights import WeightsError


@pytest.fixture(scope="module")
def tiny():
    return load_clip(TINY_MODEL, random_weights=True, seed=1)


def test_random_weights_are_marked_and_seeded(tiny):
    assert tiny.random_weights and tiny.config()["random_weights"] is True
    again = load_clip(TINY_MODEL, random_weights=True, seed=1)
    x = torch.rand(2, 3, 224, 224)
    assert torch.allclose(tiny.encode_images(x), again.encode_images(x))
    emb = tiny.encode_images(x)
    assert emb.shape == (2, 64)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(2), atol=1e-5)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_checkpoint_file_round_trip(tmp_path, tiny, suffix):
    path = tmp_path / f"tiny{suffix}"
    state = {k: v.contiguous() for k, v in tiny.model.state_dict().items()}
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    loaded = load_clip(TINY_MODEL, str(path))
    assert not loaded.random_weights
    assert loaded.weights["file"] == path.name and len(loaded.weights["sha256"]) == 64
    x = torch.rand(1, 3, 224, 224)
    assert torch.allclose(loaded.encode_images(x), tiny.encode_images(x), atol=1e-6)


def test_no_weights_without_the_flag():
    with pytest.raises(WeightsError, match="--random-weights"):
        load_clip(TINY_MODEL)
    with pytest.raises(WeightsError, match="not both"):
        load_clip(TINY_MODEL, "openai", random_weights=True)


def test_missing_tag_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(WeightsError, match="vqa-pipe weights download ViT-B-32 openai"):
        load_clip("ViT-B-32", "openai", cache_dir=str(tmp_path))


def test_unknown_names_list_the_choices():
    with pytest.raises(WeightsError, match="Available tags: .*openai"):
        load_clip("ViT-B-32", "no-such-tag")
    with pytest.raises(WeightsError, match="unknown CLIP model 'ViT-Nope'"):
        load_clip("ViT-Nope", random_weights=True)


def test_missing_and_bad_checkpoint_files(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        load_clip(TINY_MODEL, str(tmp_path / "gone.safetensors"))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(WeightsError, match="cannot read CLIP checkpoint .*junk.pt"):
        load_clip(TINY_MODEL, str(junk))
    wrong = tmp_path / "wrong.safetensors"
    save_file({"foo.weight": torch.zeros(2)}, str(wrong))
    with pytest.raises(WeightsError, match="does not fit CLIP model"):
        load_clip(TINY_MODEL, str(wrong))


def test_pickled_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"state_dict": Evil()}, path)
    with pytest.raises(WeightsError, match="cannot read"):
        load_clip(TINY_MODEL, str(path))
