"""``svr``: standardised pooled features, RBF support vector regression.

Hyper-parameters (C, gamma) are searched on the split's *validation* part only, then the
model is refitted on training + validation with the chosen pair (as VIDEVAL does).

Why it is fast. A naive scikit-learn grid search refits from scratch with the kernel
recomputed at every grid point. Here, per split:

* squared distances are computed once; each gamma's kernel matrix is one ``exp`` of them,
  shared by all C values (``kernel='precomputed'``);
* the grid is walked coarse-to-fine: a coarse grid (every ``step``-th exponent) then the
  neighbours of the best point at full resolution;
* along C (ascending) a gamma's row stops after ``patience`` steps without improvement:
  large C is where libsvm is slowest, and validation error rarely comes back down.

Targets are z-scored unit MOS (so C and epsilon mean the same on 1-5 and 0-100 data);
``gamma = 2**k / d`` for ``d`` standardised features. Prediction is done in NumPy from the
support vectors, so a loaded model predicts exactly like the fitted one, without pickle.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from vqa_pipe.pipeline.feature_table import FLAT
from vqa_pipe.pipeline.regressors import (
    Regressor,
    RegressorError,
    Standardizer,
    TargetScaler,
    register_regressor,
)

SELECT_BY = ("rmse", "srocc", "plcc")
MAX_PRECOMPUTED = 6000
"""Above this many search videos the kernel matrices are not precomputed (memory)."""


def sq_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances between the rows of ``a`` and ``b``."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.maximum(d, 0.0)


def _score(y: np.ndarray, p: np.ndarray, select_by: str) -> float:
    """Lower is better."""
    if select_by == "rmse":
        return float(np.sqrt(np.mean((y - p) ** 2)))
    if np.ptp(p) == 0:
        return float("inf")
    if select_by == "plcc":
        return -float(np.corrcoef(y, p)[0, 1])
    from scipy import stats

    return -float(stats.spearmanr(y, p)[0])


def svr_search(
    x_fit: np.ndarray,
    y_fit: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    *,
    log2_c: tuple[float, float] = (-2, 10),
    log2_gamma: tuple[float, float] = (-10, 2),
    epsilon: float = 0.1,
    step: int = 2,
    patience: int = 2,
    select_by: str = "rmse",
    tol: float = 1e-3,
) -> dict[str, Any]:
    """Search (C, gamma) for an RBF SVR fitted on ``x_fit`` and scored on ``x_val``.

    ``x_*`` are standardised features and ``y_*`` z-scored targets; ``log2_c`` bounds
    log2(C), ``log2_gamma`` bounds log2(gamma * d) (equal bounds fix the value). Returns the chosen
    ``C``, ``gamma``, their log2 exponents, the validation score and how many fits ran.
    """
    from sklearn.svm import SVR

    d = x_fit.shape[1]
    lo_c, hi_c = log2_c
    lo_g, hi_g = log2_gamma
    if lo_c > hi_c or lo_g > hi_g:
        raise RegressorError(f"empty search range log2_c={log2_c} log2_gamma={log2_gamma}")
    precompute = len(x_fit) <= MAX_PRECOMPUTED
    if precompute:
        d_fit = sq_distances(x_fit, x_fit)
        d_val = sq_distances(x_val, x_fit)
    kernels: dict[float, tuple[np.ndarray, np.ndarray]] = {}
    scores: dict[tuple[float, float], float] = {}

    def score(lc: float, lg: float) -> float:
        if (lc, lg) in scores:
            return scores[(lc, lg)]
        gamma = 2.0**lg / d
        if precompute:
            if lg not in kernels:
                kernels.clear()  # one gamma at a time: bounded memory
                kernels[lg] = (np.exp(-gamma * d_fit), np.exp(-gamma * d_val))
            k_fit, k_val = kernels[lg]
            model = SVR(kernel="precomputed", C=2.0**lc, epsilon=epsilon, tol=tol).fit(k_fit, y_fit)
            pred = model.predict(k_val)
        else:
            model = SVR(kernel="rbf", C=2.0**lc, gamma=gamma, epsilon=epsilon, tol=tol,
                        cache_size=1000)
            pred = model.fit(x_fit, y_fit).predict(x_val)
        scores[(lc, lg)] = _score(y_val, pred, select_by)
        return scores[(lc, lg)]

    step = max(1, int(step))
    coarse_c = list(np.arange(lo_c, hi_c + 1e-9, step))
    coarse_g = list(np.arange(lo_g, hi_g + 1e-9, step))
    for lg in coarse_g:
        best, worse = float("inf"), 0
        for lc in coarse_c:
            s = score(float(lc), float(lg))
            if s < best:
                best, worse = s, 0
            else:
                worse += 1
                if patience and worse >= patience:
                    break
    if step > 1:
        lc0, lg0 = min(scores, key=scores.get)
        for dg in range(-step + 1, step):
            for dc in range(-step + 1, step):
                lc, lg = lc0 + dc, lg0 + dg
                if lo_c <= lc <= hi_c and lo_g <= lg <= hi_g:
                    score(float(lc), float(lg))
    lc, lg = min(scores, key=scores.get)
    return {
        "C": 2.0**lc,
        "gamma": 2.0**lg / d,
        "log2_C": lc,
        "log2_gamma_d": lg,
        "val_score": scores[(lc, lg)],
        "select_by": select_by,
        "n_fits": len(scores),
        "at_edge": lc in (lo_c, hi_c) or lg in (lo_g, hi_g),
    }


@register_regressor("svr")
class SVRRegressor(Regressor):
    """RBF SVR on standardised pooled features, (C, gamma) chosen on validation."""

    roles = (FLAT,)
    single_thread_blas = True
    defaults = {
        "C": None,  # fixed C: skip the search over C
        "gamma": None,  # fixed gamma: skip the search over gamma
        "log2_c": [-2, 10],
        "log2_gamma": [-10, 2],  # gamma = 2**k / n_features
        "epsilon": 0.1,  # in z-scored MOS units
        "step": 2,
        "patience": 2,
        "select_by": "rmse",
        "refit_on_val": True,
        "max_search": 4000,  # search on at most this many training videos (random subset)
        "seed": 0,
        "search_tol": 1e-2,  # libsvm tolerance during the search (the final fit uses 1e-3)
    }

    def _check_params(self) -> None:
        p = self.params
        if p["select_by"] not in SELECT_BY:
            raise RegressorError(
                f"svr select_by must be one of {', '.join(SELECT_BY)}, got {p['select_by']!r}"
            )
        for key in ("log2_c", "log2_gamma"):
            value = p[key]
            if not (isinstance(value, (list, tuple)) and len(value) == 2):
                raise RegressorError(f"svr {key} must be [low, high] exponents, got {value!r}")
        if float(p["epsilon"]) < 0:
            raise RegressorError(f"svr epsilon must be >= 0, got {p['epsilon']}")
        for key in ("C", "gamma"):
            if p[key] is not None and float(p[key]) <= 0:
                raise RegressorError(f"svr {key} must be > 0, got {p[key]}")

    def _fit(self, inputs, y_unit, val_inputs, y_val_unit) -> dict[str, Any]:
        from sklearn.svm import SVR

        p = self.params
        x = np.asarray(inputs[FLAT], dtype=np.float64)
        info: dict[str, Any] = {}
        fixed = p["C"] is not None and p["gamma"] is not None
        if not fixed:
            if val_inputs is None or y_val_unit is None or len(y_val_unit) < 2:
                raise RegressorError(
                    "svr searches C and gamma on a validation part; give one with at least 2 "
                    "videos (or fix both C and gamma)"
                )
            xs, ys = x, y_unit
            if len(xs) > int(p["max_search"]):
                pick = np.random.default_rng(p["seed"]).choice(
                    len(xs), int(p["max_search"]), replace=False
                )
                xs, ys = xs[pick], ys[pick]
                info["search_subset"] = int(p["max_search"])
            scaler = Standardizer.fit(xs)
            target = TargetScaler.fit(ys)
            d = x.shape[1]
            lc = p["log2_c"] if p["C"] is None else [np.log2(float(p["C"]))] * 2
            lg = p["log2_gamma"] if p["gamma"] is None else [np.log2(float(p["gamma"]) * d)] * 2
            found = svr_search(
                scaler.transform(xs),
                target.transform(ys),
                scaler.transform(np.asarray(val_inputs[FLAT], dtype=np.float64)),
                target.transform(y_val_unit),
                log2_c=(float(lc[0]), float(lc[1])),
                log2_gamma=(float(lg[0]), float(lg[1])),
                epsilon=float(p["epsilon"]),
                step=int(p["step"]),
                patience=int(p["patience"]),
                select_by=p["select_by"],
                tol=float(p["search_tol"]),
            )
            c, gamma = found["C"], found["gamma"]
            info.update(found)
        else:
            c, gamma = float(p["C"]), float(p["gamma"])
            info.update(C=c, gamma=gamma)
        if p["refit_on_val"] and val_inputs is not None and y_val_unit is not None:
            x = np.concatenate([x, np.asarray(val_inputs[FLAT], dtype=np.float64)])
            y_unit = np.concatenate([y_unit, y_val_unit])
            info["refit_on"] = "train+val"
        else:
            info["refit_on"] = "train"
        self._scaler = Standardizer.fit(x)
        self._target = TargetScaler.fit(y_unit)
        xz = self._scaler.transform(x).astype(np.float64)
        model = SVR(kernel="rbf", C=c, gamma=gamma, epsilon=float(p["epsilon"]))
        model.fit(xz, self._target.transform(y_unit))
        self._support = xz[model.support_]
        self._dual = np.asarray(model.dual_coef_, dtype=np.float64).ravel()
        self._intercept = float(np.asarray(model.intercept_).ravel()[0])
        self._gamma = gamma
        info["n_support"] = int(len(self._support))
        return info

    def _predict_unit(self, inputs) -> np.ndarray:
        x = self._scaler.transform(np.asarray(inputs[FLAT], dtype=np.float64)).astype(np.float64)
        out = np.empty(len(x))
        for start in range(0, len(x), 4096):  # bounded kernel memory
            k = np.exp(-self._gamma * sq_distances(x[start:start + 4096], self._support))
            out[start:start + 4096] = k @ self._dual + self._intercept
        return self._target.inverse(out)

    def _state(self) -> dict[str, np.ndarray]:
        return {
            **self._scaler.state("scaler"),
            **self._target.state(),
            "support_vectors": self._support,
            "dual_coef": self._dual,
            "intercept": np.array([self._intercept]),
            "gamma": np.array([self._gamma]),
        }

    def _set_state(self, tensors: Mapping[str, np.ndarray]) -> None:
        self._scaler = Standardizer.from_state(tensors, "scaler")
        self._target = TargetScaler.from_state(tensors)
        self._support = np.asarray(tensors["support_vectors"], dtype=np.float64)
        self._dual = np.asarray(tensors["dual_coef"], dtype=np.float64)
        self._intercept = float(tensors["intercept"][0])
        self._gamma = float(tensors["gamma"][0])
