"""``mlp``: the CLiF-VQA semantic MLP (eq. 8) and a regression head.

The semantic branch stores, per frame, 2r CLIP prompt scores; the feature table resamples
them to a fixed T frames, giving a T x 2r map ``F`` per video (column ``d`` is description
``d``'s score over time). Eq. 8 turns it into ``F_s``, a 2r-vector with one value per
description: the same FC-GELU-FC runs along time on every description's column,
``F_s[d] = FC2(GELU(FC1(F[:, d])))`` with ``FC1: T -> semantic_hidden`` and
``FC2: semantic_hidden -> 1`` (weights shared across descriptions). The regression head
(FC-GELU-FC, ``2r -> hidden -> 1``) maps ``F_s`` to the score.

``semantic="flatten"`` keeps this project's earlier variant (FC-GELU-FC over the flattened
T x 2r map into a ``hidden`` vector), which is not the paper's eq. 8.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn
from vqa_pipe.pipeline.feature_table import SEQUENCE
from vqa_pipe.pipeline.regressors import Param, RegressorError, register_regressor
from vqa_pipe.pipeline.regressors._torch_training import TorchRegressor

SEMANTIC_MODES = ("time", "flatten")


class SemanticMLP(nn.Module):
    """CLiF-VQA eq. 8: (B, T, 2r) -> F_s (B, 2r), FC-GELU-FC along time per description."""

    def __init__(self, n_frames: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(n_frames, hidden)
        self.act = nn.GELU()
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, 1)

    def forward(self, seq):
        columns = seq.transpose(1, 2)  # (B, 2r, T): one row per description
        return self.fc2(self.drop(self.act(self.fc1(columns)))).squeeze(-1)


class FlattenSemanticMLP(nn.Module):
    """The earlier variant: FC-GELU-FC over the flattened T x 2r map (not eq. 8)."""

    def __init__(self, n_frames: int, n_scores: int, hidden: int, out_dim: int,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(n_frames * n_scores, hidden)
        self.act = nn.GELU()
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, out_dim)

    def forward(self, seq):
        return self.fc2(self.drop(self.act(self.fc1(seq.flatten(1)))))


def semantic_module(mode: str, n_frames: int, n_scores: int, semantic_hidden: int,
                    flat_out: int, dropout: float) -> tuple[nn.Module, int]:
    """The semantic module of ``mode`` and the length of the vector it gives."""
    if mode == "time":
        return SemanticMLP(n_frames, semantic_hidden, dropout), n_scores
    return FlattenSemanticMLP(n_frames, n_scores, flat_out, flat_out, dropout), flat_out


class RegressionHead(nn.Module):
    """FC-GELU-FC from a feature vector to one quality score per video."""

    def __init__(self, in_dim: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden)
        self.act = nn.GELU()
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, 1)

    def forward(self, x):
        return self.fc2(self.drop(self.act(self.fc1(x)))).squeeze(-1)


class MLPNet(nn.Module):
    def __init__(self, n_frames: int, n_scores: int, hidden: int, semantic_hidden: int,
                 dropout: float, mode: str = "time") -> None:
        super().__init__()
        self.semantic, dim = semantic_module(mode, n_frames, n_scores, semantic_hidden, hidden,
                                             dropout)
        self.head = RegressionHead(dim, hidden if mode == "time" else max(8, hidden // 2),
                                   dropout)

    def forward(self, sequence):
        return self.head(self.semantic(sequence))


def sequence_shape(shapes: Mapping[str, list[int]], who: str) -> tuple[int, int]:
    shape = shapes.get(SEQUENCE)
    if shape is None or len(shape) != 2:
        raise RegressorError(f"{who} needs '{SEQUENCE}' features of shape (T, 2r), got {shape}")
    return int(shape[0]), int(shape[1])


@register_regressor("mlp")
class MLPRegressor(TorchRegressor):
    """CLiF-VQA semantic MLP (eq. 8) over the per-frame CLIP prompt scores, then FC-GELU-FC."""

    roles = (SEQUENCE,)
    channel_axes = {SEQUENCE: -1}
    params_spec = (
        Param("hidden", "int", 128, "width of the regression head", low=1),
        Param("semantic_hidden", "int", 64, "width of eq. 8's FC layer along time", low=1),
        Param("semantic", "choice", "time", "eq. 8 along time per description (the paper), "
              "or FC over the flattened T x 2r map (the earlier variant)",
              choices=SEMANTIC_MODES),
    )

    def build(self, shapes: Mapping[str, list[int]]) -> nn.Module:
        n_frames, n_scores = sequence_shape(shapes, self.who)
        p = self.params
        return MLPNet(n_frames, n_scores, int(p["hidden"]), int(p["semantic_hidden"]),
                      float(p["dropout"]), p["semantic"])
