"""``fused``: CLiF-VQA's fusion of the semantic and the spatial features (eqs. 8, 10-13).

* semantic (eq. 8): ``F_s`` (2r), the semantic MLP of :mod:`.mlp` along time per description;
* spatial (eqs. 10-11): FAST-VQA's VQAHead (:mod:`vqa_pipe.pipeline.vqa_head`: Dropout,
  Conv3d C -> 64, GELU, Dropout, Conv3d 64 -> 1) scores every position of every clip's Swin
  map (role ``spatial_clip_maps``, the maps as stored, not standardised); the score maps are
  averaged over clips and flattened: ``F_sp = Flatten(mean_k VQAHead(F_k))``, one value per
  position (T' x H' x W' = 784 for the defaults);
* fusion (eqs. 12-13): ``q = FC(GELU(FC(Concat(F_s, F_sp))))``.

The CLiF-VQA paper gives no code; ``docs/notes/fastvqa.md`` says what it leaves open and what
was chosen. ``spatial_pool="mean"`` gives the head's mean instead of the flattened map (one
value: FAST-VQA's own score); ``spatial_init=FILE`` starts the head from a FAST-VQA
(``vqa_head.*``) or DOVER (``technical_head.*``) checkpoint, ``freeze_spatial=true`` keeps it
fixed. With the head initialised from the checkpoint its scores are FAST-VQA's own, because
the clip maps reach it raw.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from vqa_pipe.pipeline.feature_table import SEQUENCE, SPATIAL_CLIP_MAPS
from vqa_pipe.pipeline.regressors import Param, RegressorError, register_regressor
from vqa_pipe.pipeline.regressors._torch_training import TorchRegressor
from vqa_pipe.pipeline.regressors.mlp import (
    SEMANTIC_MODES,
    RegressionHead,
    semantic_module,
    sequence_shape,
)
from vqa_pipe.pipeline.vqa_head import VQAHead

SPATIAL_POOLS = ("flatten", "mean")


class FusedNet(nn.Module):
    def __init__(self, n_frames: int, n_scores: int, map_shape: tuple[int, ...], hidden: int,
                 semantic_hidden: int, spatial_hidden: int, dropout: float,
                 spatial_dropout: float, semantic: str = "time",
                 spatial_pool: str = "flatten") -> None:
        super().__init__()
        channels, t, h, w = map_shape
        self.semantic, sem_dim = semantic_module(semantic, n_frames, n_scores, semantic_hidden,
                                                 hidden, dropout)
        self.spatial = VQAHead(channels, spatial_hidden, spatial_dropout)
        self.spatial_pool = spatial_pool
        sp_dim = t * h * w if spatial_pool == "flatten" else 1
        self.head = RegressionHead(sem_dim + sp_dim, hidden, dropout)

    def spatial_vector(self, clip_maps):
        """(B, K, C, T', H', W') -> F_sp: per-position scores averaged over clips, flattened
        (or their mean)."""
        scores = self.spatial.clip_score_maps(clip_maps).mean(dim=1)  # (B, T', H', W')
        if self.spatial_pool == "mean":
            return scores.mean(dim=(1, 2, 3))[:, None]
        return scores.flatten(1)

    def forward(self, sequence, spatial_clip_maps):
        fused = torch.cat([self.semantic(sequence), self.spatial_vector(spatial_clip_maps)],
                          dim=1)
        return self.head(fused)


@register_regressor("fused")
class FusedRegressor(TorchRegressor):
    """Semantic MLP (eq. 8) + FAST-VQA's head per clip, flattened, concatenated, FC-GELU-FC."""

    roles = (SEQUENCE, SPATIAL_CLIP_MAPS)
    channel_axes = {SEQUENCE: -1}
    unscaled_roles = (SPATIAL_CLIP_MAPS,)
    params_spec = (
        Param("hidden", "int", 64, "width of the fusion head (eq. 13)", low=1),
        Param("semantic_hidden", "int", 64, "width of eq. 8's FC layer along time", low=1),
        Param("semantic", "choice", "time", "eq. 8 along time per description, or flattened",
              choices=SEMANTIC_MODES),
        Param("spatial_hidden", "int", 64, "width of FAST-VQA's head (its Conv3d 768 -> 64)",
              low=1),
        Param("spatial_dropout", "float", 0.5, "dropout of FAST-VQA's head", low=0, high=1,
              high_open=True),
        Param("spatial_pool", "choice", "flatten", "spatial features: the head's score map "
              "flattened (eqs. 10-11), or its mean (FAST-VQA's score)", choices=SPATIAL_POOLS),
        Param("freeze_spatial", "bool", False, "keep the head loaded from spatial_init fixed"),
    )
    # a checkpoint path: not a number or a choice, checked in _check_params
    defaults: dict[str, Any] = {"spatial_init": None}

    def _check_params(self) -> None:
        super()._check_params()
        p = self.params
        if p["freeze_spatial"] and not p["spatial_init"]:
            raise RegressorError(f"{self.who}: freeze_spatial needs spatial_init=FILE (a "
                                 "FAST-VQA or DOVER checkpoint); a random head would stay random")

    def build(self, shapes: Mapping[str, list[int]]) -> nn.Module:
        n_frames, n_scores = sequence_shape(shapes, self.who)
        maps = shapes.get(SPATIAL_CLIP_MAPS)
        if maps is None or len(maps) != 5:
            raise RegressorError(
                f"{self.who} needs '{SPATIAL_CLIP_MAPS}' of shape (clips, C, T', H', W'), "
                f"got {maps}"
            )
        p = self.params
        net = FusedNet(n_frames, n_scores, tuple(int(v) for v in maps[1:]), int(p["hidden"]),
                       int(p["semantic_hidden"]), int(p["spatial_hidden"]),
                       float(p["dropout"]), float(p["spatial_dropout"]), p["semantic"],
                       p["spatial_pool"])
        head = getattr(self, "_init_head", None)  # set while fitting with spatial_init
        if head is not None:
            if (head.in_channels, head.hidden_channels) != (net.spatial.in_channels,
                                                            net.spatial.hidden_channels):
                raise RegressorError(
                    f"{self.who}: the head of {p['spatial_init']} is {head.in_channels} -> "
                    f"{head.hidden_channels} channels; the maps and spatial_hidden ask for "
                    f"{net.spatial.in_channels} -> {net.spatial.hidden_channels}"
                )
            net.spatial.load_state_dict(head.state, strict=True)
            if p["freeze_spatial"]:
                net.spatial.requires_grad_(False)
        return net

    def _fit_network(self, inputs, y_unit, val_inputs, y_val_unit) -> dict[str, Any]:
        from vqa_pipe.pipeline.vqa_head import read_head_checkpoint

        init = self.params["spatial_init"]
        self._init_head = read_head_checkpoint(init) if init else None
        try:
            info = super()._fit_network(inputs, y_unit, val_inputs, y_val_unit)
        finally:
            head, self._init_head = self._init_head, None
        if head is not None:
            info["spatial_init"] = head.summary()
            info["spatial_frozen"] = bool(self.params["freeze_spatial"])
        return info
