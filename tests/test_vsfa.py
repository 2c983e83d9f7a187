"""``vsfa`` against lidq92/VSFA (fixtures from ``tests/fixtures/vsfa/regenerate.py``): the
temporal pooling and the whole forward pass on seeded weights; VSFA's training recipe as the
defaults; the variable-length ``frames`` role."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fixtures.vsfa import seeded
from helpers import FAST_VSFA, build_sample_store, synthetic_table
from vqa_pipe.pipeline.feature_table import (
    FRAME_COUNTS,
    FRAMES,
    FeatureError,
    FeatureTable,
    load_table,
    pad_frames,
    shapes_match,
)
from vqa_pipe.pipeline.metrics import srocc
from vqa_pipe.pipeline.regressors import create_regressor, load_regressor
from vqa_pipe.pipeline.regressors.gru import temporal_pool
from vqa_pipe.pipeline.regressors.vsfa import VSFANet, vsfa_pool, vsfa_pool_frames

REFERENCE = np.load(seeded.__file__.replace("seeded.py", "reference.npz"))


@pytest.mark.parametrize("case", range(len(seeded.TP_CASES)))
def test_temporal_pooling_matches_vsfa(case):
    q = seeded.tp_inputs()[case]
    n, tau, _, _ = seeded.TP_CASES[case]
    want = REFERENCE[f"tp_{case}"]
    got = vsfa_pool_frames(torch.from_numpy(q)[None], torch.tensor([n]), tau, seeded.BETA)
    np.testing.assert_allclose(got.numpy()[0], want, rtol=1e-6, atol=1e-6)
    # inside a padded batch beside a longer video (whose frames must not leak in)
    longer = torch.linspace(-2.0, 2.0, n + 7)
    batch = torch.zeros(2, n + 7)
    batch[0, :n], batch[1] = torch.from_numpy(q), longer
    got = vsfa_pool_frames(batch, torch.tensor([n, n + 7]), tau, seeded.BETA)
    np.testing.assert_allclose(got.numpy()[0, :n], want, rtol=1e-6, atol=1e-6)
    assert np.all(got.numpy()[0, n:] == 0)
    pooled = vsfa_pool(batch, torch.tensor([n, n + 7]), tau, seeded.BETA)
    assert float(pooled[0]) == pytest.approx(float(want.mean()), abs=1e-6)


@pytest.mark.parametrize("case", range(len(seeded.TP_CASES)))
def test_the_fast_gru_pools_a_whole_video_like_vsfa(case):
    q = seeded.tp_inputs()[case]
    _, tau, _, _ = seeded.TP_CASES[case]
    got = temporal_pool(torch.from_numpy(q)[None], tau, seeded.BETA)
    assert float(got[0]) == pytest.approx(float(REFERENCE[f"tp_{case}"].mean()), abs=1e-6)


def _seeded_net() -> VSFANet:
    net = VSFANet(seeded.N_FEATURES, seeded.REDUCED, seeded.HIDDEN, seeded.TAU, seeded.BETA)
    weights = seeded.weights()
    names = VSFANet.upstream_names()
    assert set(names.values()) == set(weights)  # every weight that reaches the output
    net.load_state_dict({ours: torch.from_numpy(weights[theirs])
                         for ours, theirs in names.items()})
    return net.eval()


def test_forward_matches_vsfa_on_seeded_weights():
    net = _seeded_net()
    x, lengths = seeded.frames()
    with torch.no_grad():
        out = net(torch.from_numpy(x), torch.from_numpy(lengths)).numpy()
        q = net.frame_scores(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(out, REFERENCE["forward"], rtol=1e-5, atol=1e-6)
    for i, n in enumerate(lengths):
        np.testing.assert_allclose(q[i, :n], REFERENCE["frame_scores"][i, :n], rtol=1e-5,
                                   atol=1e-6)
    # each video alone, unpadded, scores the same: padding never reaches a real frame
    with torch.no_grad():
        alone = [float(net(torch.from_numpy(x[i:i + 1, :n]), torch.tensor([n])))
                 for i, n in enumerate(lengths)]
    np.testing.assert_allclose(alone, REFERENCE["forward"], rtol=1e-5, atol=1e-6)


def test_a_broken_pooling_would_be_caught():
    # the fixture distinguishes VSFA's pooling from a plain mean and from another tau
    q = seeded.tp_inputs()[4]
    want = float(REFERENCE["tp_4"].mean())
    assert abs(float(q.mean()) - want) > 1e-3
    other = vsfa_pool(torch.from_numpy(q)[None], torch.tensor([len(q)]), 4, seeded.BETA)
    assert abs(float(other[0]) - want) > 1e-3


def test_defaults_are_vsfa_py():
    p = create_regressor("vsfa").params
    assert (p["reduced"], p["hidden"], p["tau"], p["gamma"]) == (128, 32, 12, 0.5)
    assert (p["loss"], p["optimizer"], p["lr"], p["weight_decay"]) == ("l1", "adam", 1e-5, 0.0)
    assert (p["epochs"], p["batch_size"], p["select_by"]) == (2000, 16, "srocc")
    assert (p["schedule"], p["refit"], p["calibrate"], p["standardize"], p["target"]) == (
        "none", False, False, False, "max")
    # the fast variant keeps its own name and settings
    g = create_regressor("gru").params
    assert (g["reduced"], g["tau"], g["loss"], g["optimizer"]) == (64, 4, "mono+lin", "adamw")


def _variable_length_table(n: int = 200, seed: int = 0) -> FeatureTable:
    rng = np.random.default_rng(seed)
    rows = [rng.uniform(0, 1, (int(rng.integers(3, 25)), 6)).astype(np.float32)
            for _ in range(n)]
    quality = np.array([r[:, 0].mean() - 0.7 * r[:, 2].min() for r in rows])
    mos = 1 + 4 * (quality - quality.min()) / np.ptp(quality)
    return FeatureTable([f"v{i}" for i in range(n)], mos, "1-5",
                        {FRAMES: pad_frames(rows),
                         FRAME_COUNTS: np.array([len(r) for r in rows])})


def test_vsfa_learns_variable_length_videos_and_round_trips(tmp_path):
    table = _variable_length_table()
    model = create_regressor("vsfa", **FAST_VSFA)
    info = model.fit(table.take(range(120)), table.take(range(120, 160)))
    test = table.take(range(160, 200))
    pred = model.predict(test)
    assert srocc(test.mos, pred) > 0.6, info
    assert info["selected_on"] == "validation (SROCC)" and info["refit_on"] == "train"
    assert info["target"].startswith("MOS / 5 ") and info["frames_per_video"][0] >= 3
    assert info["calibration"] == [1.0, 0.0]
    # the label is MOS / max training MOS: predictions are the network output times it
    with torch.no_grad():
        x = test.inputs
        out = model._net(torch.from_numpy(x[FRAMES]), torch.from_numpy(x[FRAME_COUNTS]))
    np.testing.assert_allclose(pred, out.double().numpy() * 5.0, rtol=1e-5)
    # a table padded further (another dataset's longest video) predicts the same
    wider = FeatureTable(test.video_ids, test.mos, test.scales, {
        FRAMES: np.concatenate([x[FRAMES], np.zeros((40, 30, 6), np.float32)], axis=1),
        FRAME_COUNTS: x[FRAME_COUNTS]})
    np.testing.assert_allclose(model.predict(wider), pred, rtol=1e-5, atol=1e-6)
    loaded = load_regressor(model.save(tmp_path / "vsfa"))
    np.testing.assert_array_equal(loaded.predict(wider), model.predict(wider))


def test_vsfa_options_standardise_refit_and_z_target():
    table = _variable_length_table(160, seed=1)
    model = create_regressor("vsfa", **FAST_VSFA, standardize=True, refit=True, target="z",
                             calibrate=True)
    info = model.fit(table.take(range(100)), table.take(range(100, 130)))
    assert info["refit_on"] == "train+val" and info["refit_epochs"] == info["best_epoch"]
    assert info["target"] == "z"
    assert srocc(table.mos[130:], model.predict(table.take(range(130, 160)))) > 0.5


def test_frames_role_from_a_store(sample_videos, tmp_path):
    store, manifest = build_sample_store(sample_videos, tmp_path)
    table = load_table(store, manifest, [FRAMES, FRAME_COUNTS])
    assert table.input_shapes() == {FRAMES: [8, 6], FRAME_COUNTS: []}
    assert table.inputs[FRAME_COUNTS].dtype == np.int64
    assert set(table.inputs[FRAME_COUNTS].tolist()) == {8}
    assert shapes_match(FRAMES, [8, 6], [240, 6]) and not shapes_match(FRAMES, [8, 6], [8, 5])
    with pytest.raises(FeatureError, match="regressor 'vsfa' needs the 'semantic' branch"):
        load_table(build_sample_store(sample_videos, tmp_path / "s",
                                      branches=("spatial",))[0],
                   manifest, [FRAMES], who="regressor 'vsfa'")


def test_synthetic_table_frames_match_the_sequence():
    table = synthetic_table(10)
    np.testing.assert_array_equal(table.inputs[FRAMES][:, :8], table.inputs["sequence"])
