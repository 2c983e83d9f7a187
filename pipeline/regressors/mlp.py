"""``mlp``: the CLiF-VQA semantic MLP (eq. 8) and a regression head.

The semantic branch stores, per frame, 2r CLIP prompt scores; the feature table resamples
them to a fixed T frames, giving a T x 2r map per video. The semantic MLP is
FC-GELU-FC over the flattened map; the regression head (FC-GELU-FC) maps it to one score.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn
from vqa_pipe.pipeline.feature_table import SEQUENCE
from vqa_pipe.pipeline.regressors import RegressorError, register_regressor
from vqa_pipe.pipeline.regressors._torch_training import TRAIN_DEFAULTS, TorchRegressor


class SemanticMLP(nn.Module):
    """FC-GELU-FC over the flattened T x 2r semantic map (CLiF-VQA eq. 8)."""

    def __init__(self, n_frames: int, n_scores: int, hidden: int, out_dim: int,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(n_frames * n_scores, hidden)
        self.act = nn.GELU()
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, out_dim)

    def forward(self, seq):
        return self.fc2(self.drop(self.act(self.fc1(seq.flatten(1)))))


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
    def __init__(self, n_frames: int, n_scores: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.semantic = SemanticMLP(n_frames, n_scores, hidden, hidden, dropout)
        self.head = RegressionHead(hidden, max(8, hidden // 2), dropout)

    def forward(self, sequence):
        return self.head(self.semantic(sequence))


def sequence_shape(shapes: Mapping[str, list[int]], who: str) -> tuple[int, int]:
    shape = shapes.get(SEQUENCE)
    if shape is None or len(shape) != 2:
        raise RegressorError(f"{who} needs '{SEQUENCE}' features of shape (T, 2r), got {shape}")
    return int(shape[0]), int(shape[1])


@register_regressor("mlp")
class MLPRegressor(TorchRegressor):
    """CLiF-VQA semantic MLP over the per-frame CLIP prompt scores."""

    roles = (SEQUENCE,)
    channel_axes = {SEQUENCE: -1}
    defaults = {**TRAIN_DEFAULTS, "hidden": 128}

    def build(self, shapes: Mapping[str, list[int]]) -> nn.Module:
        n_frames, n_scores = sequence_shape(shapes, self.who)
        return MLPNet(n_frames, n_scores, int(self.params["hidden"]),
                      float(self.params["dropout"]))
