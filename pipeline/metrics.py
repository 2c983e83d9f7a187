"""The field's evaluation metrics: SROCC, KROCC, PLCC and RMSE, linear and after a logistic map.

Two PLCC conventions are in use, and reports show both, labelled:

* ``plcc`` / ``rmse`` (**linear**, the headline): Pearson correlation and RMSE of the
  predictions as the model gives them (on the MOS scale). Pearson correlation does not change
  under a linear rescale, so ``plcc`` is also what FAST-VQA and DOVER report (their
  ``new_train.py`` / ``evaluate`` rescale predictions linearly to the MOS's mean and std, then
  take Pearson). Nothing is fitted to the test part, so a predictor with no signal scores
  about 0 (and can be negative).
* ``plcc_logistic`` / ``rmse_logistic``: after the four-parameter logistic fitted on the test
  part's own predictions and MOS, as VQEG, VIDEVAL, RAPIQUE, VSFA's paper and TLVQM report::

      f(x) = beta2 + (beta1 - beta2) / (1 + exp(-(x - beta3) / |beta4|))

  fitted by least squares from VIDEVAL's start ``[max(MOS), min(MOS), mean(pred), 0.5]``. The
  fit has four free parameters on the very points it scores, so on few videos it overstates
  agreement: on predictions with no signal at all its median is about 0.49 at 10 videos,
  0.30 at 30, 0.18 at 100 (``tests/test_metrics.py``). It is undefined (NaN, with a note)
  under :data:`MIN_LOGISTIC_N` videos.

The logistic map is monotonic, so it never changes SROCC or KROCC.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from vqa_pipe.pipeline.errors import VqaPipeError

METRICS: tuple[str, ...] = ("srocc", "krocc", "plcc", "rmse", "plcc_logistic", "rmse_logistic")
"""Metric names in report order: ``plcc``/``rmse`` linear (as predicted), ``*_logistic``
after the four-parameter logistic."""

HIGHER_IS_BETTER: dict[str, bool] = {
    "srocc": True,
    "krocc": True,
    "plcc": True,
    "rmse": False,
    "plcc_logistic": True,
    "rmse_logistic": False,
}

MIN_LOGISTIC_N = 5
"""Fewest videos the four-parameter logistic is fitted on (more points than parameters);
below it ``plcc_logistic``/``rmse_logistic`` are NaN and ``logistic_note`` says why."""
SMALL_LOGISTIC_N = 50
"""Under this many test videos, reports add a note that the logistic PLCC overstates."""
VIDEVAL_BETA4 = 0.5
"""The slope start VIDEVAL's and RAPIQUE's scripts give ``curve_fit``."""
LINE_TOLERANCE = 1e-3
"""A logistic fit whose squared error exceeds the straight line's by more than this share is
taken as stuck in a bad local minimum (see :func:`fit_logistic`)."""


class MetricError(VqaPipeError):
    """Inputs a metric cannot be computed on (length mismatch, NaN, too few videos)."""


def _pair(mos: Sequence[float] | np.ndarray, pred: Sequence[float] | np.ndarray,
          min_n: int = 3) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(mos, dtype=np.float64).ravel()
    p = np.asarray(pred, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise MetricError(f"{len(y)} MOS values but {len(p)} predictions")
    if len(y) < min_n:
        raise MetricError(f"need at least {min_n} videos to compute a correlation, got {len(y)}")
    bad_y, bad_p = ~np.isfinite(y), ~np.isfinite(p)
    if bad_y.any() or bad_p.any():
        which = "MOS" if bad_y.any() else "predictions"
        idx = np.flatnonzero(bad_y | bad_p)[:5].tolist()
        raise MetricError(f"{which} contain NaN or inf (positions {idx})")
    return y, p


def _nan_if_constant(x: np.ndarray) -> bool:
    return bool(np.ptp(x) == 0)


def srocc(mos: Sequence[float] | np.ndarray, pred: Sequence[float] | np.ndarray) -> float:
    """Spearman rank-order correlation (NaN when either side is constant)."""
    from scipy import stats

    y, p = _pair(mos, pred)
    if _nan_if_constant(y) or _nan_if_constant(p):
        return float("nan")
    return float(stats.spearmanr(y, p)[0])


def krocc(mos: Sequence[float] | np.ndarray, pred: Sequence[float] | np.ndarray) -> float:
    """Kendall rank-order correlation, tau-b (NaN when either side is constant)."""
    from scipy import stats

    y, p = _pair(mos, pred)
    if _nan_if_constant(y) or _nan_if_constant(p):
        return float("nan")
    return float(stats.kendalltau(y, p)[0])


def plcc(mos: Sequence[float] | np.ndarray, pred: Sequence[float] | np.ndarray) -> float:
    """Pearson linear correlation of the values as given (NaN when either side is constant)."""
    y, p = _pair(mos, pred)
    if _nan_if_constant(y) or _nan_if_constant(p):
        return float("nan")
    y0, p0 = y - y.mean(), p - p.mean()
    return float(np.clip((y0 @ p0) / math.sqrt((y0 @ y0) * (p0 @ p0)), -1.0, 1.0))


def rmse(mos: Sequence[float] | np.ndarray, pred: Sequence[float] | np.ndarray) -> float:
    """Root mean squared error, in the MOS's own units."""
    y, p = _pair(mos, pred, min_n=1)
    return float(np.sqrt(np.mean((y - p) ** 2)))


