"""Metrics: hand-computed values, the logistic mapping (VIDEVAL's fit, fixtures in
tests/fixtures/videval), the honest headline PLCC, and DOVER's published results."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from scipy import stats
from vqa_pipe.pipeline.metrics import (
    MIN_LOGISTIC_N,
    MetricError,
    evaluate,
    fit_logistic,
    krocc,
    logistic4,
    plcc,
    rmse,
    safe_evaluate,
    srocc,
    summarize,
)


def test_hand_computed_values():
    mos = [1, 2, 3, 4]
    pred = [1, 3, 2, 4]
    # ranks differ by one swap: rho = 1 - 6 * (1 + 1) / (4 * 15) = 0.8
    assert srocc(mos, pred) == pytest.approx(0.8)
    # 5 concordant and 1 discordant of 6 pairs: tau = 4 / 6
    assert krocc(mos, pred) == pytest.approx(4 / 6)
    # centred: (-1.5,-.5,.5,1.5) . (-1.5,.5,-.5,1.5) = 4, both norms^2 = 5
    assert plcc(mos, pred) == pytest.approx(0.8)
    assert rmse(mos, pred) == pytest.approx(math.sqrt(0.5))
    assert srocc(mos, mos[::-1]) == pytest.approx(-1.0)


def test_constant_prediction_gives_nan_not_a_crash():
    assert math.isnan(srocc([1, 2, 3], [2, 2, 2]))
    assert math.isnan(plcc([1, 2, 3], [2, 2, 2]))
    out = evaluate([1, 2, 3, 4], [2, 2, 2, 2])
    assert math.isnan(out["srocc"]) and not out["logistic_fitted"]


@pytest.mark.parametrize(
    "mos, pred, message",
    [
        ([1, 2, 3], [1, 2], "3 MOS values but 2 predictions"),
        ([1, 2, float("nan")], [1, 2, 3], "NaN"),
        ([1, 2], [1, 2], "at least 3"),
    ],
)
def test_bad_inputs_are_refused(mos, pred, message):
    with pytest.raises(MetricError, match=message):
        evaluate(mos, pred)


def test_logistic_mapping_recovers_a_logistic_relation():
    rng = np.random.default_rng(0)
    pred = rng.uniform(-3, 3, 300)
    mos = logistic4(pred, 4.5, 1.2, 0.3, 0.7)
    fit = fit_logistic(pred, mos)
    assert fit.fitted
    assert np.allclose(fit(pred), mos, atol=1e-4)
    out = evaluate(mos, pred)
    # the mapping is what makes PLCC/RMSE fair to a non-linear (but monotonic) predictor
    assert out["plcc_logistic"] == pytest.approx(1.0, abs=1e-6)
    assert out["rmse_logistic"] == pytest.approx(0.0, abs=1e-3)
    assert out["plcc"] < 0.99  # linear: the predictions as they are
    assert out["srocc"] == pytest.approx(1.0)


def test_logistic_mapping_handles_decreasing_predictors_and_units():
    rng = np.random.default_rng(1)
    pred = rng.normal(size=200) * 1000  # units far from MOS
    mos = 3 - np.tanh(pred / 1000) + rng.normal(scale=0.05, size=200)
    out = evaluate(mos, pred)
    assert out["logistic_fitted"]
    assert out["plcc_logistic"] > 0.97  # a decreasing relation is mapped: positive
    assert out["srocc"] < -0.9 and out["plcc"] < -0.9  # rank and linear keep their sign


def test_headline_plcc_shows_no_signal_where_the_logistic_one_does_not():
    # predictions with no relation to the MOS, on test parts of 10 videos (the demo's size):
    # the logistic fitted on those 10 points makes PLCC look like ~0.5, the linear PLCC
    # (the headline) stays near 0, as SROCC does
    rng = np.random.default_rng(0)
    runs = [evaluate(rng.uniform(1, 5, 10), rng.normal(size=10)) for _ in range(200)]
    linear = np.median([r["plcc"] for r in runs])
    logistic = np.median([r["plcc_logistic"] for r in runs])
    assert abs(linear) < 0.1 and abs(np.median([r["srocc"] for r in runs])) < 0.1
    assert logistic > 0.35
    # with signal both agree closely on a large test part
    x = rng.normal(size=500)
    out = evaluate(3 + x + rng.normal(0, 0.3, 500), x)
    assert out["plcc"] == pytest.approx(out["plcc_logistic"], abs=0.01)


def test_headline_is_labelled_in_the_summary_table():
    from vqa_pipe.pipeline.report import format_summary

    rng = np.random.default_rng(1)
    rows = [evaluate(rng.uniform(1, 5, 10), rng.normal(size=10)) for _ in range(10)]
    text = format_summary({"test": summarize(rows)})
    header = text.splitlines()[0]
    assert header.index("PLCC (linear)") < header.index("PLCC (logistic)")
    assert "SROCC" in header and "videos" in header


@pytest.mark.parametrize("n", [3, 4])
def test_logistic_metrics_are_undefined_below_five_videos_not_a_crash(n):
    out = evaluate([1.0, 2.5, 4.0, 3.0][:n], [0.1, 0.2, 0.5, 0.3][:n])
    assert n < MIN_LOGISTIC_N
    assert math.isnan(out["plcc_logistic"]) and math.isnan(out["rmse_logistic"])
    assert "at least 5 videos" in out["logistic_note"]
    assert out["srocc"] == pytest.approx(1.0) and not math.isnan(out["plcc"])
    with pytest.raises(MetricError, match="at least 5"):
        fit_logistic([0.1, 0.2, 0.5], [1, 2, 3])
    two = safe_evaluate([1, 2], [1, 2])  # not even a correlation: NaN and the reason
    assert math.isnan(two["srocc"]) and "at least 3" in two["error"]


def test_summarize_median_and_spread():
    rows = [{"srocc": v, "plcc": v + 0.1} for v in (0.5, 0.7, 0.6, float("nan"))]
    out = summarize(rows)
    assert out["srocc"]["median"] == pytest.approx(0.6)
    assert out["srocc"]["std"] == pytest.approx(np.std([0.5, 0.7, 0.6]))
    assert out["srocc"]["n"] == 3 and out["srocc"]["n_nan"] == 1
    assert out["plcc"]["max"] == pytest.approx(0.8)
    with pytest.raises(MetricError):
        summarize([])


# DOVER (trained on LSVQ) published PLCC, "Score-level Fusion / Directly training on LSVQ and
# testing on other datasets" table of https://github.com/VQAssessment/DOVER README.md
# (commit 411c62b, also in ec9f3a6; LIVE-VQC is 0.854 there, 0.855 in the older table).
DOVER_PUBLISHED_PLCC = {"kv1k": 0.883, "livevqc": 0.854, "ltest": 0.889, "l1080p": 0.830}
DOVER_TOLERANCE = 0.005  # published figures are rounded to 3 decimals


def _dover_fused(path):
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    mos = np.array([float(r["mos"]) for r in rows])
    aes = np.array([float(r["aesthetic"]) for r in rows])
    tech = np.array([float(r["technical"]) for r in rows])

    def z(x):
        return (x - x.mean()) / x.std()

    return mos, z(aes) + z(tech)  # the reference README: sum of the two z-scored columns


@pytest.mark.parametrize("name", sorted(DOVER_PUBLISHED_PLCC))
def test_reproduces_dover_published_results(shared_data, name):
    mos, fused = _dover_fused(shared_data / "reference" / "dover" / f"{name}.csv")
    out = evaluate(mos, fused)
    # DOVER reports PLCC of the fused score as is (no logistic mapping): our linear PLCC
    assert out["plcc"] == pytest.approx(DOVER_PUBLISHED_PLCC[name], abs=DOVER_TOLERANCE)
    # the mapped PLCC is as good or better (to the optimiser's tolerance: VIDEVAL's start
    # may end a hair short of the line it contains), and rank metrics match scipy's
    assert out["plcc_logistic"] >= out["plcc"] - 1e-6
    assert out["srocc"] == pytest.approx(stats.spearmanr(mos, fused)[0], abs=1e-12)
    assert out["krocc"] == pytest.approx(stats.kendalltau(mos, fused)[0], abs=1e-12)


# --------------------------------------------------------------------------- VIDEVAL fixture
def _videval_reference() -> dict:
    import json
    from pathlib import Path

    path = Path(__file__).parent / "fixtures" / "videval" / "reference.json"
    return json.loads(path.read_text())["cases"]


STUCK_IN_VIDEVAL = {"large_units_200"}
"""Cases where VIDEVAL's fit stays at its slope start 0.5 (a step function, much worse than
a line); ours restarts scale-free and ends better (documented departure)."""


@pytest.mark.parametrize("case", [c for c, _ in __import__(
    "fixtures.videval.seeded", fromlist=["CASES"]).CASES])
def test_logistic_fit_matches_videval(case):
    from fixtures.videval import seeded

    pred, mos = seeded.vectors()[case]
    ref = _videval_reference()[case]
    assert "failed" not in ref, ref
    fit = fit_logistic(pred, mos)
    out = evaluate(mos, pred)
    assert out["srocc"] == pytest.approx(ref["srocc"], abs=1e-12)
    assert out["krocc"] == pytest.approx(ref["krocc"], abs=1e-12)
    theirs = np.array(ref["mapped"])
    if case in STUCK_IN_VIDEVAL:
        assert ref["popt"][3] == 0.5  # never moved from the start
        assert np.sum((fit(pred) - mos) ** 2) < 0.5 * np.sum((theirs - mos) ** 2)
        assert out["plcc_logistic"] > ref["plcc"] + 0.05
        return
    assert fit.fitted
    np.testing.assert_allclose([fit.beta1, fit.beta2, fit.beta3, fit.beta4], ref["popt"],
                               rtol=1e-6)
    np.testing.assert_allclose(fit(pred), theirs, rtol=1e-9, atol=1e-9 * np.ptp(mos))
    assert out["plcc_logistic"] == pytest.approx(ref["plcc"], abs=1e-9)
    assert out["rmse_logistic"] == pytest.approx(ref["rmse"], rel=1e-9)
