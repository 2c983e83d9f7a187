"""The training loop shared by the torch regressors (``mlp``, ``gru``, ``fused``, ``vsfa``).

* Inputs are standardised per channel on the training part (``standardize``); targets are
  z-scored unit MOS (``vsfa`` overrides both, as VSFA does).
* AdamW (or Adam) with cosine learning-rate decay (or none, or VSFA's step decay),
  mini-batches shuffled with a fixed seed.
* After every epoch the model is scored on the validation part (SROCC + PLCC, or SROCC
  alone as VSFA does); the best epoch is kept. Nothing is chosen on a test part. Without a
  validation part (or one under 3 videos) the last epoch is kept, and ``fit_info`` says so.
* ``refit`` (default): once the best epoch count is known, a fresh network (same seed) is
  trained on train + validation for that many epochs, with the same learning-rate
  schedule, as ``svr``/``ridge`` refit their chosen hyper-parameters on train +
  validation. Without it the model is the best-epoch network trained on the training part
  alone (64 % of the videos under 80/20 then 80/20 splits).
* Correlation losses leave the output's scale free, so a line from network output to
  training targets is fitted after training (``calibrate``) and kept with the model.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn
from vqa_pipe.pipeline.losses import LOSSES, PAIRWISE, LossConfig, make_loss
from vqa_pipe.pipeline.regressors import (
    Param,
    Regressor,
    RegressorError,
    Standardizer,
    TargetScaler,
)

OPTIMIZERS = ("adamw", "adam")
DEVICES = ("cpu", "cuda", "auto")
SCHEDULES = ("cosine", "none", "step")
EPOCH_SELECTION = ("srocc+plcc", "srocc")

TRAIN_PARAMS: tuple[Param, ...] = (
    Param("epochs", "int", 60, "training epochs (the best one on validation is kept)", low=1),
    Param("batch_size", "int", 32, "videos per mini-batch", low=1),
    Param("lr", "float", 1e-3, "learning rate", low=0, low_open=True),
    Param("weight_decay", "float", 1e-3, "weight decay", low=0),
    Param("optimizer", "choice", "adamw", "optimiser", choices=OPTIMIZERS),
    Param("schedule", "choice", "cosine", "learning-rate schedule: cosine decay over all "
          "steps, none, or step (x0.8 every epochs/10 epochs)", choices=SCHEDULES),
    Param("loss", "choice", "mono+lin", "training loss", choices=LOSSES),
    Param("alpha", "float", 1.0, "weight of the monotonicity (eq. 14) or hinge loss", low=0),
    Param("beta", "float", 1.0, "weight of the linearity loss", low=0),
    Param("seed", "int", 0, "seed of the weights and of the batch order", low=0),
    Param("dropout", "float", 0.1, "dropout probability", low=0, high=1, high_open=True),
    Param("threads", "int", 1, "torch CPU threads while fitting/predicting (0: leave torch's "
          "setting)", low=0),
    Param("device", "choice", "cpu", "where the network trains and predicts (cuda: the "
          "first visible GPU; saved models load on the CPU)", choices=DEVICES),
    Param("select_by", "choice", "srocc+plcc", "validation score that picks the epoch",
          choices=EPOCH_SELECTION),
    Param("refit", "bool", True, "retrain on train + validation for the chosen number of "
          "epochs (false: keep the best epoch's network, trained on train only)"),
    Param("calibrate", "bool", True, "map outputs onto training MOS with a fitted line"),
    Param("standardize", "bool", True, "z-score the inputs per channel (training statistics)"),
)
TRAIN_DEFAULTS: dict[str, Any] = {p.name: p.default for p in TRAIN_PARAMS}
"""Defaults of :data:`TRAIN_PARAMS` (for regressors that still declare a plain dict)."""


def _val_score(y: np.ndarray, p: np.ndarray, select_by: str = "srocc+plcc") -> float:
    """SROCC + PLCC (or SROCC) on the validation part (higher is better; -inf when
    undefined)."""
    from scipy import stats

    if len(y) < 3 or np.ptp(p) == 0 or np.ptp(y) == 0 or not np.all(np.isfinite(p)):
        return -math.inf
    s = float(stats.spearmanr(y, p)[0])
    if select_by == "srocc":
        return s
    return s + float(np.corrcoef(y, p)[0, 1])


def module_device(module: nn.Module) -> torch.device:
    """Where ``module``'s weights are (CPU for a module without any)."""
    first = next(module.parameters(), None)
    return torch.device("cpu") if first is None else first.device


