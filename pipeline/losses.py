"""Training losses of CLiF-VQA (eqs. 14-16), plus L1 and MSE.

* Monotonicity (eq. 14): a pairwise hinge on rank order. For every pair of videos with
  different MOS, the prediction difference should have the sign of the MOS difference::

      L_mono = mean over pairs (i, j), g_i != g_j, of max(0, margin - (p_i - p_j) * sign(g_i - g_j))

  (each unordered pair counts once; ``margin`` defaults to 0).
* Linearity (eq. 15): ``L_lin = (1 - PLCC(p, g)) / 2``, in [0, 1].
* Combined (eq. 16): ``L = alpha * L_mono + beta * L_lin`` (``mono+lin``, the default).

The correlation-based losses do not fix the predictions' scale; the torch regressors fit a
line from predictions to training MOS after training so predictions land on the MOS scale.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from vqa_pipe.pipeline.errors import VqaPipeError

LOSSES: tuple[str, ...] = ("mono+lin", "l1", "mse", "mono", "lin")


class LossError(VqaPipeError):
    """An unknown loss or bad loss parameters."""


def monotonicity_loss(pred, target, margin: float = 0.0):
    """Pairwise hinge on rank order (CLiF-VQA eq. 14); 0 when no pair has different targets."""
    import torch

    pred = pred.reshape(-1)
    target = target.reshape(-1).to(pred.dtype)
    dp = pred[:, None] - pred[None, :]
    sign = torch.sign(target[:, None] - target[None, :])
    upper = torch.triu(torch.ones_like(dp, dtype=torch.bool), diagonal=1)
    mask = upper & (sign != 0)
    if not bool(mask.any()):
        return pred.sum() * 0.0
    hinge = torch.relu(margin - dp * sign)
    return hinge[mask].mean()


def linearity_loss(pred, target, eps: float = 1e-8):
    """``(1 - PLCC(pred, target)) / 2`` (CLiF-VQA eq. 15)."""
    import torch

    pred = pred.reshape(-1)
    target = target.reshape(-1).to(pred.dtype)
    if pred.numel() < 2:
        raise LossError("the linearity loss needs a batch of at least 2 videos")
    p = pred - pred.mean()
    g = target - target.mean()
    r = (p * g).sum() / torch.sqrt((p * p).sum() * (g * g).sum() + eps)
    return (1.0 - r) / 2.0


@dataclass(frozen=True)
class LossConfig:
    """Which loss, and its weights ``alpha`` (monotonicity) and ``beta`` (linearity)."""

    name: str = "mono+lin"
    alpha: float = 1.0
    beta: float = 1.0
    margin: float = 0.0

    def __post_init__(self) -> None:
        if self.name not in LOSSES:
            raise LossError(f"unknown loss {self.name!r}; choose one of {', '.join(LOSSES)}")
        if self.alpha < 0 or self.beta < 0:
            raise LossError(f"loss weights must be >= 0, got alpha={self.alpha} beta={self.beta}")
        if self.name == "mono+lin" and self.alpha == 0 and self.beta == 0:
            raise LossError("alpha and beta are both 0: the loss would be constant")

    @property
    def needs_pairs(self) -> bool:
        """True when a batch must hold at least 2 videos."""
        return self.name in ("mono+lin", "mono", "lin")


def make_loss(config: LossConfig | str = "mono+lin", **kwargs) -> Callable:
    """A ``loss(pred, target) -> scalar tensor`` for ``config`` (a name or a LossConfig)."""
    import torch.nn.functional as F

    if isinstance(config, str):
        config = LossConfig(name=config, **kwargs)
    name, alpha, beta, margin = config.name, config.alpha, config.beta, config.margin
    if name == "l1":
        return lambda p, g: F.l1_loss(p.reshape(-1), g.reshape(-1).to(p.dtype))
    if name == "mse":
        return lambda p, g: F.mse_loss(p.reshape(-1), g.reshape(-1).to(p.dtype))
    if name == "mono":
        return lambda p, g: monotonicity_loss(p, g, margin)
    if name == "lin":
        return linearity_loss

    def combined(p, g):
        return alpha * monotonicity_loss(p, g, margin) + beta * linearity_loss(p, g)

    return combined
