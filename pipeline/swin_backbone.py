"""Video Swin Transformer Tiny for fragment videos, and loading its weights from local files.

One implementation covers both upstream variants:

* ``swin3d_t`` - the Video Swin-T of torchvision's ``swin3d_t`` (Kinetics-400 weights):
  fixed (8, 7, 7) windows, plain relative position bias.
* ``swin3d_t_grpb`` - the FAST-VQA-B / DOVER technical-branch backbone: the same network with
  *gated relative position bias* in stages 1-3 (a second ``fragment_position_bias_table`` used
  for token pairs of the same fragment) and windows adapted to the input, so that a clip of
  ``G*S`` pixels gets a spatial window of ``7 * G*S / 224`` tokens: one window per fragment grid
  at the last stage (7 for the default 7x7 grid of 32-pixel patches).

The module's own parameter names follow the Video Swin naming used by FAST-VQA
(``patch_embed.*``, ``layers.{i}.blocks.{j}.*``, ``layers.{i}.downsample.*``, ``norm.*``).
:func:`map_checkpoint` maps the key names of torchvision (``features.{2i}.{j}.*``), FAST-VQA
(``fragments_backbone.*``), DOVER (``technical_backbone.*``) and the original Video Swin release
(``backbone.*``) onto it, and reports every key: loaded, checked (index buffers), ignored
(classification / regression heads, other branches), unknown or missing.

Nothing here downloads anything; checkpoints load with ``torch.load(weights_only=True)`` or
safetensors (see :mod:`vqa_pipe.pipeline.weights`).

Fidelity: with identical seeded weights, ``swin3d_t_grpb`` gives FAST-VQA's
``SwinTransformer3D()`` output on a 32 x 224 x 224 clip within 2.2e-6 (largest absolute
difference over 4,096 sampled elements, values up to 4.1), and ``swin3d_t`` gives torchvision's
``swin3d_t`` features (``tests/test_fastvqa.py``, ``tests/test_swin_backbone.py``; the
upstream outputs are in ``tests/fixtures/fastvqa/``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from vqa_pipe.pipeline.backbones import (  # noqa: F401 - the registry, re-exported
    SwinConfig,
    get_backbone_config,
    list_backbones,
    register_backbone,
)
from vqa_pipe.pipeline.weights import RANDOM, WeightsError, file_identity, load_state_dict

IMAGENET_MEAN_255 = (123.675, 116.28, 103.53)  # FAST-VQA normalises 0-255 pixels with these
IMAGENET_STD_255 = (58.395, 57.12, 57.375)

HOW_TO_GET = (
    "No weights are downloaded at run time. Get one of: torchvision's Kinetics-400 swin3d_t "
    "(https://download.pytorch.org/models/swin3d_t-7615ae03.pth, backbone 'swin3d_t'); "
    "FAST-VQA-B 'FAST_VQA_B_1*4.pth' from github.com/VQAssessment/FAST-VQA-and-FasterVQA "
    "releases, or 'DOVER.pth' from github.com/VQAssessment/DOVER releases (backbone "
    "'swin3d_t_grpb'); copy it to this machine and pass its path. For a smoke test without "
    "weights pass --random-weights (features are then meaningless)."
)


# --------------------------------------------------------------------------------------------
# geometry helpers


def _effective_window(
    size: tuple[int, int, int], window: tuple[int, int, int], shift: tuple[int, int, int]
) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Window clipped to the feature size, and the shift of shifted blocks (0 where clipped).

    The shift is half the *configured* window even when an adaptive window is smaller, as in
    FAST-VQA.
    """
    win = tuple(min(s, w) for s, w in zip(size, window))
    shift = tuple(0 if s <= w else sh for s, w, sh in zip(size, window, shift))
    return win, shift  # type: ignore[return-value]


