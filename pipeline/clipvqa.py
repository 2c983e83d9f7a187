"""CLIPVQA on cached CLIP features: quality levels, soft labels, SAT, VAT, loss and decoders.

After CLIPVQA (Xing et al.; code: GZHU-DVL/CLIPVQA). Upstream fine-tunes a CLIP ViT-B/16 with
message (fusion) tokens; here CLIP stays frozen and its outputs are read from the feature
store, so the head trains alone. What each part does, and where it comes from upstream:

* **Quality levels** (``labels/labels.csv``, template ``"{}"``): K = 6 words, level k has
  centre ``c_k = k``: 0 bad, 1 poor, 2 fair, 3 good, 4 great, 5 excellent. The store holds
  their text embeddings (not normalised).
* **Soft labels** (``main.py: Pro_Lab``): ``p_k ∝ exp(-(m - c_k)^2)`` for a MOS ``m`` on the
  level scale [0, 5]. Every dataset scale is mapped linearly onto [0, 5]:
  ``m = 5 * (mos - low) / (high - low)`` (0-100 -> mos/20 as upstream's comment says; 1-5 ->
  (mos - 1) * 5/4, where upstream used the raw 1-5 MOS and so never reached "bad").
* **SAT** (``models/sat.py``, ``mit_layers`` = 1): frame embeddings plus a learnable
  positional embedding, residual attention blocks *over the frames*, mean over frames.
* **VAT** (``models/vat.py``, ``prompts_layers`` = 2, alpha = 0.1, and the token path of
  ``models/clipvqa.py``): keys = LayerNorm -> projection (width -> D) -> a Conv over the T
  frames; the level text features attend to the keys (cross-attention, then an MLP) and
  become ``text + alpha * VAT(text)``.
* **Score** (``models/clipvqa.py: forward``): ``softmax(exp(logit_scale) * <v, t_k>)`` over
  the levels, v the normalised video feature, t_k the normalised level features.
* **Loss** (``main.py``): ``CosineEmbeddingLoss(probabilities, soft label, +1)``.
* **Decoders** (``main.py``): an sklearn ``SVR()`` fitted on soft-label(MOS_train) ->
  MOS_train (on the level scale) applied to the predicted probabilities, or the expectation
  ``sum_k p_k c_k``.

Where this departs from upstream (and why) is listed in ``docs/notes/clipvqa.md``; the two
that change the computation: SAT attends over frames (upstream's ``nn.MultiheadAttention``
gets batch-first tensors, so it attends across the videos of a batch), and there are no
message tokens (they need trainable layers inside the ViT). State-dict keys are upstream's
(``mit.*``, ``prompts_generator.*``, ``prompts_visual_ln``, ``prompts_visual_proj``,
``conv2``, ``logit_scale``), so the fidelity tests load the same seeded weights into both.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from vqa_pipe.pipeline.errors import VqaPipeError
from vqa_pipe.pipeline.feature_table import to_unit

LEVEL_WORDS: tuple[str, ...] = ("bad", "poor", "fair", "good", "great", "excellent")
"""Upstream ``labels/labels.csv`` in id order: word k has centre k (higher is better)."""
LEVEL_CENTRES: np.ndarray = np.arange(len(LEVEL_WORDS), dtype=np.float64)
TOP_LEVEL = float(LEVEL_CENTRES[-1])
TOKEN_LAYOUTS: tuple[str, ...] = ("upstream", "tokens")
DECODERS: tuple[str, ...] = ("svr", "expectation")


class ClipvqaError(VqaPipeError):
    """CLIPVQA inputs or settings that cannot work (the message names them)."""


# --------------------------------------------------------------------------- levels
def to_levels(mos: np.ndarray | Sequence[float], scales: Sequence[str] | str) -> np.ndarray:
    """MOS on each video's own scale -> the level scale [0, 5] (0 = bad, 5 = excellent)."""
    mos = np.asarray(mos, dtype=np.float64)
    if isinstance(scales, str):
        scales = [scales] * len(mos)
    return TOP_LEVEL * to_unit(mos, scales)


def levels_to_unit(levels: np.ndarray) -> np.ndarray:
    """Level scale [0, 5] -> the unit scale [0, 1] the regressors predict on."""
    return np.asarray(levels, dtype=np.float64) / TOP_LEVEL


