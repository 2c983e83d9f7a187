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


# ------------------------------------------------------------------ activation (QuickGELU) rules
TINY_QG = "vqa-tiny-clip-quickgelu"
CUSTOM_MEAN = [0.5, 0.4, 0.3]
CUSTOM_STD = [0.2, 0.25, 0.3]


def _tiny_cfg(quick_gelu: bool) -> dict:
    import json
    from importlib import resources

    text = resources.files("vqa_pipe.pipeline").joinpath(
        "data/clip_configs/vqa-tiny-clip.json"
    ).read_text()
    cfg = json.loads(text)
    if quick_gelu:
        cfg["quick_gelu"] = True
    return cfg


@pytest.fixture(scope="module")
def qg_state():
    model = load_clip(TINY_QG, random_weights=True, seed=3).model
    return {k: v.contiguous() for k, v in model.state_dict().items()}


@pytest.fixture()
def qg_folder(tmp_path, qg_state):
    import json

    folder = tmp_path / "hub-model"
    folder.mkdir()
    save_file(qg_state, str(folder / "open_clip_model.safetensors"))
    (folder / "open_clip_config.json").write_text(json.dumps({
        "model_cfg": _tiny_cfg(True),
        "preprocess_cfg": {"mean": CUSTOM_MEAN, "std": CUSTOM_STD},
    }))
    return folder


def test_quickgelu_name_with_a_file_builds_quickgelu_and_records_it(tmp_path, qg_state):
    path = tmp_path / "qg.safetensors"
    save_file(qg_state, str(path))
    clip = load_clip(TINY_QG, str(path))
    cfg = clip.config()
    assert clip.quick_gelu and cfg["quick_gelu"] is True
    assert cfg["image_size"] == 224 and len(cfg["mean"]) == 3 and len(cfg["std"]) == 3
    assert cfg["weights"]["quick_gelu_from"] == "model name"


def test_hub_folder_with_open_clip_config(qg_folder):
    by_name = load_clip(TINY_QG, str(qg_folder))
    by_dir = load_clip(f"local-dir:{qg_folder}")
    assert by_name.quick_gelu and by_dir.quick_gelu
    assert by_dir.mean == tuple(CUSTOM_MEAN) and by_dir.std == tuple(CUSTOM_STD)
    assert by_name.mean == tuple(CUSTOM_MEAN)
    assert by_name.weights["quick_gelu_from"] == "open_clip_config.json"
    x = torch.rand(2, 3, 224, 224)
    assert torch.allclose(by_name.encode_images(x), by_dir.encode_images(x), atol=1e-6)


def test_folder_config_that_disagrees_with_the_name_is_refused_naming_the_model(qg_folder):
    with pytest.raises(WeightsError, match=f"quick_gelu.*use --clip-model {TINY_QG}"):
        load_clip(TINY_MODEL, str(qg_folder))
    # the checkpoint file beside its config is checked the same way
    with pytest.raises(WeightsError, match=f"use --clip-model {TINY_QG}"):
        load_clip(TINY_MODEL, str(qg_folder / "open_clip_model.safetensors"))
    with pytest.raises(WeightsError, match="asked for"):
        load_clip(TINY_QG, str(qg_folder), quick_gelu=False)


def test_folder_without_config_or_checkpoint(tmp_path, qg_folder):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(WeightsError, match="without open_clip_config.json"):
        load_clip(TINY_MODEL, str(empty))
    (qg_folder / "open_clip_model.safetensors").unlink()
    with pytest.raises(WeightsError, match="no checkpoint"):
        load_clip(f"local-dir:{qg_folder}")


def test_openai_format_state_dict_needs_quickgelu(tmp_path, qg_state):
    path = tmp_path / "openai-format.pt"
    state = dict(qg_state)
    state.update(input_resolution=torch.tensor(224), context_length=torch.tensor(77),
                 vocab_size=torch.tensor(49408))
    torch.save(state, path)
    with pytest.raises(WeightsError, match=f"OpenAI.*--clip-model {TINY_QG}"):
        load_clip(TINY_MODEL, str(path))
    with pytest.raises(WeightsError, match="QuickGELU"):
        load_clip(TINY_MODEL, str(path), quick_gelu=False)
    clip = load_clip(TINY_QG, str(path))
    assert clip.quick_gelu and clip.weights["format"] == "openai"
    also = load_clip(TINY_MODEL, str(path), quick_gelu=True)
    x = torch.rand(1, 3, 224, 224)
    assert also.quick_gelu and torch.allclose(clip.encode_images(x), also.encode_images(x))


def test_bare_file_for_a_name_with_weights_of_both_activations_must_say_which(
    tmp_path, qg_state, monkeypatch
):
    import open_clip

    # pretend vqa-tiny-clip had published weights in both activations, as ViT-B-32 has
    monkeypatch.setitem(
        open_clip.pretrained._PRETRAINED, TINY_MODEL, {"qg": {"quick_gelu": True}, "g": {}}
    )
    path = tmp_path / "bare.safetensors"
    save_file(qg_state, str(path))
    with pytest.raises(WeightsError, match=f"bare state dict.*--clip-model {TINY_QG}.*gelu"):
        load_clip(TINY_MODEL, str(path))
    assert load_clip(TINY_MODEL, str(path), quick_gelu=True).quick_gelu
    assert not load_clip(TINY_MODEL, str(path), quick_gelu=False).quick_gelu
    assert load_clip(TINY_QG, str(path)).quick_gelu


def test_tag_that_disagrees_with_a_quickgelu_name_is_refused(tmp_path, monkeypatch, qg_state):
    from vqa_pipe.pipeline import clip_model

    path = tmp_path / "tag.safetensors"
    save_file(qg_state, str(path))
    monkeypatch.setattr(clip_model, "_tag_file", lambda name, tag, cache: (path, {}))
    with pytest.raises(WeightsError, match=f"GELU.*use --clip-model {TINY_MODEL}"):
        load_clip(TINY_QG, "sometag")
    with pytest.raises(WeightsError, match="asked for"):
        load_clip(TINY_MODEL, "sometag", quick_gelu=True)


def test_torchscript_archives_are_refused_with_how_to_convert(tmp_path):
    path = tmp_path / "ViT-B-32.pt"
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(path))
    with pytest.raises(WeightsError, match="TorchScript.*torch.jit.load.*state_dict"):
        load_clip(TINY_MODEL, str(path))


def test_quickgelu_changes_the_embeddings(qg_state, tmp_path):
    """The two activations must give different embeddings, or the tests above prove nothing."""
    path = tmp_path / "w.safetensors"
    save_file(qg_state, str(path))
    qg = load_clip(TINY_QG, str(path))
    gelu = load_clip(TINY_MODEL, str(path))
    x = torch.rand(2, 3, 224, 224)
    assert (qg.encode_images(x) - gelu.encode_images(x)).abs().max() > 1e-4
