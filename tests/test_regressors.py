"""Regressors: registry, learning, save/load without pickle, and a store of the real sample videos.

The sample store holds features computed from real decoded frames of the ten sample
videos (simple per-frame image statistics in place of CLIP scores, area-pooled frames in
place of Swin maps), in the store layout of the semantic and spatial branches. Five of the
videos have a MOS (three KoNViD-1k on 1-5, two LSVQ on 0-100).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import (
    FAST_TORCH,
    FAST_VSFA,
    N_FRAMES,
    N_SCORES,
    build_sample_store,
    synthetic_table,
)
from vqa_pipe.pipeline.feature_table import (
    FLAT,
    SEQUENCE,
    SPATIAL_CLIP_MAPS,
    SPATIAL_MAPS,
    FeatureError,
    FeatureTable,
    TableSpec,
    load_table,
)
from vqa_pipe.pipeline.metrics import srocc
from vqa_pipe.pipeline.regressors import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    RegressorError,
    create_regressor,
    get_regressor,
    list_regressors,
    load_regressor,
)

ALL = ["fused", "gru", "mlp", "ridge", "svr", "vsfa"]  # the regressors that learn from MOS
TORCH = ("mlp", "gru", "fused", "vsfa")
REGISTRY = sorted(ALL + ["fastvqa"])  # fastvqa: FAST-VQA's own head (tests/test_fastvqa.py)
@pytest.fixture(scope="module")
def sample_store(sample_videos, tmp_path_factory):
    return build_sample_store(sample_videos, tmp_path_factory.mktemp("sample_store"))


def _params(name: str) -> dict:
    if name == "vsfa":
        return dict(FAST_VSFA)
    return dict(FAST_TORCH) if name in TORCH else {}


# --------------------------------------------------------------------------- registry
def test_registry_lists_every_regressor_and_names_bad_choices():
    assert list_regressors() == sorted(REGISTRY + ["clipvqa"])  # clipvqa: tests/test_clipvqa.py
    with pytest.raises(RegressorError, match="unknown regressor 'xgb'; valid: clipvqa, fastvqa"):
        get_regressor("xgb")
    with pytest.raises(RegressorError, match="has no parameter.*lr.*valid: C, draws, epsilon"):
        create_regressor("svr", lr=0.1)
    with pytest.raises(RegressorError, match="parameter 'loss' must be one of: mono.lin"):
        create_regressor("mlp", loss="huber")
    with pytest.raises(RegressorError, match="must be fitted"):
        create_regressor("ridge").predict(synthetic_table(20))


@pytest.mark.parametrize("name", ALL)
def test_every_regressor_learns_and_round_trips(name, tmp_path):
    table = synthetic_table()
    train, val, test = table.take(range(160)), table.take(range(160, 200)), table.take(
        range(200, 240))
    model = create_regressor(name, **_params(name))
    info = model.fit(train, val)
    pred = model.predict(test)
    # the models see (some of) the inputs that make the MOS: rank order must follow it
    assert srocc(test.mos, pred) > 0.7, info
    assert info["n_train"] == 160 and info["n_val"] == 40
    folder = model.save(tmp_path / name)
    assert sorted(p.name for p in folder.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    config = json.loads((folder / CONFIG_FILE).read_text())
    assert config["regressor"] == name and config["fit_info"]
    loaded = load_regressor(folder)
    np.testing.assert_array_equal(loaded.predict(test), pred)


def test_weights_file_is_safetensors_not_pickle(tmp_path):
    model = create_regressor("svr")
    table = synthetic_table(60)
    model.fit(table.take(range(40)), table.take(range(40, 60)))
    model.save(tmp_path / "m")
    head = (tmp_path / "m" / WEIGHTS_FILE).read_bytes()[:16]
    assert not head.startswith(b"\x80")  # a pickle stream starts with PROTO
    from safetensors.numpy import load_file

    tensors = load_file(str(tmp_path / "m" / WEIGHTS_FILE))
    assert {"support_vectors", "dual_coef", "intercept", "gamma", "scaler.mean"} <= set(tensors)


def test_svr_rebuilt_from_weights_predicts_like_scikit_learn(tmp_path):
    from safetensors.numpy import load_file
    from sklearn.svm import SVR
    from vqa_pipe.pipeline.regressors import Standardizer, TargetScaler

    table = synthetic_table(120, seed=3)
    train, val, test = table.take(range(80)), table.take(range(80, 100)), table.take(
        range(100, 120))
    model = create_regressor("svr")
    info = model.fit(train, val)
    model.save(tmp_path / "svr")
    tensors = load_file(str(tmp_path / "svr" / WEIGHTS_FILE))
    scaler = Standardizer.from_state(tensors, "scaler")
    target = TargetScaler.from_state(tensors)
    # scikit-learn's own SVR on the same inputs: refitted on train + validation
    both = table.take(range(100))
    ref = SVR(C=info["C"], gamma=info["gamma"], epsilon=0.1).fit(
        scaler.transform(both.inputs[FLAT]).astype(np.float64),
        target.transform(both.unit_mos))
    expected = target.inverse(ref.predict(scaler.transform(test.inputs[FLAT]).astype(np.float64)))
    np.testing.assert_allclose(load_regressor(tmp_path / "svr").predict_unit(test), expected,
                               rtol=1e-9, atol=1e-9)
    assert info["n_support"] == len(ref.support_)


def test_svr_searches_by_cv_on_the_training_part_or_on_validation():
    table = synthetic_table(100, seed=4)
    # the default (VIDEVAL/RAPIQUE): 3-fold CV on train + validation, 10 random grid points
    info = create_regressor("svr").fit(table.take(range(60)), table.take(range(60, 80)))
    assert info["n_fits"] == 30 and info["refit_on"] == "train+val"
    assert info["search"] == "3-fold CV, 10 of 100 grid points" and info["search_videos"] == 80
    assert len(info["candidates"]) == 10 and info["target"] == "mos (1-5)"
    assert create_regressor("svr").fit(table.take(range(80)))["search_videos"] == 80
    # the single-holdout search is kept as an option, and needs its validation part
    with pytest.raises(RegressorError, match="search='holdout' chooses C and gamma on a "
                                             "validation part"):
        create_regressor("svr", search="holdout").fit(table.take(range(80)))
    held = create_regressor("svr", search="holdout").fit(table.take(range(60)),
                                                         table.take(range(60, 80)))
    assert held["search"] == "validation holdout" and held["search_videos"] == 60
    assert held["refit_on"] == "train+val" and held["n_fits"] > 10
    model = create_regressor("svr", C=4.0, gamma=0.05)
    fixed = model.fit(table.take(range(80)))  # fixed hyper-parameters: no search at all
    assert fixed["C"] == 4.0 and fixed["gamma"] == 0.05 and "n_fits" not in fixed


def test_predictions_are_on_each_videos_own_scale():
    base = synthetic_table(200, seed=5)
    unit = base.unit_mos
    scales = ["1-5" if i % 2 else "0-100" for i in range(200)]
    mos = np.where(np.array(scales) == "1-5", 1 + 4 * unit, 100 * unit)
    mixed = FeatureTable(base.video_ids, mos, scales, dict(base.inputs), dataset="mixed")
    model = create_regressor("ridge")
    model.fit(mixed.take(range(120)), mixed.take(range(120, 160)))
    test = mixed.take(range(160, 200))
    pred = model.predict(test)
    hundred = np.array(test.scales) == "0-100"
    assert pred[hundred].min() > 5 and pred[~hundred].max() < 6
    np.testing.assert_allclose(model.predict_unit(test)[hundred] * 100, pred[hundred])
    assert np.corrcoef(pred[hundred], test.mos[hundred])[0, 1] > 0.9


# --------------------------------------------------------------------------- real sample store
def _roles(name):
    return get_regressor(name).roles


@pytest.mark.parametrize("name", ALL)
def test_every_regressor_trains_and_predicts_on_the_sample_store(name, sample_store, tmp_path):
    store, manifest = sample_store
    table = load_table(store, manifest, _roles(name), TableSpec(n_frames=N_FRAMES))
    assert len(table) == 5 and "5 videos have no MOS and are left out" in table.notes
    train = table.subset(["konvid_10053703034", "lsvq_1724", "konvid_5115335471"])
    val = table.subset(["konvid_3339962845", "lsvq_17734"])
    params = dict(_params(name), epochs=5, batch_size=4) if name in TORCH else {}
    model = create_regressor(name, **params)
    model.fit(train, val)
    pred = model.predict(table)
    assert pred.shape == (5,) and np.all(np.isfinite(pred))
    lsvq = np.array([v.startswith("lsvq") for v in table.video_ids])
    # each prediction is on its own video's scale: 0-100 for LSVQ, about 1-5 for KoNViD
    assert pred[lsvq].min() > 5 and pred[~lsvq].max() < 7
    loaded = load_regressor(model.save(tmp_path / name))
    np.testing.assert_array_equal(loaded.predict(table), pred)


def test_sample_store_inputs_have_the_documented_shapes(sample_store):
    store, manifest = sample_store
    table = load_table(store, manifest, [FLAT, SEQUENCE, SPATIAL_MAPS, SPATIAL_CLIP_MAPS],
                       TableSpec(n_frames=16))
    assert table.input_shapes() == {
        FLAT: [2 * N_SCORES + 3],  # semantic mean+std, then spatial pooled
        SEQUENCE: [16, N_SCORES],  # 8 frames interpolated to 16
        SPATIAL_MAPS: [3, 2, 4, 4],
        SPATIAL_CLIP_MAPS: [2, 3, 2, 4, 4],  # per clip, as stored
    }
    assert table.inputs[SPATIAL_CLIP_MAPS].dtype == np.float16
    np.testing.assert_allclose(table.inputs[SPATIAL_CLIP_MAPS].astype(np.float32).mean(axis=1),
                               table.inputs[SPATIAL_MAPS], rtol=1e-6)
    assert table.info["flat_layout"] == [["semantic", "frame_scores", 12],
                                         ["spatial", "clip_pooled", 3]]
    assert sorted(set(table.scales)) == ["0-100", "1-5"]


@pytest.mark.parametrize("name, branch", [("mlp", "semantic"), ("fused", "spatial")])
def test_missing_feature_group_is_named(name, branch, sample_videos, tmp_path):
    other = "spatial" if branch == "semantic" else "semantic"
    store, manifest = build_sample_store(sample_videos, tmp_path, branches=(other,))
    with pytest.raises(FeatureError, match=f"regressor '{name}' needs the '{branch}' branch"):
        load_table(store, manifest, _roles(name), who=f"regressor '{name}'")
    table = load_table(store, manifest,
                       [SEQUENCE if other == "semantic" else SPATIAL_CLIP_MAPS])
    with pytest.raises(FeatureError, match=f"regressor '{name}' needs the '{branch}' branch"):
        create_regressor(name).fit(table, table)


@pytest.mark.parametrize("name", ["mlp", "clipvqa"])
def test_torch_heads_train_on_the_device_asked_for(name):
    """device=cuda trains on the GPU where there is one (and gives the CPU's model), and is a
    clear error where there is none."""
    import torch
    from vqa_pipe.pipeline.errors import VqaPipeError

    if name == "clipvqa":
        from helpers import FAST_CLIPVQA, toy_table

        table, params = toy_table(32), dict(FAST_CLIPVQA, epochs=2)
    else:
        table, params = synthetic_table(60), dict(FAST_TORCH, epochs=3)
    if not torch.cuda.is_available():
        with pytest.raises(VqaPipeError, match="no CUDA device"):
            create_regressor(name, device="cuda", **params).fit(table)
        return
    cpu = create_regressor(name, device="cpu", **params)
    gpu = create_regressor(name, device="cuda", **params)
    cpu.fit(table)
    gpu.fit(table)
    np.testing.assert_allclose(gpu.predict(table), cpu.predict(table), atol=0.05)
