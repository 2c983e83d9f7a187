"""Training losses of CLiF-VQA (eqs. 14-16), plus a margin hinge, L1 and MSE.

* Monotonicity (eq. 14), ``mono``: over all ordered pairs ``(i, j)`` of the ``m`` videos of a
  batch, ties and ``i == j`` included, divided by ``m**2``::

      L_mono = 1/m**2 * sum_i sum_j max(0, |q_i - q_j| - f(q_i, q_j) * (p_i - p_j))
      f(q_i, q_j) = 1 if q_i >= q_j else -1

  ``q`` are the targets, ``p`` the predictions. The margin is the targets' own difference, so
  right-ordered predictions still cost something until they are at least as far apart as
  the targets (predictions shrunk towards their mean are penalised). A tied pair costs
  ``|p_i - p_j|`` (f = 1 both ways): ties pull their predictions together.
* Pairwise hinge, ``hinge``: the margin variant this project used before eq. 14 was
  implemented as written. Over unordered pairs with different targets (ties left out)::

      L_hinge = mean over (i < j), q_i != q_j, of max(0, margin - (p_i - p_j) sign(q_i - q_j))

  (``margin`` defaults to 0: right-ordered predictions cost nothing, whatever their spread).
* Linearity (eq. 15), ``lin``: ``L_lin = (1 - PLCC(p, q)) / 2``, in [0, 1].
* Combined (eq. 16): ``L = alpha * L_mono + beta * L_lin`` (``mono+lin``, the default);
  ``hinge+lin`` combines the hinge in its place.

The torch regressors pass z-scored targets (unit MOS standardised on the training part), so
the margins of eq. 14 are in those units. The correlation-based losses do not fix the
predictions' scale; the torch regressors fit a line from predictions to training MOS after
training so predictions land on the MOS scale.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from vqa_pipe.pipeline.errors import VqaPipeError

LOSSES: tuple[str, ...] = ("mono+lin", "l1", "mse", "mono", "lin", "hinge", "hinge+lin")
PAIRWISE: tuple[str, ...] = ("mono+lin", "mono", "lin", "hinge", "hinge+lin")
"""Losses that need at least two videos in a batch."""


class LossError(VqaPipeError):
    """An unknown loss or bad loss parameters."""


def monotonicity_loss(pred, target):
    """CLiF-VQA eq. 14, as written: ordered pairs, ties included, divided by ``m**2``."""
    pred = pred.reshape(-1)
    target = target.reshape(-1).to(pred.dtype)
    m = pred.numel()
    if m == 0:
        raise LossError("the monotonicity loss needs at least 1 video")
    dq = target[:, None] - target[None, :]  # q_i - q_j
    dp = pred[:, None] - pred[None, :]  # p_i - p_j
    f = (dq >= 0).to(pred.dtype) * 2 - 1  # 1 if q_i >= q_j else -1
    return (dq.abs() - f * dp).clamp(min=0).sum() / (m * m)


def pairwise_hinge_loss(pred, target, margin: float = 0.0):
    """Hinge on rank order over unordered pairs with different targets (not eq. 14: see the
    module docstring); 0 when no pair has different targets."""
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
    """Which loss, its weights ``alpha`` (monotonicity or hinge) and ``beta`` (linearity), and
    the hinge's ``margin`` (eq. 14 has no margin parameter: its margin is ``|q_i - q_j|``)."""

    name: str = "mono+lin"
    alpha: float = 1.0
    beta: float = 1.0
    margin: float = 0.0

    def __post_init__(self) -> None:
        if self.name not in LOSSES:
            raise LossError(f"unknown loss {self.name!r}; choose one of {', '.join(LOSSES)}")
        if self.alpha < 0 or self.beta < 0:
            raise LossError(f"loss weights must be >= 0, got alpha={self.alpha} beta={self.beta}")
        if self.name.endswith("+lin") and self.alpha == 0 and self.beta == 0:
            raise LossError("alpha and beta are both 0: the loss would be constant")
        if self.margin < 0:
            raise LossError(f"the hinge margin must be >= 0, got {self.margin}")

    @property
    def needs_pairs(self) -> bool:
        """True when a batch must hold at least 2 videos."""
        return self.name in PAIRWISE


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
        return monotonicity_loss
    if name == "hinge":
        return lambda p, g: pairwise_hinge_loss(p, g, margin)
    if name == "lin":
        return linearity_loss
    if name == "hinge+lin":
        return lambda p, g: alpha * pairwise_hinge_loss(p, g, margin) + beta * linearity_loss(p, g)

    def combined(p, g):
        return alpha * monotonicity_loss(p, g) + beta * linearity_loss(p, g)

    return combined
