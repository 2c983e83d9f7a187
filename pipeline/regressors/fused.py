"""``fused``: CLiF-VQA's fusion of semantic and spatial features (eqs. 10-13).

* semantic: the semantic MLP of :mod:`.mlp` over the T x 2r map (eq. 8);
* spatial: a Conv3D head over the Swin fragment feature maps ``(C, T', H', W')`` (the
  spatial branch's ``clip_maps``, averaged over clips by the feature table): pointwise
  Conv3D, GELU, pointwise Conv3D, global average pooling;
* the two vectors are concatenated and an FC-GELU-FC head gives the score.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from vqa_pipe.pipeline.feature_table import SEQUENCE, SPATIAL_MAPS
from vqa_pipe.pipeline.regressors import RegressorError, register_regressor
from vqa_pipe.pipeline.regressors._torch_training import TRAIN_DEFAULTS, TorchRegressor
from vqa_pipe.pipeline.regressors.mlp import RegressionHead, SemanticMLP, sequence_shape


class SpatialHead(nn.Module):
    """Conv3D head over (B, C, T', H', W') feature maps -> (B, hidden)."""

    def __init__(self, channels: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(channels, hidden, kernel_size=1)
        self.act = nn.GELU()
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv3d(hidden, hidden, kernel_size=1)

    def forward(self, maps):
        x = self.conv2(self.drop(self.act(self.conv1(maps))))
        return x.mean(dim=(2, 3, 4))


class FusedNet(nn.Module):
    def __init__(self, n_frames: int, n_scores: int, channels: int, hidden: int,
                 dropout: float) -> None:
        super().__init__()
        self.semantic = SemanticMLP(n_frames, n_scores, hidden, hidden, dropout)
        self.spatial = SpatialHead(channels, hidden, dropout)
        self.head = RegressionHead(2 * hidden, hidden, dropout)

    def forward(self, sequence, spatial_maps):
        fused = torch.cat([self.semantic(sequence), self.spatial(spatial_maps.float())], dim=1)
        return self.head(fused)


@register_regressor("fused")
class FusedRegressor(TorchRegressor):
    """Semantic MLP + Conv3D spatial head, concatenated, FC-GELU-FC."""

    roles = (SEQUENCE, SPATIAL_MAPS)
    channel_axes = {SEQUENCE: -1, SPATIAL_MAPS: 0}
    defaults = {**TRAIN_DEFAULTS, "hidden": 64}

    def build(self, shapes: Mapping[str, list[int]]) -> nn.Module:
        n_frames, n_scores = sequence_shape(shapes, self.who)
        maps = shapes.get(SPATIAL_MAPS)
        if maps is None or len(maps) != 4:
            raise RegressorError(
                f"{self.who} needs '{SPATIAL_MAPS}' of shape (C, T', H', W'), got {maps}"
            )
        return FusedNet(n_frames, n_scores, int(maps[0]), int(self.params["hidden"]),
                        float(self.params["dropout"]))