def predict_network(module: nn.Module, inputs: Mapping[str, np.ndarray],
                    batch_size: int = 256) -> np.ndarray:
    """Network outputs for all videos, in evaluation mode, without gradients; batches go to
    the module's device, the inputs stay in host memory."""
    module.eval()
    device = module_device(module)
    n = len(next(iter(inputs.values())))
    out = []
    with torch.no_grad():
        for start in range(0, n, batch_size):
            batch = {k: torch.from_numpy(np.ascontiguousarray(v[start:start + batch_size]))
                     .to(device, non_blocking=True) for k, v in inputs.items()}
            out.append(module(**batch).reshape(-1).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def _optimizer(module: nn.Module, params: Mapping[str, Any]) -> torch.optim.Optimizer:
    cls = torch.optim.Adam if params.get("optimizer", "adamw") == "adam" else torch.optim.AdamW
    return cls(module.parameters(), lr=float(params["lr"]),
               weight_decay=float(params["weight_decay"]))


def train_network(
    module: nn.Module,
    inputs: Mapping[str, np.ndarray],
    y: np.ndarray,
    val_inputs: Mapping[str, np.ndarray] | None,
    y_val: np.ndarray | None,
    params: Mapping[str, Any],
    *,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Train ``module`` in place on (standardised) ``inputs`` and targets ``y``.

    The schedule spans ``params["epochs"]``; ``stop_after`` stops earlier (a refit for the
    chosen number of epochs). Returns what was chosen: the best epoch, its validation
    score, the loss history.
    """
    loss_cfg = LossConfig(name=params["loss"], alpha=float(params["alpha"]),
                          beta=float(params["beta"]))
    loss_fn = make_loss(loss_cfg)
    epochs = int(params["epochs"])
    run = epochs if stop_after is None else max(1, min(int(stop_after), epochs))
    batch_size = int(params["batch_size"])
    select_by = params.get("select_by", "srocc+plcc")
    n = len(y)
    if loss_cfg.needs_pairs and n < 2:
        raise RegressorError(f"loss '{loss_cfg.name}' needs at least 2 training videos")
    generator = torch.Generator().manual_seed(int(params["seed"]))
    optimizer = _optimizer(module, params)
    steps_per_epoch = max(1, math.ceil(n / batch_size))
    schedule = params.get("schedule", "cosine")
    scheduler = None
    if schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=max(1, epochs * steps_per_epoch)
        )
    elif schedule == "step":  # per epoch, as VSFA.py sets it up
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(1, epochs // 10),
                                                    gamma=0.8)
    device = module_device(module)  # batches go there; the whole inputs stay in host memory
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in inputs.items()}
    target = torch.from_numpy(np.asarray(y, dtype=np.float32))
    use_val = val_inputs is not None and y_val is not None and len(y_val) >= 3
    best_score, best_epoch, best_state = -math.inf, run, None
    history = []
    for epoch in range(1, run + 1):
        module.train()
        order = torch.randperm(n, generator=generator)
        total, batches = 0.0, 0
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            if loss_cfg.needs_pairs and len(idx) < 2:
                continue  # a single left-over video has no pairs; it is in the next epoch
            batch = {k: v[idx].to(device, non_blocking=True) for k, v in tensors.items()}
            pred = module(**batch).reshape(-1)
            loss = loss_fn(pred, target[idx].to(device, non_blocking=True))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if schedule == "cosine":
                scheduler.step()
            total += float(loss.detach())
            batches += 1
        if schedule == "step":
            scheduler.step()
        entry = {"epoch": epoch, "loss": total / max(1, batches)}
        if use_val:
            score = _val_score(np.asarray(y_val), predict_network(module, val_inputs), select_by)
            entry["val_score"] = score
            if score > best_score:
                best_score, best_epoch = score, epoch
                best_state = copy.deepcopy(module.state_dict())
        history.append(entry)
    if best_state is not None:
        module.load_state_dict(best_state)
    info: dict[str, Any] = {
        "epochs_run": run,
        "best_epoch": best_epoch if best_state is not None else run,
        "selected_on": f"validation ({select_by.upper()})" if best_state is not None
        else "last epoch",
        "final_train_loss": history[-1]["loss"] if history else None,
    }
    if best_state is not None:
        info["val_score"] = best_score
    elif use_val:
        info["note"] = "validation scores were undefined (constant predictions); kept last epoch"
    elif stop_after is None:
        info["note"] = "no validation part of at least 3 videos; kept the last epoch"
    return info


@contextlib.contextmanager
def torch_threads(n: int):
    """Run with ``n`` torch CPU threads, then restore (0 leaves the setting alone).

    The heads are small: one thread is fastest, and on a busy 2-core machine two threads
    spin-wait (the mlp head took 144 s per split with 2 threads, 6.6 s with 1).
    """
    before = torch.get_num_threads()
    if n > 0 and n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


class TorchRegressor(Regressor):
    """Base of the torch regressors: standardise, train, refit, calibrate, save as
    safetensors.

    Subclasses set ``roles``, ``channel_axes`` (per role, the channel axis of the per-video
    shape; roles in ``unscaled_roles`` reach the network as stored: no standardisation, no
    copy, e.g. float16 clip maps a pretrained head expects raw) and implement
    :meth:`build`.
    """

    channel_axes: dict[str, int] = {}
    unscaled_roles: tuple[str, ...] = ()
    params_spec = TRAIN_PARAMS

    def _check_params(self) -> None:
        p = self.params
        if p["loss"] in PAIRWISE and int(p["batch_size"]) < 2:
            raise RegressorError(
                f"{self.who}: parameter 'batch_size' must be >= 2 for loss '{p['loss']}', "
                f"got {p['batch_size']}"
            )
        if p["loss"] == "mono+lin" and p["alpha"] == 0 and p["beta"] == 0:
            raise RegressorError(f"{self.who}: parameters 'alpha' and 'beta' are both 0: "
                                 "the loss would be constant")

    def build(self, shapes: Mapping[str, list[int]]) -> nn.Module:
        """A fresh network for per-video input ``shapes`` (role -> shape)."""
        raise NotImplementedError

    # -- hooks (vsfa overrides them)
    def _fit_scalers(self, inputs: Mapping[str, np.ndarray]) -> dict[str, Standardizer]:
        if not self.params.get("standardize", True):
            return {}
        return {role: Standardizer.fit(inputs[role], self.channel_axes.get(role, -1))
                for role in self.roles if role not in self.unscaled_roles}

    def _fit_target(self, y_unit: np.ndarray) -> TargetScaler:
        return TargetScaler.fit(y_unit)

    def _standardise(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {role: (self._scalers[role].transform(inputs[role]) if role in self._scalers
                       else np.asarray(inputs[role])) for role in self.roles}

    def _fit(self, inputs, y_unit, val_inputs, y_val_unit) -> dict[str, Any]:
        with torch_threads(int(self.params["threads"])):
            return self._fit_network(inputs, y_unit, val_inputs, y_val_unit)

    def _train_once(self, inputs, y_unit, val_inputs, y_val_unit,
                    stop_after: int | None = None) -> dict[str, Any]:
        torch.manual_seed(int(self.params["seed"]))
        self._scalers = self._fit_scalers(inputs)
        self._target = self._fit_target(y_unit)
        x = self._standardise(inputs)
        xv = None if val_inputs is None else self._standardise(val_inputs)
        yv = None if y_val_unit is None else self._target.transform(y_val_unit)
        self._net = self.build(self.input_shapes).to(self._device())
        return train_network(self._net, x, self._target.transform(y_unit), xv, yv, self.params,
                             stop_after=stop_after)

    def _device(self) -> str:
        from vqa_pipe.pipeline.device import resolve_device

        return resolve_device(self.params.get("device", "cpu"))

    def _fit_network(self, inputs, y_unit, val_inputs, y_val_unit) -> dict[str, Any]:
        info = self._train_once(inputs, y_unit, val_inputs, y_val_unit)
        chosen = info["selected_on"] != "last epoch"
        if self.params["refit"] and chosen:
            both = {role: np.concatenate([inputs[role], val_inputs[role]]) for role in self.roles}
            y_both = np.concatenate([y_unit, y_val_unit])
            refit = self._train_once(both, y_both, None, None, stop_after=info["best_epoch"])
            info["refit_on"] = "train+val"
            info["refit_epochs"] = refit["epochs_run"]
            info["final_train_loss"] = refit["final_train_loss"]
            inputs, y_unit = both, y_both
        else:
            info["refit_on"] = "train"
            if self.params["refit"] and val_inputs is not None:
                info["note_refit"] = "no epoch was chosen on validation, so no refit"
        # Map network outputs onto the (scaled) training targets with a least-squares line.
        yz = self._target.transform(y_unit)
        if self.params.get("calibrate", True):
            out = predict_network(self._net, self._standardise(inputs))
            if np.ptp(out) > 0:
                slope, intercept = np.polyfit(out, yz, 1)
            else:
                slope, intercept = 0.0, float(yz.mean())
                info["note_constant"] = "the network output is constant on the training part"
        else:
            slope, intercept = 1.0, 0.0
        self._calibration = np.array([slope, intercept], dtype=np.float64)
        info["calibration"] = [float(slope), float(intercept)]
        info["n_parameters"] = int(sum(p.numel() for p in self._net.parameters()))
        return info

    def _predict_unit(self, inputs) -> np.ndarray:
        with torch_threads(int(self.params["threads"])):
            self._net.to(self._device())
            out = predict_network(self._net, self._standardise(inputs))
        slope, intercept = self._calibration
        return self._target.inverse(slope * out + intercept)

    def _state(self) -> dict[str, np.ndarray]:
        state = {f"net.{k}": v.detach().cpu().numpy() for k, v in self._net.state_dict().items()}
        for role, scaler in self._scalers.items():
            state.update(scaler.state(f"scaler.{role}"))
        state.update(self._target.state())
        state["calibration"] = self._calibration
        return state

    def _set_state(self, tensors: Mapping[str, np.ndarray]) -> None:
        self._scalers = {role: Standardizer.from_state(tensors, f"scaler.{role}")
                         for role in self.roles if f"scaler.{role}.mean" in tensors}
        self._target = TargetScaler.from_state(tensors)
        self._calibration = np.asarray(tensors["calibration"], dtype=np.float64)
        self._net = self.build(self.input_shapes)
        weights = {k[4:]: torch.from_numpy(np.array(v)) for k, v in tensors.items()
                   if k.startswith("net.")}
        try:
            self._net.load_state_dict(weights, strict=True)
        except RuntimeError as err:
            raise RegressorError(f"saved weights do not fit '{self.name}': {err}") from None
        self._net.eval()
