"""Stage-two regressors, from a registry.

=========  ==============================  ===========================================
name       inputs (feature-table roles)    model
=========  ==============================  ===========================================
``svr``    ``flat``                        standardised features, RBF SVR; C and gamma
                                           searched on the validation part only
``ridge``  ``flat``                        standardised features, ridge regression
                                           (alpha searched on validation)
``mlp``    ``sequence``                    CLiF-VQA semantic MLP (eq. 8: FC-GELU-FC along
                                           time per description) and a regression head
``gru``    ``sequence``                    VSFA-style: reduce, GRU, per-frame scores,
                                           temporal pooling
``fused``  ``sequence`` +                  CLiF-VQA fusion (eqs. 10-13): eq. 8 and
           ``spatial_clip_maps``           FAST-VQA's head per clip, flattened,
                                           concatenated, FC-GELU-FC
``fastvqa`` ``spatial_clip_maps``          FAST-VQA's own head from its checkpoint;
                                           nothing trained
``clipvqa``  ``clip_frames`` + ``clip_keys``  CLIPVQA head on frozen CLIP: SAT over frame
           + ``level_text``                embeddings, VAT over patch tokens (or window
                                           embeddings), softmax over 6 level words;
                                           decoded by SVR or expectation
=========  ==============================  ===========================================

Every regressor learns on the unit MOS scale (see :mod:`vqa_pipe.pipeline.feature_table`)
and predicts on each video's own scale. A saved regressor is a folder with ``config.json``
(name, parameters, what was chosen during fitting, input shapes) and ``weights.safetensors``
(all arrays: scaler statistics, support vectors, network weights). Nothing is pickled and
nothing executes code on load.

``list_regressors()`` needs no heavy import; the torch regressors import torch only when
they are created.
"""

from __future__ import annotations

import contextlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from vqa_pipe.pipeline.errors import VqaPipeError
from vqa_pipe.pipeline.feature_table import FeatureTable, from_unit
from vqa_pipe.pipeline.registry import Registry

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"


class RegressorError(VqaPipeError):
    """Unknown regressor, bad parameters, a model folder that cannot be loaded, or a model
    used before it was fitted."""


# Built-in regressors are the public modules of this package, each named after the regressor
# it registers (``svr.py`` registers ``svr``): listed without importing them, imported on use.
REGRESSORS: Registry[type[Regressor]] = Registry(
    "regressor", package=__name__, error=RegressorError
)


def register_regressor(name: str) -> Callable[[type[Regressor]], type[Regressor]]:
    """Class decorator adding a :class:`Regressor` subclass to the registry under ``name``."""

    def wrap(cls: type[Regressor]) -> type[Regressor]:
        cls.name = name
        return REGRESSORS.register(name, cls)

    return wrap


def list_regressors() -> list[str]:
    """Names of all regressors (built-in and registered), sorted."""
    return sorted(REGRESSORS.names())


def get_regressor(name: str) -> type[Regressor]:
    """The regressor class registered as ``name``."""
    return REGRESSORS.get(name)


def create_regressor(name: str, **params: Any) -> Regressor:
    """A new, unfitted regressor ``name`` with ``params`` over its defaults."""
    return get_regressor(name)(**params)


def load_regressor(folder: str | Path) -> Regressor:
    """Load a regressor saved with :meth:`Regressor.save` (no pickle, no code execution)."""
    folder = Path(folder)
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        raise RegressorError(f"no saved regressor in {folder} ({CONFIG_FILE} is missing)")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as err:
        raise RegressorError(f"{config_path} is not valid JSON: {err}") from None
    name = config.get("regressor")
    if not isinstance(name, str):
        raise RegressorError(f"{config_path} does not say which regressor it holds")
    if int(config.get("format", 0)) > FORMAT_VERSION:
        raise RegressorError(f"{config_path} was written by a newer vqa-pipe")
    cls = get_regressor(name)
    weights_path = folder / WEIGHTS_FILE
    if not weights_path.is_file():
        raise RegressorError(f"{folder} has {CONFIG_FILE} but no {WEIGHTS_FILE}")
    from safetensors.numpy import load_file

    try:
        tensors = load_file(str(weights_path))
    except Exception as err:  # safetensors raises its own error types
        raise RegressorError(f"{weights_path} is not a valid safetensors file: {err}") from None
    model = cls(**config.get("params", {}))
    model.fit_info = dict(config.get("fit_info", {}))
    model.input_shapes = {k: list(v) for k, v in config.get("input_shapes", {}).items()}
    try:
        model._set_state(tensors)
    except KeyError as err:
        raise RegressorError(f"{weights_path} lacks tensor {err} that '{name}' needs") from None
    model._fitted = True
    return model