def logistic4(x: np.ndarray, beta1: float, beta2: float, beta3: float, beta4: float) -> np.ndarray:
    """The four-parameter logistic ``beta2 + (beta1 - beta2) / (1 + exp(-(x - beta3)/|beta4|))``."""
    z = -(np.asarray(x, dtype=np.float64) - beta3) / max(abs(beta4), 1e-12)
    return beta2 + (beta1 - beta2) / (1.0 + np.exp(np.clip(z, -500.0, 500.0)))


@dataclass(frozen=True)
class LogisticMap:
    """A fitted four-parameter logistic; ``fitted`` is False when the fit failed and a
    least-squares line was used instead (never silently: :func:`evaluate` reports it)."""

    beta1: float
    beta2: float
    beta3: float
    beta4: float
    fitted: bool = True
    slope: float = 0.0
    intercept: float = 0.0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if not self.fitted:
            return self.slope * np.asarray(x, dtype=np.float64) + self.intercept
        return logistic4(x, self.beta1, self.beta2, self.beta3, self.beta4)


def _curve_fit(p: np.ndarray, y: np.ndarray, start: list[float]) -> LogisticMap | None:
    from scipy.optimize import curve_fit

    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            popt, _ = curve_fit(logistic4, p, y, p0=start, maxfev=100000)
    except (RuntimeError, ValueError, TypeError, FloatingPointError):
        return None
    fit = LogisticMap(*(float(v) for v in popt))
    return fit if np.all(np.isfinite(fit(p))) else None


def fit_logistic(pred: Sequence[float] | np.ndarray,
                 mos: Sequence[float] | np.ndarray) -> LogisticMap:
    """Fit the four-parameter logistic mapping predictions onto MOS (least squares).

    As VIDEVAL and RAPIQUE do: ``scipy.optimize.curve_fit`` (Levenberg-Marquardt) from
    ``beta1 = max(MOS)``, ``beta2 = min(MOS)``, ``beta3 = mean(pred)``, ``beta4 = 0.5``
    (``tests/fixtures/videval``: the same parameters as their code, to float rounding). Where
    that fails, or ends more than :data:`LINE_TOLERANCE` worse than a straight line (stuck:
    VIDEVAL keeps such a fit), a start that does not depend on the predictions' units is
    tried (slope one prediction std, asymptotes
    swapped for a decreasing relation); where that fails too, the least-squares line is used
    (``fitted=False``, never silently: :func:`evaluate` reports it).
    """
    y, p = _pair(mos, pred, min_n=MIN_LOGISTIC_N)
    slope, intercept = np.polyfit(p, y, 1) if np.ptp(p) > 0 else (0.0, float(y.mean()))
    line = LogisticMap(0.0, 0.0, 0.0, 1.0, fitted=False, slope=float(slope),
                       intercept=float(intercept))
    if np.ptp(p) == 0 or np.ptp(y) == 0:
        return line
    line_err = float(np.mean((line(p) - y) ** 2))
    hi, lo = float(y.max()), float(y.min())
    starts = [[hi, lo, float(p.mean()), VIDEVAL_BETA4]]
    starts.append([lo, hi, float(p.mean()), float(p.std())] if slope < 0
                  else [hi, lo, float(p.mean()), float(p.std())])
    for start in starts:
        fit = _curve_fit(p, y, start)
        # A logistic contains the line in the limit, so a converged fit is never noticeably
        # worse than one; one that is (0.1 %) is stuck (e.g. predictions in units far from
        # the 0.5 slope start) and the next start is tried.
        if fit is not None and np.mean((fit(p) - y) ** 2) <= line_err * (1 + LINE_TOLERANCE):
            return fit
    return line


