"""The Video Swin backbones by name: architectures only (no torch), so listing them is instant.

``swin3d_t`` is the Video Swin-T of torchvision's ``swin3d_t`` (Kinetics-400 weights);
``swin3d_t_grpb`` the FAST-VQA-B / DOVER technical-branch backbone with gated relative position
bias and windows adapted to the input. :mod:`vqa_pipe.pipeline.swin_backbone` builds them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from vqa_pipe.pipeline.errors import VqaPipeError
from vqa_pipe.pipeline.registry import Registry


class BackboneError(VqaPipeError):
    """An unknown backbone, or an architecture that does not add up."""


@dataclass(frozen=True)
class SwinConfig:
    """Architecture of a Video Swin backbone."""

    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    patch_size: tuple[int, int, int] = (2, 4, 4)
    window_size: tuple[int, int, int] = (8, 7, 7)
    mlp_ratio: float = 4.0
    frag_bias: tuple[bool, ...] = (False, False, False, False)
    adaptive_window: bool = False
    base_input: tuple[int, int, int] = (32, 224, 224)  # input size the window was made for

    def __post_init__(self) -> None:
        n = len(self.depths)
        if len(self.num_heads) != n or len(self.frag_bias) != n:
            raise BackboneError(
                f"depths, num_heads and frag_bias need one entry per stage; got {self.depths}, "
                f"{self.num_heads}, {self.frag_bias}"
            )
        for i, heads in enumerate(self.num_heads):
            if (self.embed_dim * 2**i) % heads:
                raise BackboneError(f"stage {i}: {self.embed_dim * 2**i} channels not divisible "
                                 f"by {heads} heads")

    @property
    def out_channels(self) -> int:
        return self.embed_dim * 2 ** (len(self.depths) - 1)

    def feature_shape(self, clip_len: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(C, T', H', W') of the last feature map for a (clip_len, height, width) input."""
        t = math.ceil(clip_len / self.patch_size[0])
        h = math.ceil(height / self.patch_size[1])
        w = math.ceil(width / self.patch_size[2])
        for _ in range(len(self.depths) - 1):
            h, w = math.ceil(h / 2), math.ceil(w / 2)
        return self.out_channels, t, h, w

    def as_dict(self) -> dict:
        return {
            "embed_dim": self.embed_dim,
            "depths": list(self.depths),
            "num_heads": list(self.num_heads),
            "patch_size": list(self.patch_size),
            "window_size": list(self.window_size),
            "mlp_ratio": self.mlp_ratio,
            "frag_bias": list(self.frag_bias),
            "adaptive_window": self.adaptive_window,
            "base_input": list(self.base_input),
        }


BACKBONES: Registry[SwinConfig] = Registry("spatial backbone", error=BackboneError)
BACKBONES.register("swin3d_t", SwinConfig())
BACKBONES.register(
    "swin3d_t_grpb", SwinConfig(frag_bias=(True, True, True, False), adaptive_window=True)
)


def register_backbone(name: str, config: SwinConfig, *, exist_ok: bool = False) -> SwinConfig:
    """Add a named architecture (tests register shrunk ones)."""
    return BACKBONES.register(name, config, replace=exist_ok)


def list_backbones() -> list[str]:
    return sorted(BACKBONES.names())


def get_backbone_config(name: str) -> SwinConfig:
    return BACKBONES.get(name)