# --------------------------------------------------------------------------- preprocessing
class Standardizer:
    """Per-channel standardisation fitted on the training part; NaN become the channel mean.

    ``channel_axis`` is the axis (of the per-video shape) that holds channels: statistics are
    taken over videos and every other axis.
    """

    def __init__(self, mean: np.ndarray, scale: np.ndarray, channel_axis: int) -> None:
        self.mean = np.asarray(mean, dtype=np.float32)
        self.scale = np.asarray(scale, dtype=np.float32)
        self.channel_axis = int(channel_axis)

    @classmethod
    def fit(cls, x: np.ndarray, channel_axis: int = -1, chunk: int = 64) -> Standardizer:
        """Channel statistics of ``x`` (videos on axis 0), accumulated ``chunk`` videos at a
        time in float64 (large feature maps are never copied whole)."""
        x = np.asarray(x)
        axis = channel_axis % (x.ndim - 1) + 1  # axis in the batch array
        n_channels = x.shape[axis]
        total = np.zeros(n_channels)
        total_sq = np.zeros(n_channels)
        count = np.zeros(n_channels)
        for start in range(0, len(x), chunk):
            block = np.moveaxis(x[start:start + chunk].astype(np.float64), axis, -1)
            block = block.reshape(-1, n_channels)
            finite = np.isfinite(block)
            block = np.where(finite, block, 0.0)
            total += block.sum(axis=0)
            total_sq += (block * block).sum(axis=0)
            count += finite.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = total / count
            var = np.maximum(total_sq / count - mean * mean, 0.0)
        std = np.sqrt(var)
        mean = np.where(np.isfinite(mean), mean, 0.0)
        std = np.where(np.isfinite(std) & (std > 1e-6 * np.maximum(1.0, np.abs(mean))), std, 1.0)
        return cls(mean, std, channel_axis)

    def _shape(self, ndim: int) -> tuple[int, ...]:
        axis = self.channel_axis % (ndim - 1) + 1
        return tuple(-1 if i == axis else 1 for i in range(ndim))

    def transform(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        shape = self._shape(x.ndim)
        if x.shape[self.channel_axis % (x.ndim - 1) + 1] != self.mean.size:
            raise RegressorError(
                f"features have {x.shape[self.channel_axis % (x.ndim - 1) + 1]} channels; "
                f"the model was fitted on {self.mean.size}"
            )
        z = (x - self.mean.reshape(shape)) / self.scale.reshape(shape)
        return np.where(np.isfinite(z), z, 0.0).astype(np.float32)

    def state(self, prefix: str) -> dict[str, np.ndarray]:
        return {
            f"{prefix}.mean": self.mean,
            f"{prefix}.scale": self.scale,
            f"{prefix}.channel_axis": np.array([self.channel_axis], dtype=np.int64),
        }

    @classmethod
    def from_state(cls, tensors: Mapping[str, np.ndarray], prefix: str) -> Standardizer:
        return cls(
            tensors[f"{prefix}.mean"],
            tensors[f"{prefix}.scale"],
            int(tensors[f"{prefix}.channel_axis"][0]),
        )


class TargetScaler:
    """z-scoring of unit-scale MOS on the training part (so hyper-parameters are scale-free)."""

    def __init__(self, mean: float, std: float) -> None:
        self.mean = float(mean)
        self.std = float(std) if std > 1e-12 else 1.0

    @classmethod
    def fit(cls, y: np.ndarray) -> TargetScaler:
        y = np.asarray(y, dtype=np.float64)
        return cls(float(y.mean()), float(y.std()))

    def transform(self, y: np.ndarray) -> np.ndarray:
        return (np.asarray(y, dtype=np.float64) - self.mean) / self.std

    def inverse(self, z: np.ndarray) -> np.ndarray:
        return np.asarray(z, dtype=np.float64) * self.std + self.mean

    def state(self, prefix: str = "target") -> dict[str, np.ndarray]:
        return {prefix: np.array([self.mean, self.std], dtype=np.float64)}

    @classmethod
    def from_state(cls, tensors: Mapping[str, np.ndarray], prefix: str = "target") -> TargetScaler:
        mean, std = tensors[prefix]
        return cls(float(mean), float(std))


# --------------------------------------------------------------------------- base class
class Regressor(ABC):
    """A model from fixed-shape features to MOS.

    Subclasses set ``roles`` (feature-table roles they read) and ``defaults`` (parameters),
    and implement :meth:`_fit`, :meth:`_predict_unit`, :meth:`_state` and :meth:`_set_state`.
    """

    name: ClassVar[str] = ""
    roles: ClassVar[tuple[str, ...]] = ()
    defaults: ClassVar[dict[str, Any]] = {}
    single_thread_blas: ClassVar[bool] = False
    """True for models whose NumPy/SciPy work is on small matrices: BLAS then runs on one
    thread (OpenBLAS threads spin badly on a busy 2-core machine: a 767 x 60 SVD took 0.85 s
    with two threads and 0.005 s with one)."""

    def __init__(self, **params: Any) -> None:
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise RegressorError(
                f"regressor '{self.name}' has no parameter(s) {', '.join(unknown)}; "
                f"valid: {', '.join(sorted(self.defaults)) or 'none'}"
            )
        self.params: dict[str, Any] = {**self.defaults, **params}
        self._check_params()
        self.fit_info: dict[str, Any] = {}
        self.input_shapes: dict[str, list[int]] = {}
        self._fitted = False

    def _check_params(self) -> None:  # noqa: B027 - optional hook
        """Validate ``self.params``; raise :class:`RegressorError` naming the bad one."""

    @property
    def who(self) -> str:
        return f"regressor '{self.name}'"

    def _inputs(self, table: FeatureTable) -> dict[str, np.ndarray]:
        out = {role: table.require(role, self.who) for role in self.roles}
        if self._fitted:
            for role, arr in out.items():
                want = self.input_shapes.get(role)
                if want is not None and list(arr.shape[1:]) != want:
                    raise RegressorError(
                        f"{self.who} was fitted on '{role}' features of shape {tuple(want)}, "
                        f"got {tuple(arr.shape[1:])} from {table.dataset or 'the table'}"
                    )
        return out

    def fit(self, train: FeatureTable, val: FeatureTable | None = None) -> dict[str, Any]:
        """Fit on ``train``; choose hyper-parameters / epochs on ``val`` (never on test).

        Returns what was chosen (also kept in :attr:`fit_info` and saved with the model).
        """
        inputs = self._inputs(train)
        if len(train) < 2:
            raise RegressorError(f"{self.who} needs at least 2 training videos, got {len(train)}")
        val_inputs = None
        if val is not None and len(val):
            val_inputs = self._inputs(val)
        self.input_shapes = {role: list(arr.shape[1:]) for role, arr in inputs.items()}
        with self._blas_threads():
            info = self._fit(inputs, train.unit_mos, val_inputs,
                             None if val is None else val.unit_mos)
        self.fit_info = dict(info or {})
        self.fit_info.setdefault("n_train", len(train))
        self.fit_info.setdefault("n_val", 0 if val is None else len(val))
        self._fitted = True
        return self.fit_info

    def predict(self, table: FeatureTable) -> np.ndarray:
        """Predicted MOS of every video of ``table``, each on its own MOS scale."""
        if not self._fitted:
            raise RegressorError(f"{self.who} must be fitted (or loaded) before predicting")
        return from_unit(self.predict_unit(table), table.scales)

    def predict_unit(self, table: FeatureTable) -> np.ndarray:
        """Predictions on the unit scale (0-1)."""
        if not self._fitted:
            raise RegressorError(f"{self.who} must be fitted (or loaded) before predicting")
        inputs = self._inputs(table)
        with self._blas_threads():
            return np.asarray(self._predict_unit(inputs), dtype=np.float64).ravel()

    def _blas_threads(self):
        if not self.single_thread_blas:
            return contextlib.nullcontext()
        from threadpoolctl import threadpool_limits

        return threadpool_limits(limits=1, user_api="blas")

    def save(self, folder: str | Path) -> Path:
        """Write ``config.json`` and ``weights.safetensors`` into ``folder``."""
        from safetensors.numpy import save_file

        from vqa_pipe import __version__

        if not self._fitted:
            raise RegressorError(f"{self.who} has not been fitted; nothing to save")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {k: np.ascontiguousarray(v) for k, v in self._state().items()}
        save_file(tensors, str(folder / WEIGHTS_FILE))
        config = {
            "format": FORMAT_VERSION,
            "regressor": self.name,
            "vqa_pipe_version": __version__,
            "roles": list(self.roles),
            "params": self.params,
            "fit_info": self.fit_info,
            "input_shapes": self.input_shapes,
        }
        (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2, default=_json_default))
        return folder

    # -- for subclasses
    @abstractmethod
    def _fit(
        self,
        inputs: dict[str, np.ndarray],
        y_unit: np.ndarray,
        val_inputs: dict[str, np.ndarray] | None,
        y_val_unit: np.ndarray | None,
    ) -> dict[str, Any]:
        """Fit on unit-scale targets; return what was chosen."""

    @abstractmethod
    def _predict_unit(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """Unit-scale predictions."""

    @abstractmethod
    def _state(self) -> dict[str, np.ndarray]:
        """All arrays needed to predict again after loading."""

    @abstractmethod
    def _set_state(self, tensors: Mapping[str, np.ndarray]) -> None:
        """Restore from :meth:`_state`'s arrays (``self.params``, ``fit_info`` already set)."""


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def parse_param(text: str) -> tuple[str, Any]:
    """``key=value`` from the command line; the value is read as JSON when it parses
    (numbers, true/false, lists), else kept as a string."""
    if "=" not in text:
        raise RegressorError(f"parameter {text!r} is not of the form key=value")
    key, value = text.split("=", 1)
    key = key.strip()
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value
