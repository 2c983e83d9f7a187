"""``vsfa``: VSFA as lidq92/VSFA's ``VSFA.py`` trains it (Li et al., "Quality Assessment of
In-the-Wild Videos", ACM MM 2019), on the per-frame CLIP prompt scores.

The network (``VSFA.VSFA``): a linear reduction of every frame's features to 128 values
(``ANN`` with one layer: a single ``Linear``, no activation, no dropout), a GRU of hidden
size 32 over the frames, a linear per-frame quality ``q_t``, and the subjectively-inspired
temporal pooling ``TP`` with tau = 12 and beta = 0.5 over the video's real frames only::

    l_t = min(q_{t-tau+1} .. q_t)                            memory (past frames)
    m_t = sum_{s=t}^{t+tau-1} q_s exp(-q_s) / sum exp(-q_s)  current (softmin, future frames)
    score = mean_t (beta m_t + (1 - beta) l_t)

Frames: every frame of ``semantic/frame_scores`` (the variable-length ``frames`` role,
zero-padded; the GRU is causal, so padding never reaches a real frame's score and the pooling
only looks at real frames), as VSFA feeds all frames of a video, not a resampled T.

Training (``VSFA.py``'s ``__main__``): L1 loss on ``MOS / max MOS``, Adam, learning rate
1e-5, no weight decay, batches of 16 shuffled each epoch, 2000 epochs; after every epoch the
validation SROCC is computed and the network of the best epoch is kept (and tested): no
refit, no calibration, no input standardisation. ``VSFA.py`` builds a ``StepLR`` but never
calls its ``step()``, so its learning rate stays 1e-5: ``schedule="none"`` here
(``schedule="step"`` does what it set up).

Departures: the MOS is divided by the training part's max MOS (VSFA divides by the max of
the whole dataset, test videos included); per-frame features are CLIP prompt scores, not
ResNet-50 mean+std pooled features (4096); the seed defaults to 0 (VSFA's is 19920517).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn
from vqa_pipe.pipeline.feature_table import FRAME_COUNTS, FRAMES
from vqa_pipe.pipeline.regressors import (
    Param,
    RegressorError,
    Standardizer,
    TargetScaler,
    register_regressor,
)
from vqa_pipe.pipeline.regressors._torch_training import EPOCH_SELECTION, TorchRegressor


def vsfa_pool(q: torch.Tensor, counts: torch.Tensor, tau: int = 12,
              beta: float = 0.5) -> torch.Tensor:
    """VSFA's temporal pooling of per-frame scores ``q`` (B, T) into one score per video
    (B,): the mean over each video's first ``counts[i]`` frames of
    :func:`vsfa_pool_frames`."""
    counts = counts.reshape(-1).to(torch.long)
    per_frame = vsfa_pool_frames(q, counts, tau, beta)
    return per_frame.sum(dim=1) / counts.clamp(min=1).to(q.dtype)


def vsfa_pool_frames(q: torch.Tensor, counts: torch.Tensor, tau: int = 12,
                     beta: float = 0.5) -> torch.Tensor:
    """Per-frame values ``beta m_t + (1 - beta) l_t`` of VSFA's ``TP`` (B, T), each video
    using its first ``counts[i]`` frames only; 0 after a video's last frame."""
    b, t = q.shape
    counts = counts.reshape(-1).to(torch.long)
    tau = max(1, int(tau))
    frame = torch.arange(t, device=q.device)
    real = frame[None, :] < counts[:, None]  # (B, T)
    # memory: min over frames t-tau+1 .. t (before the first frame: +inf, never the min)
    past = torch.nn.functional.pad(q, (tau - 1, 0), value=float("inf")).unfold(1, tau, 1)
    memory = past.min(dim=-1).values
    # current: softmin-weighted mean over frames t .. t+tau-1 that are real frames
    future = torch.nn.functional.pad(q, (0, tau - 1), value=0.0).unfold(1, tau, 1)
    ahead = frame[:, None] + torch.arange(tau, device=q.device)[None, :]  # (T, tau)
    valid = ahead[None, :, :] < counts[:, None, None]  # (B, T, tau)
    logits = torch.where(valid, -future, torch.full_like(future, -1e9))
    current = (torch.softmax(logits, dim=-1) * future).sum(dim=-1)
    per_frame = beta * current + (1 - beta) * memory
    return torch.where(real, per_frame, torch.zeros_like(per_frame))


class VSFANet(nn.Module):
    """Reduction (VSFA's ``ann.fc0``), GRU (``rnn``), frame quality (``q``), pooling."""

    def __init__(self, n_features: int, reduced: int = 128, hidden: int = 32, tau: int = 12,
                 gamma: float = 0.5, dropout: float = 0.0) -> None:
        super().__init__()
        self.reduce = nn.Linear(n_features, reduced)
        self.drop = nn.Dropout(dropout)
        self.gru = nn.GRU(reduced, hidden, batch_first=True)
        self.score = nn.Linear(hidden, 1)
        self.tau, self.gamma = int(tau), float(gamma)

    def frame_scores(self, frames: torch.Tensor) -> torch.Tensor:
        h, _ = self.gru(self.drop(self.reduce(frames)))
        return self.score(h).squeeze(-1)  # (B, T)

    def forward(self, frames: torch.Tensor, frame_counts: torch.Tensor) -> torch.Tensor:
        counts = frame_counts.reshape(-1).to(torch.long)
        longest = max(1, int(counts.max())) if counts.numel() else 1
        q = self.frame_scores(frames[:, :longest].float())
        return vsfa_pool(q, counts, self.tau, self.gamma)

    @staticmethod
    def upstream_names() -> dict[str, str]:
        """Our parameter names -> lidq92/VSFA's ``VSFA`` state-dict names."""
        names = {"reduce.weight": "ann.fc0.weight", "reduce.bias": "ann.fc0.bias",
                 "score.weight": "q.weight", "score.bias": "q.bias"}
        for part in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
            names[f"gru.{part}"] = f"rnn.{part}"
        return names


