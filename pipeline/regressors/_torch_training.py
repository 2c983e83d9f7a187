"""The training loop shared by the torch regressors (``mlp``, ``gru``, ``fused``).

* Inputs are standardised per channel on the training part; targets are z-scored unit MOS.
* AdamW with cosine learning-rate decay, mini-batches shuffled with a fixed seed.
* After every epoch the model is scored on the validation part (SROCC + PLCC); the best
  epoch's weights are kept. Nothing is chosen on a test part. Without a validation part
  (or one under 3 videos) the last epoch is kept, and ``fit_info`` says so.
* Correlation losses leave the output's scale free, so a line from network output to
  training targets is fitted after training (on the training part) and kept with the model.
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
from vqa_pipe.pipeline.regressors import Regressor, RegressorError, Standardizer, TargetScaler

TRAIN_DEFAULTS: dict[str, Any] = {
    "epochs": 60,
    "batch_size": 32,
    "lr": 1e-3,
    "weight_decay": 1e-3,
    "loss": "mono+lin",
    "alpha": 1.0,  # weight of the monotonicity (eq. 14) or hinge loss
    "beta": 1.0,  # weight of the linearity loss
    "seed": 0,
    "dropout": 0.1,
    "threads": 1,  # torch CPU threads while fitting/predicting (0: leave torch's setting)
}


def _val_score(y: np.ndarray, p: np.ndarray) -> float:
    """SROCC + PLCC on the validation part (higher is better; -inf when undefined)."""
    from scipy import stats

    if len(y) < 3 or np.ptp(p) == 0 or np.ptp(y) == 0 or not np.all(np.isfinite(p)):
        return -math.inf
    return float(stats.spearmanr(y, p)[0] + np.corrcoef(y, p)[0, 1])


def predict_network(module: nn.Module, inputs: Mapping[str, np.ndarray],
                    batch_size: int = 256) -> np.ndarray:
    """Network outputs for all videos, in evaluation mode, without gradients."""
    module.eval()
    n = len(next(iter(inputs.values())))
    out = []
    with torch.no_grad():
        for start in range(0, n, batch_size):
            batch = {k: torch.from_numpy(np.ascontiguousarray(v[start:start + batch_size]))
                     for k, v in inputs.items()}
            out.append(module(**batch).reshape(-1).double().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def train_network(
    module: nn.Module,
    inputs: Mapping[str, np.ndarray],
    y: np.ndarray,
    val_inputs: Mapping[str, np.ndarray] | None,
    y_val: np.ndarray | None,
    params: Mapping[str, Any],
) -> dict[str, Any]:
    """Train ``module`` in place on standardised ``inputs`` and z-scored ``y``.

    Returns what was chosen: the best epoch, its validation score, the loss history.
    """
    loss_cfg = LossConfig(name=params["loss"], alpha=float(params["alpha"]),
                          beta=float(params["beta"]))
    loss_fn = make_loss(loss_cfg)
    epochs = int(params["epochs"])
    batch_size = int(params["batch_size"])
    n = len(y)
    if loss_cfg.needs_pairs and n < 2:
        raise RegressorError(f"loss '{loss_cfg.name}' needs at least 2 training videos")
    generator = torch.Generator().manual_seed(int(params["seed"]))
    optimizer = torch.optim.AdamW(module.parameters(), lr=float(params["lr"]),
                                  weight_decay=float(params["weight_decay"]))
    steps_per_epoch = max(1, math.ceil(n / batch_size))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=max(1, epochs * steps_per_epoch)
    )
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in inputs.items()}
    target = torch.from_numpy(np.asarray(y, dtype=np.float32))
    use_val = val_inputs is not None and y_val is not None and len(y_val) >= 3
    best_score, best_epoch, best_state = -math.inf, epochs, None
    history = []
    for epoch in range(1, epochs + 1):
        module.train()
        order = torch.randperm(n, generator=generator)
        total, batches = 0.0, 0
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            if loss_cfg.needs_pairs and len(idx) < 2:
                continue  # a single left-over video has no pairs; it is in the next epoch
            pred = module(**{k: v[idx] for k, v in tensors.items()}).reshape(-1)
            loss = loss_fn(pred, target[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += float(loss.detach())
            batches += 1
        entry = {"epoch": epoch, "loss": total / max(1, batches)}
        if use_val:
            score = _val_score(np.asarray(y_val), predict_network(module, val_inputs))
            entry["val_score"] = score
            if score > best_score:
                best_score, best_epoch = score, epoch
                best_state = copy.deepcopy(module.state_dict())
        history.append(entry)
    if best_state is not None:
        module.load_state_dict(best_state)
    info: dict[str, Any] = {
        "epochs_run": epochs,
        "best_epoch": best_epoch if best_state is not None else epochs,
        "selected_on": "validation (SROCC+PLCC)" if best_state is not None else "last epoch",
        "final_train_loss": history[-1]["loss"] if history else None,
    }
    if best_state is not None:
        info["val_score"] = best_score
    elif use_val:
        info["note"] = "validation scores were undefined (constant predictions); kept last epoch"
    else:
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
    """Base of the torch regressors: standardise, train, calibrate, save as safetensors.

    Subclasses set ``roles``, ``channel_axes`` (per role, the channel axis of the per-video
    shape) and implement :meth:`build`. Roles in ``raw_roles`` reach the network as stored
    (no standardisation, no copy: e.g. float16 clip maps a pretrained head expects raw).
    """

    channel_axes: dict[str, int] = {}
    raw_roles: tuple[str, ...] = ()
    defaults = dict(TRAIN_DEFAULTS)

    def _check_params(self) -> None:
        p = self.params
        if p["loss"] not in LOSSES:
            raise RegressorError(
                f"{self.who}: unknown loss {p['loss']!r}; choose one of {', '.join(LOSSES)}"
            )
        for key in ("epochs", "batch_size"):
            if int(p[key]) < 1:
                raise RegressorError(f"{self.who}: {key} must be >= 1, got {p[key]}")
        if p["loss"] in PAIRWISE and int(p["batch_size"]) < 2:
            raise RegressorError(f"{self.who}: loss '{p['loss']}' needs batch_size >= 2")
        if float(p["lr"]) <= 0:
            raise RegressorError(f"{self.who}: lr must be > 0, got {p['lr']}")
        if int(p["threads"]) < 0:
            raise RegressorError(f"{self.who}: threads must be >= 0, got {p['threads']}")
        if not 0 <= float(p["dropout"]) < 1:
            raise RegressorError(f"{self.who}: dropout must be in [0, 1), got {p['dropout']}")

    def build(self, shapes: Mapping[str, list[int]]) -> nn.Module:
        """A fresh network for per-video input ``shapes`` (role -> shape)."""
        raise NotImplementedError

    def _standardise(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {role: inputs[role] if role in self.raw_roles
                else self._scalers[role].transform(inputs[role]) for role in self.roles}

    def _fit(self, inputs, y_unit, val_inputs, y_val_unit) -> dict[str, Any]:
        with torch_threads(int(self.params["threads"])):
            return self._fit_network(inputs, y_unit, val_inputs, y_val_unit)

    def _fit_network(self, inputs, y_unit, val_inputs, y_val_unit) -> dict[str, Any]:
        torch.manual_seed(int(self.params["seed"]))
        self._scalers = {
            role: Standardizer.fit(inputs[role], self.channel_axes.get(role, -1))
            for role in self.roles if role not in self.raw_roles
        }
        self._target = TargetScaler.fit(y_unit)
        x = self._standardise(inputs)
        xv = None if val_inputs is None else self._standardise(val_inputs)
        yv = None if y_val_unit is None else self._target.transform(y_val_unit)
        self._net = self.build(self.input_shapes)
        info = train_network(self._net, x, self._target.transform(y_unit), xv, yv, self.params)
        # Map network outputs onto the (z-scored) training targets with a least-squares line.
        out = predict_network(self._net, x)
        yz = self._target.transform(y_unit)
        if np.ptp(out) > 0:
            slope, intercept = np.polyfit(out, yz, 1)
        else:
            slope, intercept = 0.0, float(yz.mean())
            info["note_constant"] = "the network output is constant on the training part"
        self._calibration = np.array([slope, intercept], dtype=np.float64)
        info["calibration"] = [float(slope), float(intercept)]
        info["n_parameters"] = int(sum(p.numel() for p in self._net.parameters()))
        return info

    def _predict_unit(self, inputs) -> np.ndarray:
        with torch_threads(int(self.params["threads"])):
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
                         for role in self.roles if role not in self.raw_roles}
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