def evaluate(mos: Sequence[float] | np.ndarray, pred: Sequence[float] | np.ndarray) -> dict:
    """All metrics of one prediction set (see the module docstring).

    ``logistic_fitted`` says whether the logistic fit worked (False: the ``*_logistic``
    values used a fitted line, or are NaN when there are fewer than :data:`MIN_LOGISTIC_N`
    videos; ``logistic_note`` then says why).
    """
    from threadpoolctl import threadpool_limits

    y, p = _pair(mos, pred)
    out = {
        "srocc": srocc(y, p),
        "krocc": krocc(y, p),
        "plcc": plcc(y, p),
        "rmse": rmse(y, p),
        "n": int(len(y)),
    }
    if len(y) < MIN_LOGISTIC_N:
        out.update(plcc_logistic=float("nan"), rmse_logistic=float("nan"),
                   logistic_fitted=False,
                   logistic_note=f"the four-parameter logistic needs at least {MIN_LOGISTIC_N} "
                                 f"videos, got {len(y)}: logistic PLCC/RMSE undefined")
        return out
    with threadpool_limits(limits=1, user_api="blas"):  # small least squares: one thread
        mapping = fit_logistic(p, y)
    mapped = mapping(p)
    out.update(plcc_logistic=plcc(y, mapped), rmse_logistic=rmse(y, mapped),
               logistic_fitted=bool(mapping.fitted))
    if not mapping.fitted:
        out["logistic_note"] = "the logistic fit failed; a least-squares line was used"
    return out


def safe_evaluate(mos: Sequence[float] | np.ndarray,
                  pred: Sequence[float] | np.ndarray) -> dict:
    """:func:`evaluate`, or NaN metrics with the reason in ``error`` when they cannot be
    computed (e.g. fewer than 3 videos): a run never loses its trained splits to a metric
    that is undefined on one test part."""
    try:
        return evaluate(mos, pred)
    except MetricError as err:
        out: dict = dict.fromkeys(METRICS, float("nan"))
        out.update(n=int(np.size(mos)), logistic_fitted=False, error=str(err))
        return out


def summarize(per_split: Sequence[Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """Median and spread of each metric over splits: ``{metric: {median, mean, std, min, max,
    iqr, n}}``. NaN values (a constant prediction, a logistic on too few videos) are left
    out and counted in ``n_nan``; ``n_videos`` is the median number of videos per split."""
    if not per_split:
        raise MetricError("no split results to summarise")
    out: dict[str, dict[str, float]] = {}
    for name in METRICS:
        values = np.array([float(r[name]) for r in per_split if name in r], dtype=np.float64)
        if not len(values):
            continue
        finite = values[np.isfinite(values)]
        if not len(finite):
            stats = dict.fromkeys(("median", "mean", "std", "min", "max", "iqr"), float("nan"))
        else:
            q1, q3 = np.percentile(finite, [25, 75])
            stats = {
                "median": float(np.median(finite)),
                "mean": float(finite.mean()),
                "std": float(finite.std()),
                "min": float(finite.min()),
                "max": float(finite.max()),
                "iqr": float(q3 - q1),
            }
        stats["n"] = int(len(finite))
        stats["n_nan"] = int(len(values) - len(finite))
        videos = [int(r["n"]) for r in per_split if "n" in r]
        if videos:
            stats["n_videos"] = int(np.median(videos))
        out[name] = stats
    return out
