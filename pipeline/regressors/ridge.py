"""``ridge``: the linear baseline on standardised pooled features.

The ridge penalty ``alpha`` is chosen on the validation part from a log grid; all grid
points come from one SVD of the training matrix. The chosen model is refitted on
training + validation.
"""

from __future__ import annotations

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


def ridge_path(x: np.ndarray, y: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    """Ridge weights (n_alphas, d) for centred ``x`` and ``y``, from one SVD."""
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    uty = u.T @ y
    factors = s[None, :] / (s[None, :] ** 2 + alphas[:, None])
    return (factors * uty[None, :]) @ vt


@register_regressor("ridge")
class RidgeRegressor(Regressor):
    """Linear regression with an L2 penalty chosen on validation."""

    roles = (FLAT,)
    single_thread_blas = True
    params_spec = (
        Param("alpha", "float", None, "fixed penalty", low=0, nullable=True,
              null_means="chosen on validation"),
        Param("log10_alpha", "range", [-3, 4], "log10 range of the penalties tried",
              low=-12, high=12),
        Param("n_alphas", "int", 29, "penalties tried (log-spaced)", low=1),
        Param("refit_on_val", "bool", True, "refit the chosen penalty on train + validation"),
    )

    def _fit(self, inputs, y_unit, val_inputs, y_val_unit) -> dict[str, Any]:
        p = self.params
        x = np.asarray(inputs[FLAT], dtype=np.float64)
        info: dict[str, Any] = {}
        if p["alpha"] is None:
            if val_inputs is None or y_val_unit is None or len(y_val_unit) < 2:
                raise RegressorError(
                    "ridge chooses alpha on a validation part; give one with at least 2 videos "
                    "(or fix alpha)"
                )
            scaler, target = Standardizer.fit(x), TargetScaler.fit(y_unit)
            alphas = np.logspace(*map(float, p["log10_alpha"]), int(p["n_alphas"]))
            weights = ridge_path(
                scaler.transform(x).astype(np.float64), target.transform(y_unit), alphas
            )
            xv = scaler.transform(np.asarray(val_inputs[FLAT])).astype(np.float64)
            errors = np.sqrt(np.mean((xv @ weights.T - target.transform(y_val_unit)[:, None]) ** 2,
                                     axis=0))
            best = int(np.argmin(errors))
            alpha = float(alphas[best])
            info.update(alpha=alpha, val_rmse_z=float(errors[best]),
                        at_edge=best in (0, len(alphas) - 1))
        else:
            alpha = float(p["alpha"])
            info["alpha"] = alpha
        xv = None if val_inputs is None else np.asarray(val_inputs[FLAT], dtype=np.float64)
        x, y_unit, info["refit_on"] = refit_rows(x, y_unit, xv, y_val_unit, p["refit_on_val"])
        self._scaler, self._target = Standardizer.fit(x), TargetScaler.fit(y_unit)
        xz = self._scaler.transform(x).astype(np.float64)
        self._weights = ridge_path(xz, self._target.transform(y_unit), np.array([alpha]))[0]
        return info

    def _predict_unit(self, inputs) -> np.ndarray:
        xz = self._scaler.transform(np.asarray(inputs[FLAT])).astype(np.float64)
        return self._target.inverse(xz @ self._weights)

    def _state(self) -> dict[str, np.ndarray]:
        return {**self._scaler.state("scaler"), **self._target.state(), "weights": self._weights}

    def _set_state(self, tensors: Mapping[str, np.ndarray]) -> None:
        self._scaler = Standardizer.from_state(tensors, "scaler")
        self._target = TargetScaler.from_state(tensors)
        self._weights = np.asarray(tensors["weights"], dtype=np.float64)
