"""CLiF-VQA's heads as the paper writes them: eq. 8 along time per description (``mlp``), the
fusion of eqs. 10-13 with FAST-VQA's head per clip and its Flatten (``fused``).

There is no public CLiF-VQA code to compare with; these tests pin the structure the equations
describe (see docs/notes/fastvqa.md for what the paper leaves open).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from vqa_pipe.pipeline.feature_table import SEQUENCE, SPATIAL_CLIP_MAPS, FeatureTable
from vqa_pipe.pipeline.regressors import RegressorError, create_regressor, load_regressor
from vqa_pipe.pipeline.regressors.fused import FusedNet
from vqa_pipe.pipeline.regressors.mlp import FlattenSemanticMLP, MLPNet, SemanticMLP

T, R2 = 8, 6  # frames, 2r descriptions
MAP = (16, 2, 3, 3)  # C, T', H', W'


def _seq(b=4, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(b, T, R2)).astype(np.float32))


# ------------------------------------------------------------------ eq. 8


def test_eq8_is_one_fc_gelu_fc_along_time_per_description():
    torch.manual_seed(0)
    mlp = SemanticMLP(T, hidden=5).eval()
    seq = _seq()
    out = mlp(seq)
    assert out.shape == (4, R2)  # F_s: one value per description
    w1, b1, w2, b2 = mlp.fc1.weight, mlp.fc1.bias, mlp.fc2.weight, mlp.fc2.bias
    assert w1.shape == (5, T) and w2.shape == (1, 5)  # FC layers act on the time axis
    for d in range(R2):
        column = seq[:, :, d]  # (B, T): description d over time
        expected = torch.nn.functional.gelu(column @ w1.T + b1) @ w2.T + b2
        torch.testing.assert_close(out[:, d], expected[:, 0])


def test_eq8_treats_descriptions_alike_and_apart():
    torch.manual_seed(1)
    mlp = SemanticMLP(T, hidden=7).eval()
    seq = _seq(seed=2)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    with torch.no_grad():
        # the same weights for every description: permuting them permutes F_s
        torch.testing.assert_close(mlp(seq[:, :, perm]), mlp(seq)[:, perm])
        # description 2's scores only reach F_s[2]
        changed = seq.clone()
        changed[:, :, 2] += 1.0
        diff = (mlp(changed) - mlp(seq)).abs().amax(0)
    assert diff[2] > 1e-3 and torch.all(diff[[0, 1, 3, 4, 5]] == 0)
    # the earlier, flattened variant mixes descriptions: the test above would fail for it
    flat = FlattenSemanticMLP(T, R2, 16, R2).eval()
    with torch.no_grad():
        assert not torch.allclose(flat(seq[:, :, perm]), flat(seq)[:, perm], atol=1e-4)


def test_mlp_regressor_defaults_to_eq8_and_keeps_the_flatten_option():
    model = create_regressor("mlp")
    assert model.params["semantic"] == "time" and model.params["loss"] == "mono+lin"
    net = model.build({SEQUENCE: [T, R2]})
    assert isinstance(net, MLPNet) and isinstance(net.semantic, SemanticMLP)
    assert net.head.fc1.in_features == R2  # the regression head sees F_s (2r values)
    old = create_regressor("mlp", semantic="flatten").build({SEQUENCE: [T, R2]})
    assert isinstance(old.semantic, FlattenSemanticMLP)
    with pytest.raises(RegressorError, match="'semantic' must be one of: time, flatten"):
        create_regressor("mlp", semantic="attention")


# ------------------------------------------------------------------ eqs. 10-13


def _maps(b=4, k=3, seed=0):
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.normal(size=(b, k, *MAP)).astype(np.float16))


def test_fusion_concatenates_fs_and_the_flattened_clip_averaged_score_map():
    torch.manual_seed(0)
    net = FusedNet(T, R2, MAP, hidden=9, semantic_hidden=5, spatial_hidden=4, dropout=0.0,
                   spatial_dropout=0.5).eval()
    seq, maps = _seq(), _maps()
    with torch.no_grad():
        f_sp = net.spatial_vector(maps)
        per_clip = torch.stack([net.spatial(maps[:, k].float())[:, 0] for k in range(3)], 1)
        expected = per_clip.mean(1).flatten(1)  # eq. 11: Flatten(mean over clips)
        torch.testing.assert_close(f_sp, expected)
        assert f_sp.shape == (4, 2 * 3 * 3)  # one value per position T' x H' x W'
        fused = torch.cat([net.semantic(seq), f_sp], 1)  # eq. 12
        assert net.head.fc1.in_features == R2 + 18
        torch.testing.assert_close(net(seq, maps), net.head(fused))  # eq. 13
    assert np.ptp(per_clip.numpy(), axis=1).max() > 1e-3  # the clips differ


def test_mean_pool_gives_fastvqas_score():
    torch.manual_seed(2)
    net = FusedNet(T, R2, MAP, 9, 5, 4, 0.0, 0.5, spatial_pool="mean").eval()
    maps = _maps(seed=3)
    with torch.no_grad():
        torch.testing.assert_close(net.spatial_vector(maps)[:, 0],
                                   net.spatial.score_clips(maps.float()))
    assert net.head.fc1.in_features == R2 + 1


def _table(n=40, seed=0) -> FeatureTable:
    rng = np.random.default_rng(seed)
    seq = rng.normal(size=(n, T, R2)).astype(np.float32)
    maps = rng.normal(size=(n, 2, *MAP)).astype(np.float16)
    quality = seq[:, :, 0].mean(1) + maps[:, :, 0].astype(np.float32).mean(axis=(1, 2, 3, 4))
    mos = 1 + 4 * (quality - quality.min()) / np.ptp(quality)
    return FeatureTable([f"v{i}" for i in range(n)], mos, "1-5",
                        {SEQUENCE: seq, SPATIAL_CLIP_MAPS: maps})


@pytest.fixture()
def head_checkpoint(tmp_path):
    gen = torch.Generator().manual_seed(5)
    state = {"vqa_head.fc_hid.weight": torch.randn(4, 16, 1, 1, 1, generator=gen),
             "vqa_head.fc_hid.bias": torch.randn(4, generator=gen),
             "vqa_head.fc_last.weight": torch.randn(1, 4, 1, 1, 1, generator=gen),
             "vqa_head.fc_last.bias": torch.randn(1, generator=gen),
             "fragments_backbone.norm.weight": torch.ones(16)}
    path = tmp_path / "FAST_VQA_small.pth"
    torch.save({"state_dict": state}, path)
    return path, state


def test_spatial_head_starts_from_a_fastvqa_checkpoint_and_can_stay_frozen(head_checkpoint,
                                                                           tmp_path):
    path, state = head_checkpoint
    table = _table()
    params = dict(epochs=3, batch_size=8, spatial_hidden=4, spatial_init=str(path))
    frozen = create_regressor("fused", freeze_spatial=True, spatial_pool="mean", **params)
    info = frozen.fit(table.take(range(30)), table.take(range(30, 40)))
    assert info["spatial_init"]["format"] == "fastvqa" and info["spatial_frozen"] is True
    head = frozen._net.spatial
    torch.testing.assert_close(head.fc_hid.weight, state["vqa_head.fc_hid.weight"])
    torch.testing.assert_close(head.fc_last.bias, state["vqa_head.fc_last.bias"])
    # the frozen head on raw maps gives the 'fastvqa' regressor's score, video for video
    fastvqa = create_regressor("fastvqa", checkpoint=str(path))
    fastvqa.fit(table)
    maps = torch.from_numpy(table.inputs[SPATIAL_CLIP_MAPS])
    with torch.no_grad():
        frozen._net.eval()
        np.testing.assert_allclose(frozen._net.spatial_vector(maps)[:, 0].numpy(),
                                   fastvqa.predict_unit(table), rtol=1e-5, atol=1e-6)
    # trained (not frozen): the head moves away from the checkpoint
    tuned = create_regressor("fused", **params)
    tuned.fit(table.take(range(30)), table.take(range(30, 40)))
    assert not torch.equal(tuned._net.spatial.fc_hid.weight, state["vqa_head.fc_hid.weight"])
    # a saved model needs no checkpoint to load
    folder = tuned.save(tmp_path / "fused")
    path.unlink()
    np.testing.assert_allclose(load_regressor(folder).predict(table), tuned.predict(table))


def test_clip_maps_reach_the_head_raw():
    table = _table()
    model = create_regressor("fused", epochs=1, batch_size=8, spatial_hidden=4)
    model.fit(table.take(range(30)), table.take(range(30, 40)))
    state = model._state()
    assert "scaler.sequence.mean" in state and not any("spatial_clip_maps" in k for k in state)
    raw = model._standardise(table.inputs)[SPATIAL_CLIP_MAPS]
    assert raw is table.inputs[SPATIAL_CLIP_MAPS]  # no copy, still float16


@pytest.mark.parametrize("params, message", [
    ({"freeze_spatial": True}, "freeze_spatial needs spatial_init"),
    ({"spatial_pool": "max"}, "'spatial_pool' must be one of: flatten, mean"),
    ({"spatial_dropout": 1.0}, r"'spatial_dropout' must be a number in \[0, 1\)"),
])
def test_bad_fused_parameters(params, message):
    with pytest.raises(RegressorError, match=message):
        create_regressor("fused", **params)


def test_checkpoint_head_of_another_size_is_refused(head_checkpoint):
    path, _ = head_checkpoint
    model = create_regressor("fused", epochs=1, batch_size=8, spatial_init=str(path))
    with pytest.raises(RegressorError, match="is 16 -> 4 channels.*16 -> 64"):
        model.fit(_table())  # spatial_hidden 64 (FAST-VQA's) but this head has 4