def soft_labels(levels: np.ndarray | Sequence[float],
                centres: np.ndarray = LEVEL_CENTRES) -> np.ndarray:
    """``(n, K)`` soft labels ``exp(-(m - c_k)^2) / sum_j exp(-(m - c_j)^2)`` (float64)."""
    m = np.asarray(levels, dtype=np.float64).reshape(-1, 1)
    if not np.all(np.isfinite(m)):
        raise ClipvqaError("soft labels need finite MOS values")
    logits = -((m - np.asarray(centres, dtype=np.float64)[None, :]) ** 2)
    logits -= logits.max(axis=1, keepdims=True)  # same ratios, no underflow far from a centre
    weights = np.exp(logits)
    return weights / weights.sum(axis=1, keepdims=True)


def expected_level(probs: np.ndarray, centres: np.ndarray = LEVEL_CENTRES) -> np.ndarray:
    """``sum_k p_k c_k`` for each row of ``probs`` (the expectation decoder)."""
    probs = np.asarray(probs, dtype=np.float64)
    return probs @ np.asarray(centres, dtype=np.float64)


def cosine_label_loss(probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Upstream's loss: ``CosineEmbeddingLoss(probs, soft_labels, +1)``, mean over videos."""
    ones = torch.ones(probs.shape[0], dtype=probs.dtype, device=probs.device)
    return F.cosine_embedding_loss(probs, targets.to(probs.dtype), ones, reduction="mean")


# --------------------------------------------------------------------------- decoders
class SVRDecoder:
    """Probabilities -> level score with scikit-learn's default ``SVR()`` (RBF, C = 1,
    epsilon = 0.1, gamma = 'scale'), fitted on the soft labels of the training MOS.

    Predictions are computed in NumPy from the support vectors, so a decoder rebuilt from
    :meth:`state` predicts exactly like the fitted one, without pickle.
    """

    def __init__(self, support: np.ndarray, dual: np.ndarray, intercept: float,
                 gamma: float) -> None:
        self.support = np.asarray(support, dtype=np.float64)
        self.dual = np.asarray(dual, dtype=np.float64).ravel()
        self.intercept = float(intercept)
        self.gamma = float(gamma)

    @classmethod
    def fit(cls, levels: np.ndarray, *, C: float = 1.0, epsilon: float = 0.1) -> SVRDecoder:
        """Fit on ``soft_labels(levels) -> levels`` (upstream ``main.py``: ``svm.SVR()``)."""
        from sklearn.svm import SVR

        levels = np.asarray(levels, dtype=np.float64)
        if len(levels) < 2:
            raise ClipvqaError("the SVR decoder needs at least 2 training videos")
        x = soft_labels(levels)
        model = SVR(C=C, epsilon=epsilon).fit(x, levels)
        var = float(x.var())
        gamma = 1.0 / (x.shape[1] * var) if var > 0 else 1.0  # what gamma='scale' resolves to
        return cls(x[model.support_], model.dual_coef_, float(model.intercept_[0]), gamma)

    def predict(self, probs: np.ndarray) -> np.ndarray:
        probs = np.asarray(probs, dtype=np.float64)
        d = ((probs * probs).sum(1)[:, None] + (self.support * self.support).sum(1)[None, :]
             - 2.0 * probs @ self.support.T)
        return np.exp(-self.gamma * np.maximum(d, 0.0)) @ self.dual + self.intercept

    def state(self, prefix: str = "svr") -> dict[str, np.ndarray]:
        return {f"{prefix}.support": self.support, f"{prefix}.dual": self.dual,
                f"{prefix}.intercept_gamma": np.array([self.intercept, self.gamma])}

    @classmethod
    def from_state(cls, tensors: Mapping[str, np.ndarray], prefix: str = "svr") -> SVRDecoder:
        intercept, gamma = np.asarray(tensors[f"{prefix}.intercept_gamma"], dtype=np.float64)
        return cls(tensors[f"{prefix}.support"], tensors[f"{prefix}.dual"], intercept, gamma)


def decode_levels(probs: np.ndarray, how: str, svr: SVRDecoder | None = None) -> np.ndarray:
    """Level-scale scores from level probabilities, by ``how`` (``svr`` or ``expectation``)."""
    if how == "expectation":
        return expected_level(probs)
    if how == "svr":
        if svr is None:
            raise ClipvqaError("decode='svr' needs a fitted SVR decoder")
        return svr.predict(probs)
    raise ClipvqaError(f"unknown decoder {how!r}; choose one of {', '.join(DECODERS)}")


# --------------------------------------------------------------------------- torch modules
class QuickGELU(nn.Module):
    """CLIP's GELU approximation ``x * sigmoid(1.702 x)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


def _init_linear_and_norm(module: nn.Module) -> None:
    """Upstream's init for SAT and VAT: Linear ~ trunc-normal(0.02), zero bias; LayerNorm 1/0."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class FrameBlock(nn.Module):
    """Pre-norm residual self-attention + QuickGELU MLP block over (B, T, D) frame features."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ln_1 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(dim, 4 * dim))
        self.mlp.add_module("gelu", QuickGELU())
        self.mlp.add_module("c_proj", nn.Linear(4 * dim, dim))
        self.ln_2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class SAT(nn.Module):
    """Spatiotemporal aggregation: frames + positional embedding -> blocks -> mean over T.

    Upstream's module also weights its message tokens by ``alpha``; without message tokens
    that parameter has nothing to act on and is left out.
    """

    def __init__(self, n_frames: int, dim: int, layers: int = 1) -> None:
        super().__init__()
        if dim % 64:
            raise ClipvqaError(f"SAT needs an embedding size divisible by 64 (heads = D/64), "
                               f"got D = {dim}")
        self.positional_embedding = nn.Parameter(torch.empty(1, n_frames, dim))
        nn.init.trunc_normal_(self.positional_embedding, std=0.02)
        self.resblocks = nn.Sequential(*[FrameBlock(dim, dim // 64) for _ in range(layers)])
        self.apply(_init_linear_and_norm)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, D)."""
        return self.resblocks(frames + self.positional_embedding).mean(dim=1)


class CrossAttention(nn.Module):
    """Multi-head attention of queries (B, N, C) over keys/values (B, M, C); no q/k/v bias."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        b, n, c = q.shape
        m = kv.shape[1]
        h = self.heads
        qh = self.q_proj(q).reshape(b, n, h, c // h).transpose(1, 2)
        kh = self.k_proj(kv).reshape(b, m, h, c // h).transpose(1, 2)
        vh = self.v_proj(kv).reshape(b, m, h, c // h).transpose(1, 2)
        weights = ((qh @ kh.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj((weights @ vh).transpose(1, 2).reshape(b, n, c))


class TextVideoLayer(nn.Module):
    """Text queries attend to the video keys, then a QuickGELU MLP; both residual."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.cross_attn = CrossAttention(dim, heads)
        self.norm1 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), QuickGELU(), nn.Identity(),
                                 nn.Linear(4 * dim, dim))  # index 2: upstream's Dropout(0)

    def forward(self, text: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        text = text + self.cross_attn(self.norm1(text), keys)
        return text + self.mlp(self.norm3(text))


class VAT(nn.Module):
    """Video aggregation (upstream's prompt generator): ``alpha * layers(text, norm(keys))``."""

    def __init__(self, dim: int, layers: int = 2, alpha: float = 0.1) -> None:
        super().__init__()
        if dim % 64:
            raise ClipvqaError(f"VAT needs an embedding size divisible by 64 (heads = D/64), "
                               f"got D = {dim}")
        self.norm = nn.LayerNorm(dim)
        self.decoder = nn.ModuleList([TextVideoLayer(dim, dim // 64) for _ in range(layers)])
        self.alpha = nn.Parameter(torch.full((dim,), float(alpha)))
        self.apply(_init_linear_and_norm)

    def forward(self, text: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """text (B, K, D), keys (B, N, D) -> (B, K, D), to be added to ``text``."""
        keys = self.norm(keys)
        for layer in self.decoder:
            text = layer(text, keys)
        return self.alpha * text


class ClipvqaHead(nn.Module):
    """The CLIPVQA head on cached features: frames -> SAT, keys -> VAT, level softmax.

    Args:
        n_frames: T (frames per video).
        dim: D, the CLIP embedding size (frame and text embeddings).
        key_width: C, the size of the VAT keys (768 for ViT-B patch tokens; D for window
            embeddings).
        mit_layers, prompts_layers, prompts_alpha: SAT depth, VAT depth, VAT's initial alpha.
        logit_scale: initial log of the logit scale (CLIP's pretrained value: ln 100).
        token_layout: ``upstream`` reads the Conv's (B, D, N) output back as (B, N, D) with a
            plain reshape, as upstream does (each row then mixes channels of several tokens);
            ``tokens`` transposes it (one row per patch token).
    """

    def __init__(self, n_frames: int, dim: int, key_width: int, *, mit_layers: int = 1,
                 prompts_layers: int = 2, prompts_alpha: float = 0.1,
                 logit_scale: float = math.log(100.0), token_layout: str = "upstream") -> None:
        super().__init__()
        if token_layout not in TOKEN_LAYOUTS:
            raise ClipvqaError(f"unknown token_layout {token_layout!r}; choose one of "
                               f"{', '.join(TOKEN_LAYOUTS)}")
        self.token_layout = token_layout
        self.prompts_visual_ln = nn.LayerNorm(key_width)
        self.prompts_visual_proj = nn.Parameter(torch.randn(key_width, dim))
        self.conv2 = nn.Conv2d(dim, dim, kernel_size=(n_frames, 1), bias=False)
        self.mit = SAT(n_frames, dim, mit_layers)
        self.prompts_generator = VAT(dim, prompts_layers, prompts_alpha)
        self.logit_scale = nn.Parameter(torch.tensor(float(logit_scale)))

    def video_feature(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, T, D) frame embeddings -> (B, D) L2-normalised video feature."""
        v = self.mit(frames)
        return v / v.norm(dim=-1, keepdim=True)

    def video_keys(self, keys: torch.Tensor) -> torch.Tensor:
        """(B, T, N, C) keys -> (B, N, D): LayerNorm, projection, Conv over the T frames."""
        b, _, n, _ = keys.shape
        k = self.prompts_visual_ln(keys) @ self.prompts_visual_proj  # (B, T, N, D)
        k = self.conv2(k.permute(0, 3, 1, 2))  # (B, D, 1, N)
        if self.token_layout == "upstream":
            return k.reshape(b, n, k.shape[1])
        return k.squeeze(2).transpose(1, 2)

    def level_features(self, text: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """text (K, D), keys (B, N, D) -> (B, K, D) L2-normalised video-specific level features."""
        t = text.unsqueeze(0).expand(keys.shape[0], -1, -1)
        t = t + self.prompts_generator(t, keys)
        return t / t.norm(dim=-1, keepdim=True)

    def forward(self, frames: torch.Tensor, keys: torch.Tensor,
                text: torch.Tensor) -> torch.Tensor:
        """Level probabilities (B, K) for frames (B, T, D), keys (B, T, N, C), text (K, D)."""
        v = self.video_feature(frames)
        t = self.level_features(text, self.video_keys(keys))
        logits = torch.einsum("bd,bkd->bk", v, self.logit_scale.exp() * t)
        return logits.softmax(dim=1)


def trainable_groups(head: ClipvqaHead, weight_decay: float, *, train_logit_scale: bool,
                     train_conv: bool) -> list[dict[str, Any]]:
    """AdamW groups as upstream builds them: decay on weights of 2+ axes, none on vectors,
    biases and positional embeddings. Upstream freezes ``conv2`` and ``logit_scale`` (its
    ``fix_text`` leaves only ``visual.``/``mit``/``prompts`` parameters trainable)."""
    decay, no_decay = [], []
    for name, param in head.named_parameters():
        frozen = ((name == "logit_scale" and not train_logit_scale)
                  or (name.startswith("conv2.") and not train_conv))
        param.requires_grad_(not frozen)
        if frozen:
            continue
        if param.ndim <= 1 or name.endswith(".bias") or "positional_embedding" in name:
            no_decay.append(param)
        else:
            decay.append(param)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def lr_at(step: int, *, base: float, minimum: float, warmup_steps: int,
          total_steps: int) -> float:
    """Upstream's schedule (timm ``CosineLRScheduler``, warm-up from 0, no warm-up prefix,
    one cycle), stepped per optimiser update."""
    if step < warmup_steps:
        return base * step / warmup_steps
    if step >= total_steps:
        return minimum
    return minimum + 0.5 * (base - minimum) * (1.0 + math.cos(math.pi * step / total_steps))
