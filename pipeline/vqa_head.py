"""FAST-VQA's quality head (``VQAHead`` of ``fastvqa/models/head.py``) and its checkpoints.

The head maps a Video Swin feature map ``(C, T', H', W')`` to a score per position::

    Dropout(p) -> Conv3d(C -> hidden, 1x1x1) -> GELU -> Dropout(p) -> Conv3d(hidden -> 1, 1x1x1)

(``in_channels=768, hidden_channels=64, dropout_ratio=0.5`` in FAST-VQA-B and DOVER's
technical branch; dropout is inactive at inference). FAST-VQA's test protocol
(``new_test.py``: ``inference_set``) scores each of a video's clips and takes the mean over
all positions of all clips; with equal-sized clips that is the mean over positions, then over
clips (:meth:`VQAHead.score_clips`).

Checkpoints: FAST-VQA's ``vqa_head.fc_hid.*`` / ``vqa_head.fc_last.*`` (beside
``fragments_backbone.*``, under ``state_dict``), DOVER's ``technical_head.*`` (beside
``technical_backbone.*``; its ``aesthetic_head.*`` is not this head), or a bare head
(``fc_hid.*``, ``fc_last.*``). They load with :func:`vqa_pipe.pipeline.weights.load_state_dict`
(safetensors or ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from vqa_pipe.pipeline.weights import WeightsError, file_identity, load_state_dict

HEAD_PREFIXES: dict[str, str] = {"fastvqa": "vqa_head.", "dover": "technical_head.", "bare": ""}
HEAD_KEYS: tuple[str, ...] = ("fc_hid.weight", "fc_hid.bias", "fc_last.weight", "fc_last.bias")


class VQAHead(nn.Module):
    """FAST-VQA's VQAHead; parameter names as upstream (``fc_hid``, ``fc_last``)."""

    def __init__(self, in_channels: int = 768, hidden_channels: int = 64,
                 dropout: float = 0.5) -> None:
        super().__init__()
        self.in_channels, self.hidden_channels = int(in_channels), int(hidden_channels)
        self.dropout = nn.Dropout(p=float(dropout))
        self.fc_hid = nn.Conv3d(self.in_channels, self.hidden_channels, (1, 1, 1))
        self.fc_last = nn.Conv3d(self.hidden_channels, 1, (1, 1, 1))
        self.gelu = nn.GELU()

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        """(B, C, T', H', W') -> per-position scores (B, 1, T', H', W')."""
        x = self.dropout(maps)
        return self.fc_last(self.dropout(self.gelu(self.fc_hid(x))))

    def clip_score_maps(self, clip_maps: torch.Tensor) -> torch.Tensor:
        """(B, K, C, T', H', W') maps of K clips -> (B, K, T', H', W') score maps."""
        b, k = clip_maps.shape[:2]
        q = self(clip_maps.flatten(0, 1).to(self.fc_hid.weight.dtype))
        return q.reshape(b, k, *q.shape[2:])

    def score_clips(self, clip_maps: torch.Tensor) -> torch.Tensor:
        """(B, K, C, T', H', W') -> (B,): mean over positions, then over clips."""
        return self.clip_score_maps(clip_maps).mean(dim=(2, 3, 4)).mean(dim=1)


@dataclass
class HeadCheckpoint:
    """A VQAHead's tensors read from a checkpoint, and where they came from."""

    state: dict[str, torch.Tensor]  # fc_hid.*, fc_last.*
    format: str  # fastvqa | dover | bare
    prefix: str
    in_channels: int
    hidden_channels: int
    identity: dict[str, Any]  # file, bytes, sha256 (empty for an in-memory state)

    def summary(self) -> dict[str, Any]:
        return {"format": self.format, "prefix": self.prefix, "in_channels": self.in_channels,
                "hidden_channels": self.hidden_channels, **self.identity}


def detect_head_format(keys: list[str]) -> str | None:
    """``fastvqa``, ``dover`` or ``bare`` by the key names, or None when no head is there."""
    keyset = set(keys)
    for fmt, prefix in HEAD_PREFIXES.items():
        if all(prefix + k in keyset for k in HEAD_KEYS):
            return fmt
    return None


def head_from_state(state: Mapping[str, Any], where: str = "checkpoint",
                    fmt: str | None = None) -> HeadCheckpoint:
    """Pick the VQAHead tensors out of a state dict (FAST-VQA, DOVER or bare key names)."""
    keys = list(state)
    fmt = fmt or detect_head_format(keys)
    if fmt is None or fmt not in HEAD_PREFIXES:
        found = sorted({k.rsplit(".", 2)[0] for k in keys if "head" in k})[:6]
        raise WeightsError(
            f"{where} holds no FAST-VQA quality head: expected 'vqa_head.fc_hid.weight' "
            "(FAST-VQA), 'technical_head.fc_hid.weight' (DOVER) or 'fc_hid.weight' with "
            f"'fc_last.*'; found heads {found or 'none'} among {len(keys)} keys"
        )
    prefix = HEAD_PREFIXES[fmt]
    missing = [prefix + k for k in HEAD_KEYS if prefix + k not in state]
    if missing:
        raise WeightsError(f"{where} ({fmt} format) lacks {missing}")
    head = {k: state[prefix + k] for k in HEAD_KEYS}
    bad = [k for k, v in head.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise WeightsError(f"{where}: {bad} are not tensors")
    w1, b1, w2, b2 = (head[k] for k in HEAD_KEYS)
    ok = (w1.dim() == 5 and tuple(w1.shape[2:]) == (1, 1, 1) and b1.shape == (w1.shape[0],)
          and tuple(w2.shape) == (1, w1.shape[0], 1, 1, 1) and tuple(b2.shape) == (1,))
    if not ok:
        raise WeightsError(
            f"{where}: the {prefix or 'head '}tensors have shapes "
            f"{[tuple(v.shape) for v in head.values()]}, not those of a VQAHead "
            "(hidden x C x 1 x 1 x 1, hidden, 1 x hidden x 1 x 1 x 1, 1)"
        )
    head = {k: v.detach().float().clone() for k, v in head.items()}
    return HeadCheckpoint(head, fmt, prefix, int(w1.shape[1]), int(w1.shape[0]), {})


def read_head_checkpoint(path: str | Path) -> HeadCheckpoint:
    """The VQAHead of a local FAST-VQA / DOVER checkpoint; errors name the file."""
    path = Path(path)
    state = load_state_dict(path, what="FAST-VQA / DOVER checkpoint")
    head = head_from_state(state, str(path))
    head.identity = file_identity(path)
    return head


def build_head(checkpoint: HeadCheckpoint, dropout: float = 0.5) -> VQAHead:
    """A VQAHead holding the checkpoint's weights (strict load)."""
    head = VQAHead(checkpoint.in_channels, checkpoint.hidden_channels, dropout)
    head.load_state_dict(checkpoint.state, strict=True)
    return head


def load_vqa_head(path: str | Path, dropout: float = 0.5) -> tuple[VQAHead, HeadCheckpoint]:
    """Read a checkpoint's VQAHead; returns the head (eval mode) and its provenance."""
    checkpoint = read_head_checkpoint(path)
    return build_head(checkpoint, dropout).eval(), checkpoint
