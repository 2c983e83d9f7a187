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
from vqa_pipe.pipeline.regressors import RegressorError, register_regressor
from vqa_pipe.pipeline.regressors._torch_training import TRAIN_DEFAULTS, TorchRegressor
from vqa_pipe.pipeline.regressors.mlp import (
    RegressionHead,
    check_semantic_params,
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
    raw_roles = (SPATIAL_CLIP_MAPS,)
    defaults: dict[str, Any] = {
        **TRAIN_DEFAULTS, "hidden": 64, "semantic_hidden": 64, "semantic": "time",
        "spatial_hidden": 64, "spatial_dropout": 0.5, "spatial_pool": "flatten",
        "spatial_init": None, "freeze_spatial": False,
    }

    def _check_params(self) -> None:
        super()._check_params()
        p = self.params
        check_semantic_params(p, self.who)
        if p["spatial_pool"] not in SPATIAL_POOLS:
            raise RegressorError(f"{self.who}: spatial_pool must be one of "
                                 f"{', '.join(SPATIAL_POOLS)}, got {p['spatial_pool']!r}")
        if not 0 <= float(p["spatial_dropout"]) < 1:
            raise RegressorError(f"{self.who}: spatial_dropout must be in [0, 1), got "
                                 f"{p['spatial_dropout']}")
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