def _relative_position_index(window: tuple[int, int, int]) -> torch.Tensor:
    """(N, N) index into a (2Wd-1)(2Wh-1)(2Ww-1) bias table, N = Wd*Wh*Ww."""
    coords = torch.stack(torch.meshgrid(*[torch.arange(w) for w in window], indexing="ij"))
    flat = coords.flatten(1)
    rel = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0)
    rel = rel + torch.tensor([w - 1 for w in window])
    strides = torch.tensor([(2 * window[1] - 1) * (2 * window[2] - 1), 2 * window[2] - 1, 1])
    return (rel * strides).sum(-1)


def _partition(x: torch.Tensor, window: tuple[int, int, int]) -> torch.Tensor:
    """(B, D, H, W, C) -> (B * nW, Wd*Wh*Ww, C)."""
    b, d, h, w, c = x.shape
    x = x.view(b, d // window[0], window[0], h // window[1], window[1], w // window[2],
               window[2], c)
    return x.permute(0, 1, 3, 5, 2, 4, 6, 7).reshape(-1, window[0] * window[1] * window[2], c)


def _unpartition(
    windows: torch.Tensor, window: tuple[int, int, int], b: int, d: int, h: int, w: int
) -> torch.Tensor:
    """Inverse of :func:`_partition`."""
    x = windows.view(b, d // window[0], h // window[1], w // window[2], *window, -1)
    return x.permute(0, 1, 4, 2, 5, 3, 6, 7).reshape(b, d, h, w, -1)


def _shift_mask(
    padded: tuple[int, int, int], window: tuple[int, int, int], shift: tuple[int, int, int],
    device: torch.device,
) -> torch.Tensor:
    """(nW, N, N) additive mask (0 / -100) keeping shifted windows from mixing regions."""
    regions = torch.zeros(padded, device=device)
    count = 0
    bounds = [((0, -w), (-w, -s), (-s, None)) for w, s in zip(window, shift)]
    for d0, d1 in bounds[0]:
        for h0, h1 in bounds[1]:
            for w0, w1 in bounds[2]:
                regions[d0:d1, h0:h1, w0:w1] = count
                count += 1
    ids = _partition(regions[None, ..., None], window).squeeze(-1)  # nW, N
    diff = ids[:, None, :] - ids[:, :, None]
    return torch.zeros_like(diff).masked_fill(diff != 0, -100.0)


def _nearest(n_out: int, n_in: int, device: torch.device) -> torch.Tensor:
    """Nearest-neighbour resampling of ``arange(n_in)`` to ``n_out`` positions (as torch does)."""
    src = torch.arange(n_in, dtype=torch.float32, device=device).view(1, 1, -1)
    return F.interpolate(src, size=n_out, mode="nearest").view(-1)


def _fragment_gate(
    padded: tuple[int, int, int], window: tuple[int, int, int], shift: tuple[int, int, int],
    device: torch.device,
) -> torch.Tensor:
    """(nW, N, N) gate of the fragment-aware bias, as in FAST-VQA.

    Each token gets the coordinates of the fragment it falls in, assuming a grid of
    ``window[1] x window[2]`` fragments over the (padded) map; the gate of a token pair is the
    L1 distance between their fragment coordinates: 0 for tokens of the same fragment (which
    then use the fragment table only), 1 for neighbouring fragments (the plain table).
    """
    d, h, w = padded
    ch = _nearest(h, window[1], device)
    cw = _nearest(w, window[2], device)
    coords = torch.stack(torch.meshgrid(torch.zeros(d, device=device), ch, cw, indexing="ij"), -1)
    coords = torch.roll(coords, shifts=tuple(-s for s in shift), dims=(0, 1, 2))
    per_window = _partition(coords[None], window)  # nW, N, 3
    return (per_window[:, None, :, :] - per_window[:, :, None, :]).abs().sum(-1)


@dataclass
class _StageContext:
    """Per-stage geometry shared by its blocks: windows, masks, gates, bias indices."""

    window: tuple[int, int, int]
    shifts: dict[bool, tuple[int, int, int]]
    index: torch.Tensor
    masks: dict[bool, torch.Tensor | None] = field(default_factory=dict)
    gates: dict[bool, torch.Tensor | None] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# modules


class PatchEmbed3D(nn.Module):
    def __init__(self, patch_size: tuple[int, int, int], embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv3d(3, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, t, h, w = x.shape
        pt, ph, pw = ((p - s % p) % p for s, p in zip((t, h, w), self.patch_size))
        x = F.pad(x, (0, pw, 0, ph, 0, pt))
        return self.norm(self.proj(x).permute(0, 2, 3, 4, 1))  # B T H W C


class WindowAttention3D(nn.Module):
    fused: bool | None = None  # scaled_dot_product_attention; None: on CUDA only

    def __init__(self, dim: int, window: tuple[int, int, int], heads: int, frag_bias: bool):
        super().__init__()
        self.heads = heads
        self.window = window
        table = (2 * window[0] - 1) * (2 * window[1] - 1) * (2 * window[2] - 1)
        self.relative_position_bias_table = nn.Parameter(torch.zeros(table, heads))
        if frag_bias:
            self.fragment_position_bias_table = nn.Parameter(torch.zeros(table, heads))
        self.register_buffer("relative_position_index", _relative_position_index(window),
                             persistent=False)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    @property
    def has_frag_bias(self) -> bool:
        return hasattr(self, "fragment_position_bias_table")

    def bias(self, index: torch.Tensor, gate: torch.Tensor | None,
             mask: torch.Tensor | None) -> torch.Tensor:
        """Additive attention bias, (nH, N, N) or (nW, nH, N, N)."""
        n = index.shape[0]
        flat = index.reshape(-1)
        bias = self.relative_position_bias_table[flat].view(n, n, -1).permute(2, 0, 1)
        if gate is not None and self.has_frag_bias:
            frag = self.fragment_position_bias_table[flat].view(n, n, -1).permute(2, 0, 1)
            # FAST-VQA's rpb * g + frag * (1 - g), in one pass over the (nW, nH, N, N) result
            bias = torch.addcmul(frag[None], (bias - frag)[None], gate[:, None])
            if mask is not None:
                bias.add_(mask[:, None])
        elif mask is not None:
            bias = bias + mask[:, None]
        return bias

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """x: (B*nW, N, C) windows; bias from :meth:`bias`."""
        bw, n, c = x.shape
        qkv = self.qkv(x).view(bw, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        bias = bias.to(q.dtype)
        fused = self.fused if self.fused is not None else x.device.type == "cuda"
        if fused:  # fused kernels; on CPU the explicit product is faster
            if bias.dim() == 4:  # per-window bias: fold windows into the head axis
                nw = bias.shape[0]
                shape = (bw // nw, nw * self.heads, n, c // self.heads)
                out = F.scaled_dot_product_attention(
                    q.reshape(shape), k.reshape(shape), v.reshape(shape),
                    attn_mask=bias.reshape(nw * self.heads, n, n),
                ).view(bw, self.heads, n, -1)
            else:
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        else:
            attn = (q * (c // self.heads) ** -0.5) @ k.transpose(-2, -1)
            if bias.dim() == 4:
                attn.view(-1, *bias.shape).add_(bias)
            else:
                attn.add_(bias)
            out = attn.softmax(-1) @ v
        return self.proj(out.transpose(1, 2).reshape(bw, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwinBlock3D(nn.Module):
    def __init__(self, dim: int, heads: int, window: tuple[int, int, int], mlp_ratio: float,
                 frag_bias: bool, shifted: bool) -> None:
        super().__init__()
        self.shifted = shifted
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention3D(dim, window, heads, frag_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, ctx: _StageContext) -> torch.Tensor:
        b, d, h, w, c = x.shape
        win, shift = ctx.window, ctx.shifts[self.shifted]
        y = self.norm1(x)
        pads = [(wi - s % wi) % wi for s, wi in zip((d, h, w), win)]
        y = F.pad(y, (0, 0, 0, pads[2], 0, pads[1], 0, pads[0]))
        dp, hp, wp = d + pads[0], h + pads[1], w + pads[2]
        if any(shift):
            y = torch.roll(y, shifts=tuple(-s for s in shift), dims=(1, 2, 3))
        bias = self.attn.bias(ctx.index, ctx.gates.get(self.shifted), ctx.masks.get(self.shifted))
        y = self.attn(_partition(y, win), bias)
        y = _unpartition(y, win, b, dp, hp, wp)
        if any(shift):
            y = torch.roll(y, shifts=shift, dims=(1, 2, 3))
        x = x + y[:, :d, :h, :w]
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2], x.shape[3]
        x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat([x[:, :, 0::2, 0::2], x[:, :, 1::2, 0::2], x[:, :, 0::2, 1::2],
                       x[:, :, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x))


class SwinStage(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, window: tuple[int, int, int],
                 mlp_ratio: float, frag_bias: bool, downsample: bool) -> None:
        super().__init__()
        self.window = window
        self.frag_bias = frag_bias
        self.blocks = nn.ModuleList(
            SwinBlock3D(dim, heads, window, mlp_ratio, frag_bias, shifted=i % 2 == 1)
            for i in range(depth)
        )
        self.downsample = PatchMerging(dim) if downsample else None
        self._contexts: dict[tuple, _StageContext] = {}

    def _apply(self, fn, recurse=True):  # .to() / .half(): drop cached geometry
        self._contexts = {}
        return super()._apply(fn, recurse)

    def context(self, size: tuple[int, int, int], window: tuple[int, int, int] | None,
                device: torch.device) -> _StageContext:
        """Geometry for a (D, H, W) map; ``window`` overrides the stage's (adaptive windows)."""
        base = self.window
        win, shift = _effective_window(size, window or base, tuple(w // 2 for w in base))
        full = self.blocks[0].attn.relative_position_index
        n = win[0] * win[1] * win[2]
        if window is not None:  # adaptive: the sub-window's entries of the full index
            index = full.view(*base, *base)[: win[0], : win[1], : win[2],
                                            : win[0], : win[1], : win[2]].reshape(n, n)
        else:  # as torchvision (and FAST-VQA without adaptation) do for clipped windows
            index = full[:n, :n]
        padded = tuple(math.ceil(s / w) * w for s, w in zip(size, win))
        ctx = _StageContext(window=win, shifts={False: (0, 0, 0), True: shift}, index=index)
        for shifted in (False, True):
            s = ctx.shifts[shifted]
            if shifted and len(self.blocks) < 2:
                continue
            ctx.masks[shifted] = _shift_mask(padded, win, s, device) if any(s) else None
            ctx.gates[shifted] = (
                _fragment_gate(padded, win, s, device) if self.frag_bias else None
            )
        return ctx

    def forward(self, x: torch.Tensor, window: tuple[int, int, int] | None) -> torch.Tensor:
        size = tuple(x.shape[1:4])
        if torch.is_grad_enabled():
            ctx = self.context(size, window, x.device)
        else:  # masks and gates depend on the geometry only: reuse them from clip to clip
            key = (size, window, str(x.device), torch.is_inference_mode_enabled())
            ctx = self._contexts.get(key)
            if ctx is None:
                if len(self._contexts) >= 4:
                    self._contexts.clear()
                ctx = self._contexts[key] = self.context(size, window, x.device)
        for block in self.blocks:
            x = block(x, ctx)
        return self.downsample(x) if self.downsample is not None else x


class SwinBackbone(nn.Module):
    """Video Swin over (B, 3, T, H, W) normalised clips -> last map (B, C, T', H', W')."""

    def __init__(self, config: SwinConfig, name: str = "custom") -> None:
        super().__init__()
        self.config = config
        self.name = name
        self.patch_embed = PatchEmbed3D(config.patch_size, config.embed_dim)
        n = len(config.depths)
        self.layers = nn.ModuleList(
            SwinStage(config.embed_dim * 2**i, config.depths[i], config.num_heads[i],
                      config.window_size, config.mlp_ratio, config.frag_bias[i], i < n - 1)
            for i in range(n)
        )
        self.norm = nn.LayerNorm(config.out_channels)

    def adapted_window(self, t: int, h: int, w: int) -> tuple[int, int, int] | None:
        """FAST-VQA's window for an input of (t, h, w) pixels, or None for fixed windows."""
        if not self.config.adaptive_window:
            return None
        return tuple(  # type: ignore[return-value]
            max(1, win * size // base)
            for win, size, base in zip(self.config.window_size, (t, h, w), self.config.base_input)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        window = self.adapted_window(*x.shape[2:])
        x = self.patch_embed(x)
        for stage in self.layers:
            x = stage(x, window)
        return self.norm(x).permute(0, 4, 1, 2, 3)

    def init_random(self, seed: int = 0) -> SwinBackbone:
        """Seeded truncated-normal init (as Video Swin); for smoke tests only."""
        gen = torch.Generator().manual_seed(seed)

        def normal_(p: torch.Tensor) -> None:
            p.copy_(torch.randn(p.shape, generator=gen).clamp_(-2, 2) * 0.02)

        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, (nn.Linear, nn.Conv3d)):
                    normal_(module.weight)
                    if module.bias is not None:
                        module.bias.zero_()
                elif isinstance(module, nn.LayerNorm):
                    module.weight.fill_(1.0)
                    module.bias.zero_()
                elif isinstance(module, WindowAttention3D):
                    normal_(module.relative_position_bias_table)
                    if module.has_frag_bias:
                        normal_(module.fragment_position_bias_table)
        return self


def build_backbone(name_or_config: str | SwinConfig) -> SwinBackbone:
    """An untrained backbone by registered name (or from a config)."""
    if isinstance(name_or_config, str):
        return SwinBackbone(get_backbone_config(name_or_config), name=name_or_config)
    return SwinBackbone(name_or_config)


# --------------------------------------------------------------------------------------------
# checkpoints

FORMATS = ("native", "torchvision", "fastvqa", "dover", "videoswin")
_PREFIX = {"fastvqa": "fragments_backbone.", "dover": "technical_backbone.",
           "videoswin": "backbone.", "native": "", "torchvision": ""}
_TV_BLOCK = re.compile(r"^features\.(\d+)\.(\d+)\.(.*)$")
_TV_MERGE = re.compile(r"^features\.(\d+)\.(reduction|norm)\.(.*)$")


@dataclass
class CheckpointMapping:
    """How a checkpoint's keys map onto a :class:`SwinBackbone`; every key is accounted for."""

    format: str
    state: dict[str, torch.Tensor]  # target name -> tensor, ready for load_state_dict
    used: dict[str, str]  # source key -> target name
    checked: list[str]  # source index buffers verified against the model's
    ignored: list[str]  # heads, other branches
    unknown: list[str]  # source keys the model has no place for
    missing: list[str]  # model parameters the checkpoint does not give

    def summary(self) -> dict:
        return {"format": self.format, "used": len(self.used), "checked": len(self.checked),
                "ignored": len(self.ignored)}


def detect_format(keys: list[str]) -> str | None:
    """Which upstream a checkpoint comes from, by its key names."""
    keyset = set(keys)
    if any(k.startswith("fragments_backbone.") for k in keys):
        return "fastvqa"
    if any(k.startswith("technical_backbone.") for k in keys):
        return "dover"
    if "backbone.patch_embed.proj.weight" in keyset:
        return "videoswin"
    if "features.0.0.attn.qkv.weight" in keyset:
        return "torchvision"
    if "layers.0.blocks.0.attn.qkv.weight" in keyset:
        return "native"
    return None


def _torchvision_name(key: str) -> str | None:
    """torchvision ``features.*`` name -> native name, or None when it is the classifier."""
    if key.startswith("head."):
        return None
    m = _TV_MERGE.match(key)
    if m and int(m.group(1)) % 2 == 1:
        return f"layers.{int(m.group(1)) // 2}.downsample.{m.group(2)}.{m.group(3)}"
    m = _TV_BLOCK.match(key)
    if m and int(m.group(1)) % 2 == 0:
        rest = m.group(3).replace("mlp.0.", "mlp.fc1.").replace("mlp.3.", "mlp.fc2.")
        return f"layers.{int(m.group(1)) // 2}.blocks.{m.group(2)}.{rest}"
    return key  # patch_embed.*, norm.* and anything unknown keep their name


def map_checkpoint(state: Mapping[str, Any], model: SwinBackbone,
                   fmt: str | None = None) -> CheckpointMapping:
    """Map an upstream state dict onto ``model`` (no loading; see :func:`load_backbone_weights`)."""
    keys = list(state)
    fmt = fmt or detect_format(keys)
    if fmt not in FORMATS:
        raise WeightsError(f"unknown checkpoint format {fmt!r}; expected one of {FORMATS}")
    targets = dict(model.state_dict())
    buffers = {n: b for n, b in model.named_buffers()}
    prefix = _PREFIX[fmt]
    out = CheckpointMapping(fmt, {}, {}, [], [], [], [])
    for key in keys:
        if not key.startswith(prefix):
            out.ignored.append(key)
            continue
        name = key[len(prefix):]
        if fmt == "torchvision":
            name = _torchvision_name(name)
        elif fmt == "videoswin" and name.startswith("cls_head."):
            name = None
        if name is None:
            out.ignored.append(key)
        elif name.endswith("relative_position_index") and name in buffers:
            value = state[key]
            if tuple(value.shape) != tuple(buffers[name].shape) or not torch.equal(
                value.to(buffers[name].dtype).cpu(), buffers[name].cpu()
            ):
                raise WeightsError(
                    f"checkpoint key {key} {tuple(value.shape)} differs from the model's "
                    f"{tuple(buffers[name].shape)}: the checkpoint was made with another "
                    "window size"
                )
            out.checked.append(key)
        elif name in targets:
            out.state[name] = state[key]
            out.used[key] = name
        else:
            out.unknown.append(key)
    out.missing = [n for n in targets if n not in out.state]
    return out


def _mismatch_hint(mapping: CheckpointMapping) -> str:
    frag_in_ckpt = any("fragment_position_bias_table" in k for k in mapping.unknown)
    frag_missing = any("fragment_position_bias_table" in k for k in mapping.missing)
    if frag_in_ckpt:
        return (" The checkpoint has FAST-VQA fragment bias tables: use backbone "
                "'swin3d_t_grpb'.")
    if frag_missing and len(mapping.missing) == sum(
        "fragment_position_bias_table" in k for k in mapping.missing
    ):
        return (" The checkpoint has no fragment bias tables (a Kinetics-400 / plain Video Swin "
                "checkpoint): use backbone 'swin3d_t'.")
    return " Is it a checkpoint of another model?"


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """A Video Swin state dict from a local file; errors name the file and say what was expected."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"spatial backbone checkpoint not found: {path}. {HOW_TO_GET}")
    state = load_state_dict(path, what="spatial backbone checkpoint")
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise WeightsError(f"{path}: entries that are not tensors, e.g. {bad[:5]}; expected a "
                           "state dict of a Video Swin backbone")
    if detect_format(list(state)) is None:
        raise WeightsError(
            f"{path} is not a known Video Swin checkpoint: expected keys like "
            "'features.0.0.attn.qkv.weight' (torchvision swin3d_t), "
            "'fragments_backbone.layers.0.blocks.0.attn.qkv.weight' (FAST-VQA), "
            "'technical_backbone.layers.0.…' (DOVER), 'backbone.patch_embed.proj.weight' "
            f"(Video Swin) or 'layers.0.blocks.0.attn.qkv.weight'; found e.g. {list(state)[:5]}"
        )
    return state


def apply_checkpoint(model: SwinBackbone, state: Mapping[str, torch.Tensor],
                     path: str | Path = "checkpoint") -> CheckpointMapping:
    """Map ``state`` onto ``model`` and load it with ``strict=True``, or explain the misfit."""
    mapping = map_checkpoint(state, model)
    fmt = mapping.format
    if mapping.unknown or mapping.missing:
        parts = []
        if mapping.missing:
            parts.append(f"{len(mapping.missing)} model parameters missing (e.g. "
                         f"{mapping.missing[:4]})")
        if mapping.unknown:
            parts.append(f"{len(mapping.unknown)} checkpoint keys unused (e.g. "
                         f"{mapping.unknown[:4]})")
        raise WeightsError(f"{path} ({fmt} format) does not fit spatial backbone "
                           f"{model.name!r}: " + "; ".join(parts) + "."
                           + _mismatch_hint(mapping))
    targets = model.state_dict()
    wrong = [f"{k} {tuple(mapping.state[t].shape)} vs expected {tuple(targets[t].shape)}"
             for k, t in mapping.used.items() if mapping.state[t].shape != targets[t].shape]
    if wrong:
        raise WeightsError(f"{path} ({fmt} format) has tensors of the wrong shape for spatial "
                           f"backbone {model.name!r}, e.g. {wrong[:3]}. Is it another model size?")
    model.load_state_dict(mapping.state, strict=True)
    return mapping


def load_backbone_weights(model: SwinBackbone, path: str | Path) -> CheckpointMapping:
    """Load a local checkpoint into ``model`` with ``strict=True``; errors name the file."""
    return apply_checkpoint(model, read_checkpoint(path), path)


def resolve_backbone_name(name: str, state: Mapping[str, Any] | None) -> str:
    """``auto``: ``swin3d_t_grpb`` for checkpoints with fragment bias tables, else ``swin3d_t``."""
    if name != "auto":
        get_backbone_config(name)
        return name
    if state is not None and any("fragment_position_bias_table" in k for k in state):
        return "swin3d_t_grpb"
    return "swin3d_t"


def load_swin(
    name: str = "swin3d_t",
    weights: str | Path | None = None,
    *,
    random_weights: bool = False,
    device: str = "cpu",
    seed: int = 0,
) -> tuple[SwinBackbone, dict]:
    """A frozen backbone in eval mode and the identity of its weights.

    Args:
        name: a registered backbone (:func:`list_backbones`), or ``auto`` to pick
            ``swin3d_t_grpb`` for FAST-VQA / DOVER checkpoints and ``swin3d_t`` otherwise.
        weights: a local checkpoint (torchvision, FAST-VQA, DOVER or Video Swin key names).
        random_weights: seeded random weights instead; refused together with ``weights``.

    Returns:
        ``(model, identity)``; ``model.name`` is the resolved backbone name, identity is
        ``{"source": "random", "seed": s}`` or
        ``{"source": "file", "file", "bytes", "sha256", "format"}``.
    """
    if name != "auto":
        get_backbone_config(name)
    if random_weights and weights:
        raise WeightsError("pass either spatial weights or --random-weights, not both")
    if random_weights:
        model = build_backbone(resolve_backbone_name(name, None)).init_random(seed)
        identity: dict = {"source": RANDOM, "seed": seed}
    elif not weights:
        raise WeightsError(f"no weights given for spatial backbone {name}. {HOW_TO_GET}")
    else:
        state = read_checkpoint(weights)
        model = build_backbone(resolve_backbone_name(name, state))
        mapping = apply_checkpoint(model, state, weights)
        identity = {"source": "file", **file_identity(weights), "format": mapping.format}
    return model.eval().requires_grad_(False).to(device), identity
