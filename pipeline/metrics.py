"""The field's evaluation metrics: SROCC, KROCC, PLCC and RMSE, raw and after a logistic map.

PLCC and RMSE are reported twice: on the raw predictions (``plcc_raw``, ``rmse_raw``) and
after the standard four-parameter logistic mapping of predictions onto MOS (``plcc``,
``rmse``), as VQEG and the UGC-VQA papers (VIDEVAL, VSFA, FAST-VQA, CLiF-VQA) do::

    f(x) = beta2 + (beta1 - beta2) / (1 + exp(-(x - beta3) / |beta4|))

The mapping is monotonic, so it never changes SROCC or KROCC. It is fitted on the very
predictions it maps (the usual protocol); it is a reporting step, not part of a model.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from vqa_pipe.pipeline.errors import VqaPipeError

METRICS: tuple[str, ...] = ("srocc", "krocc", "plcc", "rmse", "plcc_raw", "rmse_raw")
"""Metric names in report order; ``plcc``/``rmse`` are after the logistic mapping."""

HIGHER_IS_BETTER: dict[str, bool] = {
    "srocc": True,
    "krocc": True,
    "plcc": True,
    "rmse": False,
    "plcc_raw": True,
    "rmse_raw": False,
}


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


def fit_logistic(pred: Sequence[float] | np.ndarray,
                 mos: Sequence[float] | np.ndarray) -> LogisticMap:
    """Fit the four-parameter logistic mapping predictions onto MOS (least squares).

    The start point follows VQEG practice: ``beta1 = max(MOS)``, ``beta2 = min(MOS)``,
    ``beta3 = mean(pred)``, and a slope of one prediction standard deviation (so the fit
    does not depend on the prediction's units). A decreasing relation is fitted with the
    two asymptotes swapped. When the optimiser fails, a straight line is used.
    """
    from scipy.optimize import curve_fit

    y, p = _pair(mos, pred)
    slope, intercept = np.polyfit(p, y, 1) if np.ptp(p) > 0 else (0.0, float(y.mean()))
    fallback = LogisticMap(0.0, 0.0, 0.0, 1.0, fitted=False, slope=float(slope),
                           intercept=float(intercept))
    if np.ptp(p) == 0 or np.ptp(y) == 0:
        return fallback
    hi, lo = float(y.max()), float(y.min())
    if slope < 0:
        hi, lo = lo, hi
    start = [hi, lo, float(p.mean()), float(p.std())]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            popt, _ = curve_fit(logistic4, p, y, p0=start, maxfev=20000)
    except (RuntimeError, ValueError, FloatingPointError):
        return fallback
    fit = LogisticMap(*(float(v) for v in popt))
    mapped = fit(p)
    if not np.all(np.isfinite(mapped)):
        return fallback
    # A logistic is never worse than a line when the optimiser converged properly; if it
    # is (a bad local minimum), keep the line.
    line_err = np.mean((fallback(p) - y) ** 2)
    if np.mean((mapped - y) ** 2) > line_err * (1 + 1e-9):
        return fallback
    return fit


def evaluate(mos: Sequence[float] | np.ndarray, pred: Sequence[float] | np.ndarray) -> dict:
    """All metrics of one prediction set; ``logistic_fitted`` says whether the logistic fit
    worked (False: ``plcc``/``rmse`` used a fitted line)."""
    from threadpoolctl import threadpool_limits

    y, p = _pair(mos, pred)
    with threadpool_limits(limits=1, user_api="blas"):  # small least squares: one thread
        mapping = fit_logistic(p, y)
    mapped = mapping(p)
    return {
        "srocc": srocc(y, p),
        "krocc": krocc(y, p),
        "plcc": plcc(y, mapped),
        "rmse": rmse(y, mapped),
        "plcc_raw": plcc(y, p),
        "rmse_raw": rmse(y, p),
        "n": int(len(y)),
        "logistic_fitted": bool(mapping.fitted),
    }


def summarize(per_split: Sequence[Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """Median and spread of each metric over splits: ``{metric: {median, mean, std, min, max,
    iqr, n}}``. NaN values (a constant prediction) are left out and counted in ``n_nan``."""
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
        out[name] = stats
    return out
