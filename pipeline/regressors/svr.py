"""``svr``: RBF support vector regression on pooled features, the UGC-VQA protocol.

By default it does what VIDEVAL's and RAPIQUE's evaluation scripts (vztu/RAPIQUE
``evaluate_bvqa_features_regression.py``, vztu/BVQA_Benchmark ``evaluate_bvqa_features.py``)
do on each split's training part:

* features scaled to [0, 1] by the training part's range (``MinMaxScaler``); NaN features
  take the training part's channel mean (they impute the whole matrix's mean: we keep the
  test part out of it);
* the SVR learns the MOS in the dataset's own units (``target="mos"``, epsilon 0.1 in
  those units, scikit-learn's default);
* (C, gamma) are searched by 3-fold cross-validation on the whole training part (train +
  validation; folds are consecutive blocks of its order, as ``cv=3`` does for regressors),
  10 random draws (``RandomizedSearchCV``'s ``n_iter``) from the grid C in 2^1..2^10,
  gamma in 2^-8..2^1, scored by R^2 (an SVR's ``score``); the draws are seeded here
  (``seed``), theirs are not;
* the chosen pair is refitted on the whole training part.

``search="holdout"`` keeps the project's earlier search on the validation part only
(coarse-to-fine over the grid, a row along C stops after ``patience`` steps without
improvement), then refits on train + validation (as VIDEVAL's
``demo_eval_BVQA_feats_one_dataset.py`` does; it walks the full grid: ``step=1,
patience=0``).

Why it is fast. A naive search refits from scratch with the kernel recomputed at every fit.
Here squared distances are computed once per split; each gamma's kernel matrix is one
``exp`` of them, sliced per fold and shared by every C drawn with that gamma
(``kernel='precomputed'``, identical fits up to float rounding). ``kernel_reuse=False``
runs the same search with plain RBF fits (for benchmarks).

At scale. The search runs on at most ``max_search`` training videos (a seeded random
subset). An exact RBF SVR costs about N^3 in time, so above ``max_fit`` training videos
the final fit takes the ``large`` path: ``subsample`` (default; an exact SVR on a seeded
random ``max_fit`` of them: bounded time and memory) or ``nystroem`` (every video, an RBF
kernel of rank ``nystroem_components`` (Nystroem landmarks) and a linear SVR on it; memory
grows with N: about N x components x 24 bytes), or ``exact`` (no cap). ``fit_info["fit_path"]``
says which one ran.

Prediction is done in NumPy from the support vectors (or Nystroem landmarks), in chunks of
bounded memory, so a loaded model predicts exactly like the fitted one, without pickle.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np
from vqa_pipe.pipeline.feature_table import FLAT
from vqa_pipe.pipeline.regressors import (
    Param,
    Regressor,
    RegressorError,
    Standardizer,
    TargetScaler,
    refit_rows,
    register_regressor,
)

SELECT_BY = ("r2", "rmse", "srocc", "plcc")
SEARCHES = ("cv", "holdout")
LARGE_PATHS = ("subsample", "nystroem", "exact")
MAX_PRECOMPUTED = 6000
"""Above this many search videos the kernel matrices are not precomputed (memory)."""
PREDICT_CHUNK_BYTES = 64 * 2**20
"""Memory of one block of the prediction kernel (rows x support vectors, float64)."""


def sq_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances between the rows of ``a`` and ``b``."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.maximum(d, 0.0)


def rbf_predict(x: np.ndarray, centres: np.ndarray, weights: np.ndarray, intercept: float,
                gamma: float) -> np.ndarray:
    """``sum_j weights_j exp(-gamma |x - centre_j|^2) + intercept`` for every row of ``x``,
    in blocks of at most :data:`PREDICT_CHUNK_BYTES` of kernel."""
    x = np.asarray(x, dtype=np.float64)
    out = np.empty(len(x))
    rows = max(1, PREDICT_CHUNK_BYTES // (8 * max(1, len(centres))))
    for start in range(0, len(x), rows):
        k = np.exp(-gamma * sq_distances(x[start:start + rows], centres))
        out[start:start + rows] = k @ weights + intercept
    return out


def _loss(y: np.ndarray, p: np.ndarray, select_by: str) -> float:
    """Lower is better: -R^2, RMSE, -SROCC or -PLCC."""
    if select_by == "r2":
        ss = float(((y - y.mean()) ** 2).sum())
        if ss == 0:
            return float("inf")
        return -(1.0 - float(((y - p) ** 2).sum()) / ss)
    if select_by == "rmse":
        return float(np.sqrt(np.mean((y - p) ** 2)))
    if np.ptp(p) == 0 or np.ptp(y) == 0:
        return float("inf")
    if select_by == "plcc":
        return -float(np.corrcoef(y, p)[0, 1])
    from scipy import stats

    return -float(stats.spearmanr(y, p)[0])


def exponents(bounds: tuple[float, float] | list[float]) -> list[float]:
    """Grid exponents ``low, low + 1, ..., high`` (one value when ``low == high``)."""
    lo, hi = float(bounds[0]), float(bounds[1])
    if lo > hi:
        raise RegressorError(f"empty search range [{lo}, {hi}]")
    return [float(v) for v in np.arange(lo, hi + 1e-9, 1.0)]


def cv_folds(n: int, folds: int) -> list[np.ndarray]:
    """Consecutive blocks of ``range(n)``, the first ``n % folds`` one longer (scikit-learn's
    unshuffled ``KFold``)."""
    if folds < 2 or folds > n:
        raise RegressorError(f"cannot make {folds} folds of {n} videos")
    return np.array_split(np.arange(n), folds)


def svr_cv_search(
    x: np.ndarray,
    y: np.ndarray,
    *,
    log2_c: tuple[float, float] = (1, 10),
    log2_gamma: tuple[float, float] = (-8, 1),
    folds: int = 3,
    draws: int = 10,
    epsilon: float = 0.1,
    tol: float = 1e-3,
    select_by: str = "r2",
    seed: int | np.random.Generator = 0,
    kernel_reuse: bool = True,
) -> dict[str, Any]:
    """Cross-validated search of (C, gamma) for an RBF SVR on scaled ``x`` and targets ``y``.

    The grid is every ``(2**a, 2**b)`` with ``a`` in ``log2_c`` and ``b`` in ``log2_gamma``
    (integer steps, C-major as scikit-learn's ``ParameterGrid``); ``draws`` of its points are
    drawn without replacement with ``seed`` (0 or at least the grid size: every point). Each
    point is scored by the mean over ``folds`` consecutive folds of the held-out score
    (:data:`SELECT_BY`; R^2 is what ``RandomizedSearchCV`` maximises for an SVR); the best
    mean wins (ties: the first drawn). Returns the choice, its score, every point's score and
    the number of fits.
    """
    from sklearn.svm import SVR

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    grid = [(c, g) for c in exponents(log2_c) for g in exponents(log2_gamma)]
    if draws and draws < len(grid):
        pick = np.random.default_rng(seed).choice(len(grid), int(draws), replace=False)
        candidates = [grid[i] for i in pick]
    else:
        candidates = grid
    parts = cv_folds(len(x), int(folds))
    splits = [(np.concatenate(parts[:f] + parts[f + 1:]), parts[f]) for f in range(len(parts))]
    reuse = kernel_reuse and len(x) <= MAX_PRECOMPUTED
    dist = sq_distances(x, x) if reuse else None
    losses: dict[tuple[float, float], list[float]] = {c: [] for c in candidates}
    for lg in dict.fromkeys(g for _, g in candidates):
        gamma = 2.0**lg
        kernel = np.exp(-gamma * dist) if reuse else None
        cs = [c for c, g in candidates if g == lg]
        for train, test in splits:
            if reuse:
                k_fit, k_test = kernel[np.ix_(train, train)], kernel[np.ix_(test, train)]
            for lc in cs:
                if reuse:
                    model = SVR(kernel="precomputed", C=2.0**lc, epsilon=epsilon, tol=tol)
                    pred = model.fit(k_fit, y[train]).predict(k_test)
                else:
                    model = SVR(kernel="rbf", C=2.0**lc, gamma=gamma, epsilon=epsilon, tol=tol)
                    pred = model.fit(x[train], y[train]).predict(x[test])
                losses[(lc, lg)].append(_loss(y[test], pred, select_by))
        del kernel
    mean = {c: float(np.mean(v)) for c, v in losses.items()}
    best = min(candidates, key=lambda c: mean[c])  # first of equal scores wins
    lc, lg = best
    cs, gs = exponents(log2_c), exponents(log2_gamma)
    return {
        "C": 2.0**lc,
        "gamma": 2.0**lg,
        "log2_C": lc,
        "log2_gamma": lg,
        "cv_score": -mean[best] if select_by != "rmse" else mean[best],
        "select_by": select_by,
        "search": f"{len(parts)}-fold CV, {len(candidates)} of {len(grid)} grid points",
        "n_fits": len(candidates) * len(parts),
        "at_edge": (len(cs) > 1 and lc in (cs[0], cs[-1])) or (len(gs) > 1 and lg in (gs[0],
                                                                                     gs[-1])),
        "kernel_reuse": reuse,
        "candidates": [[c, g, (-mean[(c, g)] if select_by != "rmse" else mean[(c, g)])]
                       for c, g in candidates],
    }


def svr_search(
    x_fit: np.ndarray,
    y_fit: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    *,
    log2_c: tuple[float, float] = (1, 10),
    log2_gamma: tuple[float, float] = (-8, 1),
    epsilon: float = 0.1,
    step: int = 2,
    patience: int = 2,
    select_by: str = "rmse",
    tol: float = 1e-3,
    kernel_reuse: bool = True,
) -> dict[str, Any]:
    """Search (C, gamma) for an RBF SVR fitted on ``x_fit`` and scored on ``x_val`` (one
    validation holdout), coarse to fine: every ``step``-th exponent first, then the
    neighbours of the best point; along C (ascending) a gamma's row stops after ``patience``
    steps without improvement (0: never). ``step=1, patience=0`` walks the whole grid.
    """
    from sklearn.svm import SVR

    lo_c, hi_c = log2_c
    lo_g, hi_g = log2_gamma
    if lo_c > hi_c or lo_g > hi_g:
        raise RegressorError(f"empty search range log2_c={log2_c} log2_gamma={log2_gamma}")
    precompute = kernel_reuse and len(x_fit) <= MAX_PRECOMPUTED
    if precompute:
        d_fit = sq_distances(x_fit, x_fit)
        d_val = sq_distances(x_val, x_fit)
    kernels: dict[float, tuple[np.ndarray, np.ndarray]] = {}
    scores: dict[tuple[float, float], float] = {}

    def score(lc: float, lg: float) -> float:
        if (lc, lg) in scores:
            return scores[(lc, lg)]
        gamma = 2.0**lg
        if precompute:
            if lg not in kernels:
                kernels.clear()  # one gamma at a time: bounded memory
                kernels[lg] = (np.exp(-gamma * d_fit), np.exp(-gamma * d_val))
            k_fit, k_val = kernels[lg]
            model = SVR(kernel="precomputed", C=2.0**lc, epsilon=epsilon, tol=tol).fit(k_fit, y_fit)
            pred = model.predict(k_val)
        else:
            model = SVR(kernel="rbf", C=2.0**lc, gamma=gamma, epsilon=epsilon, tol=tol)
            pred = model.fit(x_fit, y_fit).predict(x_val)
        scores[(lc, lg)] = _loss(y_val, pred, select_by)
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
        "gamma": 2.0**lg,
        "log2_C": lc,
        "log2_gamma": lg,
        "val_score": scores[(lc, lg)] if select_by == "rmse" else -scores[(lc, lg)],
        "select_by": select_by,
        "search": "validation holdout",
        "n_fits": len(scores),
        "at_edge": (lo_c < hi_c and lc in (lo_c, hi_c)) or (lo_g < hi_g and lg in (lo_g, hi_g)),
        "kernel_reuse": precompute,
    }


def _nystroem_fit(x: np.ndarray, y: np.ndarray, *, C: float, gamma: float, epsilon: float,
                  components: int, seed: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Nystroem features (``components`` landmarks) and a linear SVR on them; returns the
    landmarks, one weight per landmark and the intercept (prediction is then
    :func:`rbf_predict`)."""
    from sklearn.kernel_approximation import Nystroem
    from sklearn.svm import LinearSVR

    nys = Nystroem(kernel="rbf", gamma=gamma, n_components=min(components, len(x)),
                   random_state=seed).fit(x)
    feats = nys.transform(x)
    lin = LinearSVR(C=C, epsilon=epsilon, loss="epsilon_insensitive", dual=True,
                    max_iter=10000, random_state=seed).fit(feats, y)
    weights = nys.normalization_.T @ np.asarray(lin.coef_, dtype=np.float64).ravel()
    return (np.asarray(nys.components_, dtype=np.float64), weights,
            float(np.asarray(lin.intercept_).ravel()[0]))


@register_regressor("svr")
class SVRRegressor(Regressor):
    """RBF SVR on scaled pooled features; (C, gamma) by cross-validation on the training
    part (VIDEVAL / RAPIQUE), or on the validation part."""

    roles = (FLAT,)
    single_thread_blas = True
    params_spec = (
        Param("search", "choice", "cv", "how (C, gamma) are chosen: 'cv' on the whole training "
              "part (VIDEVAL/RAPIQUE), 'holdout' on the validation part", choices=SEARCHES),
        Param("folds", "int", 3, "cross-validation folds (search cv)", low=2),
        Param("draws", "int", 10, "grid points drawn at random for the cv search (0: all)",
              low=0),
        Param("log2_c", "range", [1, 10], "log2 range of C searched (integer steps)",
              low=-30, high=30),
        Param("log2_gamma", "range", [-8, 1], "log2 range of gamma searched (integer steps), "
              "gamma of the RBF kernel on the scaled features", low=-30, high=30),
        Param("C", "float", None, "fixed C", low=0, low_open=True, nullable=True,
              null_means="searched"),
        Param("gamma", "float", None, "fixed gamma", low=0, low_open=True, nullable=True,
              null_means="searched"),
        Param("epsilon", "float", 0.1, "epsilon-insensitive tube, in target units", low=0),
        Param("scaling", "choice", "minmax", "feature scaling fitted on the training part: "
              "'minmax' to [0, 1] (VIDEVAL/RAPIQUE) or 'standard' (z-scores)",
              choices=("minmax", "standard")),
        Param("target", "choice", "mos", "what the SVR learns: 'mos' in the dataset's own "
              "units (VIDEVAL/RAPIQUE; a training part that mixes MOS scales learns 'z', "
              "and fit_info says so), 'z' z-scored MOS", choices=("mos", "z")),
        Param("select_by", "choice", "r2", "search score: r2 (RandomizedSearchCV's), rmse, "
              "srocc or plcc", choices=SELECT_BY),
        Param("step", "int", 2, "holdout search: coarse grid step", low=1),
        Param("patience", "int", 2, "holdout search: steps along C without improvement "
              "before a row stops (0: never)", low=0),
        Param("refit_on_val", "bool", True, "holdout search: refit the chosen pair on train + "
              "validation (cv always refits on both)"),
        Param("max_search", "int", 4000, "search on at most this many training videos "
              "(a seeded random subset)", low=10),
        Param("max_fit", "int", 8000, "above this many training videos the final fit takes "
              "the 'large' path", low=10),
        Param("large", "choice", "subsample", "final fit above max_fit videos: 'subsample' "
              "(exact SVR on max_fit of them), 'nystroem' (all of them, low-rank kernel + "
              "linear SVR), 'exact' (no cap)", choices=LARGE_PATHS),
        Param("nystroem_components", "int", 1000, "landmarks of the nystroem path", low=10),
        Param("seed", "int", 0, "seed of the search draws and subsets (mixed with the training "
              "part's MOS, so every split draws its own points)", low=0),
        Param("search_tol", "float", 1e-3, "libsvm tolerance of the search fits", low=0,
              low_open=True),
        Param("tol", "float", 1e-3, "libsvm tolerance of the final fit", low=0, low_open=True),
        Param("kernel_reuse", "bool", True, "search on precomputed kernels shared across C "
              "(false: plain RBF fits, same results; for benchmarks)"),
    )

    def _check_params(self) -> None:
        p = self.params
        if p["search"] == "cv" and p["max_search"] < p["folds"]:
            raise RegressorError(
                f"{self.who}: parameter 'max_search' ({p['max_search']}) must be at least "
                f"'folds' ({p['folds']})"
            )

    # -- preprocessing
    def _make_scaler(self, x: np.ndarray) -> Standardizer:
        return Standardizer.fit_minmax(x) if self.params["scaling"] == "minmax" \
            else Standardizer.fit(x)

    def _target_scaler(self, y_unit: np.ndarray, info: dict[str, Any]) -> TargetScaler:
        bounds = self._mos_bounds() if self.params["target"] == "mos" else None
        if bounds is None:
            if self.params["target"] == "mos":
                info["target"] = ("z (the training part mixes MOS scales "
                                  f"{', '.join(self.train_scales)}; 'mos' needs one)")
            else:
                info["target"] = "z"
            return TargetScaler.fit(y_unit)
        low, high = bounds
        info["target"] = f"mos ({self.train_scales[0]})"
        # unit -> MOS: mos = low + unit * (high - low) = (unit - m) / s
        return TargetScaler(-low / (high - low), 1.0 / (high - low))

    def _fit(self, inputs, y_unit, val_inputs, y_val_unit) -> dict[str, Any]:
        p = self.params
        x = np.asarray(inputs[FLAT], dtype=np.float64)
        has_val = val_inputs is not None and y_val_unit is not None and len(y_val_unit) > 0
        xv = np.asarray(val_inputs[FLAT], dtype=np.float64) if has_val else None
        info: dict[str, Any] = {}
        fixed = p["C"] is not None and p["gamma"] is not None
        # the whole training part: cv searches on it, and it is what is refitted
        x_all, y_all, info["refit_on"] = refit_rows(
            x, y_unit, xv, y_val_unit, p["search"] == "cv" or p["refit_on_val"])
        self._scaler = self._make_scaler(x_all)
        self._target = self._target_scaler(y_all, info)
        xz = self._scaler.transform(x_all).astype(np.float64)
        yz = self._target.transform(y_all)
        # each training part draws its own grid points and subsets (as RandomizedSearchCV
        # does per split), reproducibly: the seed is mixed with the part's targets
        data_seed = zlib.crc32(np.ascontiguousarray(yz).tobytes())
        rng = np.random.default_rng([p["seed"], data_seed])
        lc = p["log2_c"] if p["C"] is None else [float(np.log2(p["C"]))] * 2
        lg = p["log2_gamma"] if p["gamma"] is None else [float(np.log2(p["gamma"]))] * 2
        if fixed:
            c, gamma = float(p["C"]), float(p["gamma"])
            info.update(C=c, gamma=gamma, search="none (C and gamma fixed)")
        elif p["search"] == "cv":
            xs, ys = xz, yz
            if len(xs) > p["max_search"]:
                pick = np.sort(rng.choice(len(xs), p["max_search"], replace=False))
                xs, ys = xs[pick], ys[pick]
                info["search_subset"] = int(p["max_search"])
            found = svr_cv_search(
                xs, ys, log2_c=lc, log2_gamma=lg, folds=p["folds"], draws=p["draws"],
                epsilon=p["epsilon"], tol=p["search_tol"], select_by=p["select_by"],
                seed=rng, kernel_reuse=p["kernel_reuse"],
            )
            c, gamma = found["C"], found["gamma"]
            info.update(found, search_videos=len(xs))
        else:
            if not has_val or len(y_val_unit) < 2:
                raise RegressorError(
                    f"{self.who}: search='holdout' chooses C and gamma on a validation part; "
                    "give one with at least 2 videos (or use search='cv', or fix C and gamma)"
                )
            xf = self._scaler.transform(x).astype(np.float64)
            yf = self._target.transform(y_unit)
            if len(xf) > p["max_search"]:
                pick = np.sort(rng.choice(len(xf), p["max_search"], replace=False))
                xf, yf = xf[pick], yf[pick]
                info["search_subset"] = int(p["max_search"])
            found = svr_search(
                xf, yf, self._scaler.transform(xv).astype(np.float64),
                self._target.transform(y_val_unit), log2_c=lc, log2_gamma=lg,
                epsilon=p["epsilon"], step=p["step"], patience=p["patience"],
                select_by="rmse" if p["select_by"] == "r2" else p["select_by"],
                tol=p["search_tol"], kernel_reuse=p["kernel_reuse"],
            )
            c, gamma = found["C"], found["gamma"]
            info.update(found, search_videos=len(xf))
        info.update(self._final_fit(xz, yz, c, gamma, rng))
        return info

    def _final_fit(self, xz: np.ndarray, yz: np.ndarray, c: float, gamma: float,
                   rng: np.random.Generator) -> dict[str, Any]:
        from sklearn.svm import SVR

        p = self.params
        n = len(xz)
        info: dict[str, Any] = {"n_fit_total": n}
        path = "exact" if n <= p["max_fit"] else p["large"]
        if path == "nystroem":
            self._support, self._dual, self._intercept = _nystroem_fit(
                xz, yz, C=c, gamma=gamma, epsilon=p["epsilon"],
                components=p["nystroem_components"], seed=p["seed"])
            info["fit_path"] = (f"nystroem: all {n} videos, RBF kernel of rank "
                                f"{len(self._support)} + linear SVR")
        else:
            if path == "subsample":
                pick = np.sort(rng.choice(n, p["max_fit"], replace=False))
                xz, yz = xz[pick], yz[pick]
                info["fit_path"] = (f"subsample: exact RBF SVR on a random {p['max_fit']} of "
                                    f"the {n} training videos")
            else:
                info["fit_path"] = f"exact: RBF SVR on all {n} training videos"
            model = SVR(kernel="rbf", C=c, gamma=gamma, epsilon=p["epsilon"], tol=p["tol"])
            model.fit(xz, yz)
            self._support = xz[model.support_]
            self._dual = np.asarray(model.dual_coef_, dtype=np.float64).ravel()
            self._intercept = float(np.asarray(model.intercept_).ravel()[0])
        self._gamma = float(gamma)
        info.update(C=float(c), gamma=float(gamma), n_support=int(len(self._support)),
                    n_fit=len(xz) if path != "nystroem" else n)
        return info

    def _predict_unit(self, inputs) -> np.ndarray:
        x = self._scaler.transform(np.asarray(inputs[FLAT], dtype=np.float64)).astype(np.float64)
        out = rbf_predict(x, self._support, self._dual, self._intercept, self._gamma)
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
