"""Regressor parameters (declared once, checked before training), the SVR protocol (CV search
as scikit-learn's, kernel reuse, the large-N paths) and the torch heads' refit."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import FAST_TORCH, synthetic_table
from vqa_pipe.pipeline.feature_table import FLAT, FeatureTable
from vqa_pipe.pipeline.metrics import srocc
from vqa_pipe.pipeline.regressors import (
    CONFIG_FILE,
    Param,
    Regressor,
    RegressorError,
    create_regressor,
    describe_params,
    get_regressor,
    list_regressors,
    load_regressor,
)
from vqa_pipe.pipeline.regressors.svr import cv_folds, svr_cv_search


# --------------------------------------------------------------------------- validation
@pytest.mark.parametrize("name, params, message", [
    ("svr", {"C": "abc"}, "parameter 'C' must be a number > 0 or null (searched); got 'abc'"),
    ("svr", {"epsilon": float("nan")}, "parameter 'epsilon' must be a number >= 0; got nan"),
    ("svr", {"gamma": [1, 2]}, "parameter 'gamma' must be a number > 0 or null"),
    ("svr", {"seed": "abc"}, "parameter 'seed' must be an integer >= 0; got 'abc'"),
    ("svr", {"C": -1}, "parameter 'C' must be a number > 0"),
    ("svr", {"log2_c": 3}, "parameter 'log2_c' must be [low, high] with low <= high"),
    ("svr", {"log2_gamma": [2, -2]}, "parameter 'log2_gamma' must be [low, high]"),
    ("svr", {"search": "grid"}, "parameter 'search' must be one of: cv, holdout"),
    ("svr", {"folds": 1}, "parameter 'folds' must be an integer >= 2"),
    ("svr", {"kernel_reuse": "yes"}, "parameter 'kernel_reuse' must be true or false"),
    ("ridge", {"alpha": -1}, "parameter 'alpha' must be a number >= 0 or null"),
    ("ridge", {"n_alphas": "many"}, "parameter 'n_alphas' must be an integer >= 1"),
    ("mlp", {"epochs": 2.5}, "parameter 'epochs' must be an integer >= 1; got 2.5"),
    ("mlp", {"epochs": True}, "parameter 'epochs' must be an integer >= 1; got True"),
    ("mlp", {"epochs": {"n": 3}}, "parameter 'epochs' must be an integer >= 1; got {'n': 3}"),
    ("mlp", {"lr": 0}, "parameter 'lr' must be a number > 0"),
    ("mlp", {"dropout": 1.0}, "parameter 'dropout' must be a number in [0, 1)"),
    ("fused", {"threads": -2}, "parameter 'threads' must be an integer >= 0"),
    ("gru", {"hidden": 0}, "parameter 'hidden' must be an integer >= 1; got 0"),
    ("gru", {"hidden": -1}, "parameter 'hidden' must be an integer >= 1; got -1"),
    ("gru", {"pooling": "max"}, "parameter 'pooling' must be one of: vsfa, mean"),
    ("gru", {"gamma": 2}, "parameter 'gamma' must be a number in [0, 1]"),
    ("vsfa", {"tau": 0}, "parameter 'tau' must be an integer >= 1"),
    ("vsfa", {"target": "mean"}, "parameter 'target' must be one of: max, z"),
])
def test_bad_values_give_one_line_naming_the_parameter_and_the_valid_range(name, params,
                                                                           message):
    with pytest.raises(RegressorError) as err:
        create_regressor(name, **params)
    text = str(err.value)
    assert message in text and "\n" not in text
    assert text.startswith(f"regressor '{name}': ")


def test_values_are_converted_to_their_declared_type():
    p = create_regressor("svr", epsilon="1e-3", folds=4.0, C="2").params
    assert p["epsilon"] == 0.001 and isinstance(p["epsilon"], float)  # YAML reads 1e-3 as text
    assert p["folds"] == 4 and isinstance(p["folds"], int)
    assert p["C"] == 2.0 and p["log2_c"] == [1.0, 10.0]
    assert create_regressor("mlp", epochs="30").params["epochs"] == 30
    with pytest.raises(RegressorError, match="'epochs' must be an integer"):
        create_regressor("mlp", epochs="2.5")


def test_every_declared_default_is_valid_and_described():
    for name in list_regressors():
        cls = get_regressor(name)
        assert cls.resolve_params({}) == cls.default_params() | cls.resolve_params({})
        lines = describe_params(name)
        assert len(lines) == len(cls.default_params())
    svr = "\n".join(describe_params("svr"))
    assert "C: a number > 0 or null (searched) (default null). fixed C." in svr
    assert "search: one of: cv, holdout (default \"cv\")" in svr


def test_plain_defaults_dicts_still_work():
    class Legacy(Regressor):  # a regressor written before Param (not registered)
        name = "legacy"
        roles = (FLAT,)
        defaults = {"k": 3}

        def _check_params(self):
            if not isinstance(self.params["k"], int):
                raise RegressorError("legacy k must be an integer")

        def _fit(self, inputs, y, vi, vy):
            return {}

        def _predict_unit(self, inputs):
            return np.zeros(len(inputs[FLAT]))

        def _state(self):
            return {}

        def _set_state(self, tensors):
            pass

    assert Legacy().params == {"k": 3} and Legacy(k=5).params == {"k": 5}
    with pytest.raises(RegressorError, match="has no parameter.*z; valid: k"):
        Legacy(z=1)
    with pytest.raises(RegressorError, match="legacy k must be an integer"):
        Legacy(k="x")
    # every built-in regressor declares its parameters: each gets its valid values in help
    mlp = create_regressor("mlp")
    assert mlp.params["hidden"] == 128 and mlp.params["refit"] is True
    assert "hidden: an integer >= 1 (default 128). width of the regression head." in (
        describe_params("mlp"))


def test_saved_model_records_the_resolved_parameters(tmp_path):
    table = synthetic_table(80)
    model = create_regressor("svr", epsilon="0.2", draws=4)
    model.fit(table.take(range(60)))
    config = json.loads((model.save(tmp_path / "m") / CONFIG_FILE).read_text())
    assert config["params"]["epsilon"] == 0.2 and config["params"]["folds"] == 3
    assert set(config["params"]) == set(get_regressor("svr").default_params())
    assert config["train_scales"] == ["1-5"]
    assert load_regressor(tmp_path / "m").params == model.params


def test_a_bad_param_declaration_is_refused():
    with pytest.raises(RegressorError, match="unknown kind"):
        Param("x", "list", [])
    with pytest.raises(RegressorError, match="needs choices"):
        Param("x", "choice", "a")


# --------------------------------------------------------------------------- svr search
def _regression(n=150, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (n, 6))
    y = 3 + np.tanh(3 * (x[:, :3].sum(1) - 1.5)) + rng.normal(0, 0.2, n)
    return x, y


def test_cv_search_scores_every_point_as_scikit_learn_does():
    from sklearn.model_selection import GridSearchCV
    from sklearn.svm import SVR

    x, y = _regression()
    ours = svr_cv_search(x, y, log2_c=(1, 4), log2_gamma=(-3, 0), draws=0, folds=3)
    grid = {"C": 2.0 ** np.arange(1, 5), "gamma": 2.0 ** np.arange(-3, 1)}
    ref = GridSearchCV(SVR(), grid, cv=3).fit(x, y)
    theirs = {(np.log2(p["C"]), np.log2(p["gamma"])): s
              for p, s in zip(ref.cv_results_["params"], ref.cv_results_["mean_test_score"])}
    assert len(ours["candidates"]) == 16 and ours["n_fits"] == 48
    for c, g, score in ours["candidates"]:  # libsvm stops at tol 1e-3: not bit-identical
        assert score == pytest.approx(theirs[(c, g)], abs=1e-4)
    assert (ours["C"], ours["gamma"]) == (ref.best_params_["C"], ref.best_params_["gamma"])
    assert ours["cv_score"] == pytest.approx(ref.best_score_, abs=1e-4)
    # the same search without kernel reuse: same scores (precomputed kernels are exact)
    plain = svr_cv_search(x, y, log2_c=(1, 4), log2_gamma=(-3, 0), draws=0, folds=3,
                          kernel_reuse=False)
    assert not plain["kernel_reuse"] and ours["kernel_reuse"]
    np.testing.assert_allclose([s for *_, s in plain["candidates"]],
                               [s for *_, s in ours["candidates"]], atol=1e-4)


def test_cv_draws_and_folds():
    x, y = _regression(100)
    a = svr_cv_search(x, y, draws=10, seed=1)
    b = svr_cv_search(x, y, draws=10, seed=1)
    c = svr_cv_search(x, y, draws=10, seed=2)
    assert a["candidates"] == b["candidates"] and a["candidates"] != c["candidates"]
    assert a["search"] == "3-fold CV, 10 of 100 grid points" and a["n_fits"] == 30
    assert [len(f) for f in cv_folds(100, 3)] == [34, 33, 33]  # KFold's sizes, in order
    with pytest.raises(RegressorError, match="cannot make 3 folds of 2 videos"):
        cv_folds(2, 3)


def _flat_table(n, seed=0, scale="1-5"):
    x, y = _regression(n, seed)
    mos = (y - 1) / 4 * 100 if scale == "0-100" else y
    return FeatureTable([f"v{i}" for i in range(n)], mos, scale, {FLAT: x.astype(np.float32)})


def test_each_split_draws_its_own_grid_points():
    table = _flat_table(200)
    one = create_regressor("svr").fit(table.take(range(150)))
    two = create_regressor("svr").fit(table.take(range(50, 200)))
    assert one["candidates"] != two["candidates"]  # the seed is mixed with the training MOS
    assert create_regressor("svr").fit(table.take(range(150)))["candidates"] == one[
        "candidates"]


def test_svr_learns_in_mos_units_as_videval_and_says_when_it_cannot():
    table = _flat_table(200, scale="0-100")
    model = create_regressor("svr")
    info = model.fit(table.take(range(150)))
    assert info["target"] == "mos (0-100)"
    assert model._target.transform(np.array([0.5]))[0] == pytest.approx(50.0)  # MOS units
    mixed = FeatureTable(table.video_ids, np.where(np.arange(200) % 2, table.mos, 1 + table.mos
                                                   / 25), ["0-100", "1-5"] * 100,
                         dict(table.inputs))
    info = create_regressor("svr").fit(mixed.take(range(150)))
    assert info["target"].startswith("z (the training part mixes MOS scales 0-100, 1-5")


@pytest.mark.parametrize("large, n_fit", [("subsample", 120), ("nystroem", 300),
                                          ("exact", 300)])
def test_large_training_parts_take_a_bounded_path(large, n_fit, tmp_path):
    table = _flat_table(360, seed=3)
    model = create_regressor("svr", max_fit=120, large=large, nystroem_components=60,
                             max_search=150, draws=4)
    info = model.fit(table.take(range(300)))
    assert info["n_fit"] == n_fit and info["n_fit_total"] == 300
    assert info["fit_path"].startswith(large) and info["search_videos"] == 150
    test = table.take(range(300, 360))
    pred = model.predict(test)
    assert srocc(test.mos, pred) > 0.8, info
    if large == "nystroem":
        assert info["n_support"] == 60  # the landmarks
    loaded = load_regressor(model.save(tmp_path / large))
    np.testing.assert_array_equal(loaded.predict(test), pred)


# --------------------------------------------------------------------------- torch refit
def test_torch_heads_refit_on_train_and_validation_by_default():
    table = synthetic_table(200, seed=2)
    train, val, test = table.take(range(120)), table.take(range(120, 160)), table.take(
        range(160, 200))
    refit = create_regressor("mlp", **FAST_TORCH)
    info = refit.fit(train, val)
    assert info["refit_on"] == "train+val" and info["refit_epochs"] == info["best_epoch"]
    assert info["n_train"] == 120 and info["n_val"] == 40
    kept = create_regressor("mlp", **FAST_TORCH, refit=False)
    info_kept = kept.fit(train, val)
    assert info_kept["refit_on"] == "train" and info_kept["best_epoch"] == info["best_epoch"]
    assert not np.allclose(refit.predict(test), kept.predict(test))
    assert srocc(test.mos, refit.predict(test)) > 0.7
    # without a validation part there is no epoch to choose, so no refit
    alone = create_regressor("gru", **FAST_TORCH).fit(train)
    assert alone["refit_on"] == "train" and alone["selected_on"] == "last epoch"
