"""Video Swin backbone: equivalence with torchvision, upstream checkpoint mapping, bad files.

No real weights exist on test machines: checkpoints are built here with the upstream key
names and shapes (random tensors) and saved to a temporary folder.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from vqa_pipe.pipeline.backbones import BackboneError
from vqa_pipe.pipeline.swin_backbone import (
    SwinBackbone,
    SwinConfig,
    apply_checkpoint,
    build_backbone,
    get_backbone_config,
    list_backbones,
    load_swin,
    read_checkpoint,
    register_backbone,
    resolve_backbone_name,
)
from vqa_pipe.pipeline.weights import WeightsError

SMALL = dict(embed_dim=16, depths=(2, 2), num_heads=(2, 4), window_size=(2, 4, 4))
register_backbone("test-swin-small", SwinConfig(**SMALL, frag_bias=(True, False)), exist_ok=True)


def _upstream_index(window: tuple[int, int, int]) -> torch.Tensor:
    """The relative_position_index buffer as upstream computes it (taken from torchvision)."""
    from torchvision.models.video.swin_transformer import ShiftedWindowAttention3d

    attn = ShiftedWindowAttention3d(8, list(window), [0, 0, 0], num_heads=1)
    return attn.relative_position_index.clone()


def fastvqa_backbone_keys(frag_stages=(0, 1, 2)) -> dict[str, tuple]:
    """Key names and shapes of FAST-VQA-B's ``swin_tiny_grpb`` (fastvqa/models/swin_backbone.py):
    Video Swin-T, patch (2,4,4), window (8,7,7), fragment bias tables in stages 1-3."""
    keys: dict[str, tuple] = {
        "patch_embed.proj.weight": (96, 3, 2, 4, 4),
        "patch_embed.proj.bias": (96,),
        "patch_embed.norm.weight": (96,),
        "patch_embed.norm.bias": (96,),
    }
    table = (2 * 8 - 1) * (2 * 7 - 1) * (2 * 7 - 1)
    for i, (depth, heads) in enumerate(zip((2, 2, 6, 2), (3, 6, 12, 24))):
        d = 96 * 2**i
        for j in range(depth):
            b = f"layers.{i}.blocks.{j}."
            keys.update({
                b + "norm1.weight": (d,), b + "norm1.bias": (d,),
                b + "attn.relative_position_bias_table": (table, heads),
                b + "attn.relative_position_index": (392, 392),
                b + "attn.qkv.weight": (3 * d, d), b + "attn.qkv.bias": (3 * d,),
                b + "attn.proj.weight": (d, d), b + "attn.proj.bias": (d,),
                b + "norm2.weight": (d,), b + "norm2.bias": (d,),
                b + "mlp.fc1.weight": (4 * d, d), b + "mlp.fc1.bias": (4 * d,),
                b + "mlp.fc2.weight": (d, 4 * d), b + "mlp.fc2.bias": (d,),
            })
            if i in frag_stages:
                keys[b + "attn.fragment_position_bias_table"] = (table, heads)
        if i < 3:
            keys.update({
                f"layers.{i}.downsample.reduction.weight": (2 * d, 4 * d),
                f"layers.{i}.downsample.norm.weight": (4 * d,),
                f"layers.{i}.downsample.norm.bias": (4 * d,),
            })
    keys.update({"norm.weight": (768,), "norm.bias": (768,)})
    return keys


HEAD_KEYS = {  # VQAHead(in_channels=768, hidden_channels=64)
    "fc_hid.weight": (64, 768, 1, 1, 1), "fc_hid.bias": (64,),
    "fc_last.weight": (1, 64, 1, 1, 1), "fc_last.bias": (1,),
}


def _synthetic(prefix: str, heads: dict[str, str]) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    index = _upstream_index((8, 7, 7))
    state = {}
    for key, shape in fastvqa_backbone_keys().items():
        if key.endswith("relative_position_index"):
            state[prefix + key] = index.clone()
        else:
            state[prefix + key] = torch.randn(shape, generator=gen) * 0.02
    for head_prefix in heads:
        for key, shape in HEAD_KEYS.items():
            state[head_prefix + key] = torch.randn(shape, generator=gen)
    return state


@pytest.fixture(scope="module")
def fastvqa_ckpt(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """FAST-VQA-B layout: ``{"state_dict": {fragments_backbone.*, vqa_head.*}}``."""
    state = _synthetic("fragments_backbone.", {"vqa_head.": ""})
    path = tmp_path_factory.mktemp("ckpt") / "FAST_VQA_B_1_4.pth"
    torch.save({"state_dict": state}, path)
    return path, state


def _tv_features(tv, x):
    return tv.norm(tv.features(tv.patch_embed(x))).permute(0, 4, 1, 2, 3)


# ------------------------------------------------------------------ architecture


@pytest.mark.parametrize("shape", [(1, 3, 8, 64, 64), (2, 3, 6, 52, 44)])
def test_same_output_as_torchvision_swin3d(shape):
    from torchvision.models.video.swin_transformer import SwinTransformer3d

    torch.manual_seed(0)
    tv = SwinTransformer3d(patch_size=[2, 4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 4],
                           window_size=[2, 4, 4], stochastic_depth_prob=0.0).eval()
    model = SwinBackbone(SwinConfig(**SMALL, frag_bias=(False, False)))
    mapping = apply_checkpoint(model, tv.state_dict(), "torchvision state")
    assert mapping.format == "torchvision" and mapping.ignored == ["head.weight", "head.bias"]
    x = torch.randn(shape)  # the second shape needs padding and clipped windows
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), _tv_features(tv, x), atol=1e-5, rtol=1e-4)


def test_real_swin3d_t_loads_torchvision_weights(tmp_path):
    from torchvision.models.video import swin3d_t

    torch.manual_seed(1)
    tv = swin3d_t(weights=None).eval()
    path = tmp_path / "swin3d_t-7615ae03.pth"
    torch.save(tv.state_dict(), path)
    model, identity = load_swin("swin3d_t", path)
    assert identity["source"] == "file" and identity["format"] == "torchvision"
    assert identity["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert identity["file"] == path.name
    torch.testing.assert_close(model.layers[1].blocks[1].mlp.fc2.weight,
                               tv.state_dict()["features.2.1.mlp.3.weight"])
    x = torch.randn(1, 3, 4, 64, 64)  # one small batch through the real architecture
    with torch.no_grad():
        torch.testing.assert_close(model(x), _tv_features(tv, x), atol=1e-4, rtol=1e-3)
    assert resolve_backbone_name("auto", tv.state_dict()) == "swin3d_t"


def test_fragment_bias_is_the_plain_bias_when_tables_agree():
    torch.manual_seed(0)
    plain = SwinBackbone(SwinConfig(**SMALL, frag_bias=(False, False))).init_random(3).eval()
    grpb = SwinBackbone(SwinConfig(**SMALL, frag_bias=(True, False))).eval()
    state = dict(plain.state_dict())
    for name, value in list(state.items()):
        if name.startswith("layers.0.") and name.endswith("relative_position_bias_table"):
            state[name.replace("relative", "fragment")] = value.clone()
    grpb.load_state_dict(state, strict=True)
    x = torch.randn(1, 3, 4, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(grpb(x), plain(x))
        table = grpb.layers[0].blocks[0].attn.fragment_position_bias_table
        table.add_(torch.randn(table.shape))
        assert (grpb(x) - plain(x)).abs().max() > 1e-3  # the fragment table is used


def test_windows_follow_the_fragment_grid():
    grpb = build_backbone("swin3d_t_grpb")
    assert grpb.adapted_window(32, 224, 224) == (8, 7, 7)
    assert grpb.adapted_window(32, 128, 128) == (8, 4, 4)  # a 4x4 grid of 32-pixel patches
    assert grpb.adapted_window(16, 224, 224) == (4, 7, 7)
    assert build_backbone("swin3d_t").adapted_window(32, 128, 128) is None


@pytest.mark.parametrize("t,h,w", [(8, 64, 64), (5, 70, 36), (2, 32, 32)])
def test_feature_shape_matches_output(t, h, w):
    config = SwinConfig(**SMALL, frag_bias=(True, False), adaptive_window=True)
    model = SwinBackbone(config).init_random(0).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, t, h, w))
    assert tuple(out.shape[1:]) == config.feature_shape(t, h, w)
    assert get_backbone_config("swin3d_t").feature_shape(32, 224, 224) == (768, 16, 7, 7)


def test_random_weights_are_seeded():
    a, ident = load_swin("test-swin-small", random_weights=True, seed=1)
    b, _ = load_swin("test-swin-small", random_weights=True, seed=1)
    c, _ = load_swin("test-swin-small", random_weights=True, seed=2)
    assert ident == {"source": "random", "seed": 1}
    w = "layers.1.blocks.1.attn.qkv.weight"
    assert torch.equal(a.state_dict()[w], b.state_dict()[w])
    assert not torch.equal(a.state_dict()[w], c.state_dict()[w])


def test_unknown_backbone_lists_the_choices():
    with pytest.raises(BackboneError, match="unknown spatial backbone 'swin3d_b'; valid: .*grpb"):
        load_swin("swin3d_b", random_weights=True)
    assert {"swin3d_t", "swin3d_t_grpb"} <= set(list_backbones())


# ------------------------------------------------------------------ upstream checkpoints


def test_fastvqa_checkpoint_maps_every_key(fastvqa_ckpt):
    path, state = fastvqa_ckpt
    loaded = read_checkpoint(path)  # unwraps {"state_dict": ...}
    assert set(loaded) == set(state)
    model = build_backbone("swin3d_t_grpb")
    mapping = apply_checkpoint(model, loaded, path)  # strict=True inside
    assert mapping.format == "fastvqa"
    assert sorted(mapping.ignored) == sorted("vqa_head." + k for k in HEAD_KEYS)
    assert len(mapping.checked) == 12  # one relative_position_index per block
    assert not mapping.unknown and not mapping.missing
    assert set(mapping.used) | set(mapping.checked) | set(mapping.ignored) == set(state)
    params = model.state_dict()
    assert len(mapping.used) == len(params)  # every parameter comes from the file
    for src, target in mapping.used.items():
        assert torch.equal(params[target], state[src]), src


def test_fastvqa_checkpoint_auto_selects_the_fragment_backbone(fastvqa_ckpt):
    path, state = fastvqa_ckpt
    model, identity = load_swin("auto", path)
    assert model.name == "swin3d_t_grpb" and identity["format"] == "fastvqa"
    torch.testing.assert_close(
        model.layers[2].blocks[5].attn.fragment_position_bias_table,
        state["fragments_backbone.layers.2.blocks.5.attn.fragment_position_bias_table"],
    )
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 2, 64, 64))
    assert out.shape == (1, 768, 1, 2, 2) and torch.isfinite(out).all()


def test_dover_safetensors_with_module_prefix(tmp_path):
    state = _synthetic("technical_backbone.", {"technical_head.": "", "aesthetic_head.": ""})
    state["aesthetic_backbone.stem.0.weight"] = torch.zeros(4, 3, 1, 1)
    path = tmp_path / "DOVER.safetensors"
    save_file({"module." + k: v.contiguous() for k, v in state.items()}, str(path))
    model = build_backbone("swin3d_t_grpb")
    mapping = apply_checkpoint(model, read_checkpoint(path), path)
    assert mapping.format == "dover"
    assert not any(k.startswith("technical_backbone.") for k in mapping.ignored)
    assert len(mapping.ignored) == 2 * len(HEAD_KEYS) + 1
    assert set(mapping.used) | set(mapping.checked) | set(mapping.ignored) == set(state)


def test_fastvqa_checkpoint_into_plain_backbone_says_which_to_use(fastvqa_ckpt):
    path, _ = fastvqa_ckpt
    with pytest.raises(WeightsError) as err:
        load_swin("swin3d_t", path)
    assert str(path) in str(err.value) and "swin3d_t_grpb" in str(err.value)
    assert "fragment_position_bias_table" in str(err.value)


def test_wrong_shapes_are_named(tmp_path):
    state = _synthetic("fragments_backbone.", {})
    key = "fragments_backbone.layers.3.blocks.1.attn.qkv.weight"
    state[key] = torch.zeros(10, 768)
    path = tmp_path / "cut.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError, match="wrong shape") as err:
        load_swin("swin3d_t_grpb", path)
    assert key in str(err.value) and str(path) in str(err.value)


# ------------------------------------------------------------------ bad checkpoints


class _Payload:
    """Anything a plain state dict would not hold: unpickling it needs to run code."""


def test_missing_file_says_how_to_get_one(tmp_path):
    path = tmp_path / "nowhere" / "swin3d_t.pth"
    with pytest.raises(WeightsError) as err:
        load_swin("swin3d_t", path)
    text = str(err.value)
    assert str(path) in text and "download.pytorch.org" in text and "--random-weights" in text


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"this is not a checkpoint", "cannot read"),
        (None, "cannot read"),  # a pickle that needs code: refused by weights_only
        ({"conv1.weight": torch.zeros(2, 3, 3, 3), "fc.bias": torch.zeros(2)},
         "not a known Video Swin checkpoint"),
        ({"features.0.0.attn.qkv.weight": "oops"}, "not tensors"),
    ],
    ids=["garbage", "code-pickle", "other-model", "not-tensors"],
)
def test_bad_checkpoint_names_the_file(tmp_path, content, expected):
    path = tmp_path / "bad.pth"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is None:
        torch.save({"state_dict": {"x": _Payload()}}, path)
    else:
        torch.save(content, path)
    with pytest.raises(WeightsError, match=expected) as err:
        load_swin("swin3d_t", path)
    assert str(path) in str(err.value)


def test_weights_or_random_flag_is_required(tmp_path):
    with pytest.raises(WeightsError, match="--random-weights"):
        load_swin("swin3d_t")
    with pytest.raises(WeightsError, match="not both"):
        load_swin("swin3d_t", tmp_path / "x.pth", random_weights=True)


def test_fused_attention_path_matches_the_explicit_one(monkeypatch):
    from vqa_pipe.pipeline.swin_backbone import WindowAttention3D

    config = SwinConfig(**SMALL, frag_bias=(True, False))  # per-window and shared biases
    model = SwinBackbone(config).init_random(5).eval()
    x = torch.randn(2, 3, 6, 64, 48)
    with torch.no_grad():
        explicit = model(x)
        monkeypatch.setattr(WindowAttention3D, "fused", True)  # the CUDA path, run on CPU
        fused = model(x)
    torch.testing.assert_close(fused, explicit, atol=1e-4, rtol=1e-4)