@register_regressor("vsfa")
class VSFARegressor(TorchRegressor):
    """VSFA exactly: every frame, reduce to 128, GRU 32, temporal pooling tau 12, L1, Adam
    1e-5, 2000 epochs, best validation SROCC."""

    roles = (FRAMES, FRAME_COUNTS)
    channel_axes = {FRAMES: -1}
    unscaled_roles = (FRAME_COUNTS,)
    params_spec = (
        Param("epochs", "int", 2000, "training epochs (VSFA: 2000)", low=1),
        Param("batch_size", "int", 16, "videos per mini-batch (VSFA: 16)", low=1),
        Param("lr", "float", 1e-5, "learning rate (VSFA: 1e-5)", low=0, low_open=True),
        Param("weight_decay", "float", 0.0, "weight decay (VSFA: 0)", low=0),
        Param("optimizer", "choice", "adam", "optimiser (VSFA: adam)", choices=("adamw", "adam")),
        Param("schedule", "choice", "none", "learning-rate schedule (VSFA.py never steps its "
              "StepLR: none)", choices=("cosine", "none", "step")),
        Param("loss", "choice", "l1", "training loss (VSFA: l1)",
              choices=("l1", "mse", "mono+lin", "mono", "lin")),
        Param("select_by", "choice", "srocc", "validation score that picks the epoch (VSFA: "
              "srocc)", choices=EPOCH_SELECTION),
        Param("refit", "bool", False, "retrain on train + validation for the chosen epochs "
              "(VSFA: no, the best epoch's network is tested)"),
        Param("calibrate", "bool", False, "fit a line from outputs to training MOS (VSFA: no)"),
        Param("standardize", "bool", False, "z-score the per-frame features on the training "
              "part's real frames (VSFA: no)"),
        Param("dropout", "float", 0.0, "dropout after the reduction (VSFA's one-layer ANN "
              "applies none)", low=0, high=1, high_open=True),
        Param("reduced", "int", 128, "width of the linear reduction (VSFA: 128)", low=1),
        Param("hidden", "int", 32, "GRU hidden size (VSFA: 32)", low=1),
        Param("tau", "int", 12, "temporal pooling window, in frames (VSFA: 12)", low=1),
        Param("gamma", "float", 0.5, "weight of the current-quality term in the pooling "
              "(VSFA's beta: 0.5)", low=0, high=1),
        Param("target", "choice", "max", "what the network learns: 'max' MOS / max training "
              "MOS (VSFA), 'z' z-scored MOS", choices=("max", "z")),
    )

    def build(self, shapes: Mapping[str, list[int]]) -> nn.Module:
        shape = shapes.get(FRAMES)
        if shape is None or len(shape) != 2:
            raise RegressorError(f"{self.who} needs '{FRAMES}' features of shape (F, 2r), "
                                 f"got {shape}")
        p = self.params
        return VSFANet(int(shape[1]), p["reduced"], p["hidden"], p["tau"], p["gamma"],
                       p["dropout"])

    def _fit_target(self, y_unit: np.ndarray) -> TargetScaler:
        bounds = self._mos_bounds() if self.params["target"] == "max" else None
        top = None
        if bounds is not None:
            low, high = bounds
            top = float(np.max(low + np.asarray(y_unit) * (high - low)))
        if top is None or top <= 0:
            if self.params["target"] == "max":
                self._target_note = ("z (target 'max' needs one MOS scale with a positive "
                                     f"max; training scales: {', '.join(self.train_scales)})")
            else:
                self._target_note = "z"
            return TargetScaler.fit(y_unit)
        self._target_note = f"MOS / {top:g} (the training part's max MOS)"
        # label = mos / top = (unit - m) / s
        return TargetScaler(-low / (high - low), top / (high - low))

    def _fit_scalers(self, inputs: Mapping[str, np.ndarray]) -> dict[str, Standardizer]:
        if not self.params["standardize"]:
            return {}
        frames, counts = inputs[FRAMES], np.asarray(inputs[FRAME_COUNTS]).ravel()
        real = np.concatenate([frames[i, :c] for i, c in enumerate(counts)])
        return {FRAMES: Standardizer.fit(real, -1)}

    def _standardise(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        frames = np.asarray(inputs[FRAMES], dtype=np.float32)
        counts = np.asarray(inputs[FRAME_COUNTS]).reshape(-1).astype(np.int64)
        if FRAMES in self._scalers:
            real = np.arange(frames.shape[1])[None, :] < counts[:, None]
            frames = self._scalers[FRAMES].transform(frames) * real[:, :, None]
        return {FRAMES: frames.astype(np.float32), FRAME_COUNTS: counts}

    def _fit(self, inputs, y_unit, val_inputs, y_val_unit) -> dict[str, Any]:
        info = super()._fit(inputs, y_unit, val_inputs, y_val_unit)
        counts = np.asarray(inputs[FRAME_COUNTS]).ravel()
        info["frames_per_video"] = [int(counts.min()), int(counts.max())]
        info["target"] = self._target_note
        return info
