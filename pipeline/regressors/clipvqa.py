"""``clipvqa``: the CLIPVQA head (SAT + VAT + level softmax) trained on cached CLIP features.

Inputs (feature-table roles): ``clip_frames`` (T, D) frame embeddings, ``clip_keys``
(T, N, C) patch tokens (or, in stores without tokens, the window embeddings: the *windows
variant*; ``fit_info['vat_keys']`` says which ran) and ``level_text`` (6, D), the text
embeddings of the level words bad ... excellent. See :mod:`vqa_pipe.pipeline.clipvqa`.

Training follows upstream's ``main.py`` and ``utils/optimizer.py`` where they apply to a
head on a frozen CLIP: soft labels of the MOS on the level scale [0, 5] as targets,
``CosineEmbeddingLoss``; AdamW (betas 0.9/0.98, eps 1e-8, weight decay 1e-3 on weights of
2+ axes only); lr 8e-5 (upstream's 8e-6 x 10, the rate of its SAT/VAT groups), 5 warm-up
epochs from 0 then cosine to 8e-8 per step; 40 epochs; 16 videos per step (upstream: 2 per
GPU x 8 accumulation steps); the last incomplete batch of an epoch is dropped (upstream
``drop_last=True``). ``conv2`` and ``logit_scale`` stay frozen as upstream (its
``fix_text``); ``train_conv`` / ``train_logit_scale`` free them.

The epoch is chosen on the validation part (SROCC + PLCC of the decoded scores; upstream
chose it on its test list). Scores are decoded from the level probabilities by the SVR
decoder (``decode='svr'``, upstream) or by the expectation (``decode='expectation'``); both
decoders are fitted and saved, ``decode`` picks the one used. ``predict_proba`` gives the
level probabilities.

Inputs are used as they are stored (no standardisation: LayerNorm and the L2 norms inside
the head do that); NaN values left by the ``mean`` NaN policy become training-part channel
means. Only one batch of keys is ever converted to float32, so float16 token arrays of
several GB train without a second copy.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from vqa_pipe.pipeline.clipvqa import (
    DECODERS,
    LEVEL_WORDS,
    TOKEN_LAYOUTS,
    TOP_LEVEL,
    ClipvqaHead,
    SVRDecoder,
    cosine_label_loss,
    decode_levels,
    levels_to_unit,
    lr_at,
    soft_labels,
    trainable_groups,
)
from vqa_pipe.pipeline.feature_table import (
    CLIP_FRAMES,
    CLIP_KEYS,
    LEVEL_TEXT,
    FeatureTable,
)
from vqa_pipe.pipeline.regressors import Param, Regressor, RegressorError, register_regressor
from vqa_pipe.pipeline.regressors._torch_training import _val_score, torch_threads

BETAS = (0.9, 0.98)
EPS = 1e-8
PREDICT_BATCH = 32
TEXT_TOLERANCE = 1e-3
"""Relative difference above which a table's level text embeddings count as different."""


def _channel_means(arr: np.ndarray, chunk: int = 16) -> np.ndarray:
    """Mean of the finite values of each channel (last axis), ``chunk`` videos at a time."""
    total = np.zeros(arr.shape[-1])
    count = np.zeros(arr.shape[-1])
    for start in range(0, len(arr), chunk):
        block = np.asarray(arr[start:start + chunk], dtype=np.float32).reshape(-1, arr.shape[-1])
        finite = np.isfinite(block)
        total += np.where(finite, block, 0.0).sum(axis=0, dtype=np.float64)
        count += finite.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / count
    return np.where(np.isfinite(mean), mean, 0.0).astype(np.float32)


@register_regressor("clipvqa")
class ClipvqaRegressor(Regressor):
    """CLIPVQA head on cached frame embeddings, patch tokens (or windows) and level words."""

    roles = (CLIP_FRAMES, CLIP_KEYS, LEVEL_TEXT)
    params_spec = (
        Param("epochs", "int", 40, "training epochs (the best one on validation is kept)", low=1),
        Param("batch_size", "int", 16, "videos per step (upstream: 2 x 8 accumulated)", low=1),
        Param("lr", "float", 8e-5, "peak learning rate of SAT and VAT", low=0, low_open=True),
        Param("min_lr", "float", 8e-8, "learning rate at the end of the cosine decay", low=0),
        Param("warmup_epochs", "int", 5, "linear warm-up epochs", low=0),
        Param("weight_decay", "float", 1e-3, "AdamW weight decay", low=0),
        Param("mit_layers", "int", 1, "SAT: attention blocks over the frames", low=0),
        Param("prompts_layers", "int", 2, "VAT: cross-attention layers", low=0),
        Param("prompts_alpha", "float", 0.1, "VAT: initial weight of the video-aware term"),
        Param("logit_scale", "float", math.log(100.0), "initial log logit scale (CLIP's)"),
        Param("train_logit_scale", "bool", False, "learn the logit scale (upstream: fixed)"),
        Param("train_conv", "bool", False, "learn VAT's temporal Conv (upstream: fixed)"),
        Param("token_layout", "choice", "upstream", "read the Conv output as upstream does, or "
              "one row per patch token", choices=TOKEN_LAYOUTS),
        Param("decode", "choice", "svr", "levels to MOS: SVR on soft labels (upstream) or the "
              "expected level", choices=DECODERS),
        Param("seed", "int", 0, "seed of the weights and of the batch order", low=0),
        Param("threads", "int", 1, "torch CPU threads (0: leave torch's setting)", low=0),
        Param("device", "choice", "cpu", "where the head trains and predicts (cuda: the first "
              "visible GPU; saved models load on the CPU)", choices=("cpu", "cuda", "auto")),
    )

    def _check_params(self) -> None:
        pass  # every parameter is declared in params_spec and checked there

    # ------------------------------------------------------------------ public extras
    def fit(self, train: FeatureTable, val: FeatureTable | None = None) -> dict[str, Any]:
        self._keys_source = str(train.info.get("role_sources", {}).get(CLIP_KEYS, "unrecorded"))
        return super().fit(train, val)

    def predict_unit(self, table: FeatureTable) -> np.ndarray:
        self._check_table(table)
        return super().predict_unit(table)

    def predict_proba(self, table: FeatureTable) -> np.ndarray:
        """(videos, 6) level probabilities, columns in :data:`LEVEL_WORDS` order."""
        if not self._fitted:
            raise RegressorError(f"{self.who} must be fitted (or loaded) before predicting")
        self._check_table(table)
        inputs = self._inputs(table)
        with torch_threads(int(self.params["threads"])):
            return self._probs(inputs)

    # ------------------------------------------------------------------ checks
    def _check_table(self, table: FeatureTable) -> None:
        if not self._fitted:
            return
        trained = self.fit_info.get("vat_keys")
        given = table.info.get("role_sources", {}).get(CLIP_KEYS)
        if trained and given and trained != "unrecorded" and given != trained:
            raise RegressorError(
                f"{self.who} was trained with VAT keys from '{trained}', but the features of "
                f"{table.dataset or 'this table'} come from '{given}'; extract "
                f"{trained.split('/')[-1]} for it, or train on the same kind of store"
            )
        text = table.inputs.get(LEVEL_TEXT)
        if text is not None and text.shape[1:] == self._level_text.shape:
            diff = float(np.abs(text[0] - self._level_text).max())
            if diff > TEXT_TOLERANCE * max(1e-6, float(np.abs(self._level_text).max())):
                raise RegressorError(
                    f"the level-word text embeddings of {table.dataset or 'this table'} differ "
                    f"from those {self.who} was trained with (max difference {diff:.3g}): its "
                    "store was made with another CLIP model or other level words"
                )

    def _check_shapes(self, shapes: Mapping[str, list[int]]) -> tuple[int, int, int, int, int]:
        frames, keys, text = shapes[CLIP_FRAMES], shapes[CLIP_KEYS], shapes[LEVEL_TEXT]
        if len(frames) != 2 or len(keys) != 3 or len(text) != 2:
            raise RegressorError(
                f"{self.who} needs '{CLIP_FRAMES}' (T, D), '{CLIP_KEYS}' (T, N, C) and "
                f"'{LEVEL_TEXT}' (K, D); got {frames}, {keys}, {text}"
            )
        n_frames, dim = frames
        if keys[0] != n_frames:
            raise RegressorError(f"{self.who}: {n_frames} frames of embeddings but "
                                 f"{keys[0]} frames of keys")
        if text != [len(LEVEL_WORDS), dim]:
            raise RegressorError(
                f"{self.who} needs the text embeddings of the {len(LEVEL_WORDS)} level words "
                f"({', '.join(LEVEL_WORDS)}) of size D = {dim}; the store gives shape "
                f"{tuple(text)}"
            )
        return int(n_frames), int(dim), int(keys[1]), int(keys[2]), len(LEVEL_WORDS)

    # ------------------------------------------------------------------ model
    def _build(self, shapes: Mapping[str, list[int]]) -> ClipvqaHead:
        n_frames, dim, _, width, _ = self._check_shapes(shapes)
        p = self.params
        try:
            return ClipvqaHead(n_frames, dim, width, mit_layers=int(p["mit_layers"]),
                               prompts_layers=int(p["prompts_layers"]),
                               prompts_alpha=float(p["prompts_alpha"]),
                               logit_scale=float(p["logit_scale"]),
                               token_layout=p["token_layout"])
        except Exception as err:  # ClipvqaError: a size the head cannot take
            raise RegressorError(f"{self.who}: {err}") from None

    def _batch(self, role: str, arr: np.ndarray, idx: np.ndarray | slice) -> torch.Tensor:
        x = np.asarray(arr[idx], dtype=np.float32)
        if not np.isfinite(x).all():
            x = np.where(np.isfinite(x), x, self._fill[role])
        return torch.from_numpy(np.ascontiguousarray(x)).to(self._device(), non_blocking=True)

    def _device(self) -> str:
        from vqa_pipe.pipeline.device import resolve_device

        return resolve_device(self.params["device"])

    def _probs(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        self._head.to(self._device()).eval()
        frames, keys = inputs[CLIP_FRAMES], inputs[CLIP_KEYS]
        text = torch.from_numpy(self._level_text).to(self._device())
        out = []
        with torch.no_grad():
            for start in range(0, len(frames), PREDICT_BATCH):
                sl = slice(start, start + PREDICT_BATCH)
                out.append(self._head(self._batch(CLIP_FRAMES, frames, sl),
                                      self._batch(CLIP_KEYS, keys, sl), text)
                           .double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(LEVEL_WORDS)))

    def _decode_unit(self, probs: np.ndarray) -> np.ndarray:
        return levels_to_unit(decode_levels(probs, self.params["decode"], self._svr))

    # ------------------------------------------------------------------ Regressor hooks
    def _fit(self, inputs, y_unit, val_inputs, y_val_unit) -> dict[str, Any]:
        with torch_threads(int(self.params["threads"])):
            return self._train(inputs, y_unit, val_inputs, y_val_unit)

    def _train(self, inputs, y_unit, val_inputs, y_val_unit) -> dict[str, Any]:
        p = self.params
        torch.manual_seed(int(p["seed"]))
        frames, keys = inputs[CLIP_FRAMES], inputs[CLIP_KEYS]
        self._level_text = np.ascontiguousarray(inputs[LEVEL_TEXT][0], dtype=np.float32)
        if not np.isfinite(self._level_text).all():
            raise RegressorError(f"{self.who}: the level-word text embeddings hold NaN or inf")
        self._fill = {CLIP_FRAMES: _channel_means(frames), CLIP_KEYS: _channel_means(keys)}
        levels = TOP_LEVEL * np.asarray(y_unit, dtype=np.float64)
        targets = torch.from_numpy(soft_labels(levels).astype(np.float32)).to(self._device())
        self._svr = SVRDecoder.fit(levels)
        self._head = self._build(self.input_shapes).to(self._device())
        groups = trainable_groups(self._head, float(p["weight_decay"]),
                                  train_logit_scale=bool(p["train_logit_scale"]),
                                  train_conv=bool(p["train_conv"]))
        optimizer = torch.optim.AdamW(groups, lr=float(p["lr"]), betas=BETAS, eps=EPS)
        n, size, epochs = len(levels), int(p["batch_size"]), int(p["epochs"])
        per_epoch = max(1, n // size)  # drop_last, as upstream's loader
        total, warmup = epochs * per_epoch, int(p["warmup_epochs"]) * per_epoch
        text = torch.from_numpy(self._level_text).to(self._device())
        generator = torch.Generator().manual_seed(int(p["seed"]))
        use_val = val_inputs is not None and y_val_unit is not None and len(y_val_unit) >= 3
        best_score, best_epoch, best_state = -math.inf, epochs, None
        history, step = [], 0
        for epoch in range(1, epochs + 1):
            self._head.train()
            order = torch.randperm(n, generator=generator).numpy()
            total_loss = 0.0
            for b in range(per_epoch):
                idx = np.sort(order[b * size:(b + 1) * size])  # sorted: faster gathers
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(step, base=float(p["lr"]), minimum=float(p["min_lr"]),
                                        warmup_steps=warmup, total_steps=total)
                probs = self._head(self._batch(CLIP_FRAMES, frames, idx),
                                   self._batch(CLIP_KEYS, keys, idx), text)
                loss = cosine_label_loss(probs, targets[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                total_loss += float(loss.detach())
            entry = {"epoch": epoch, "loss": total_loss / per_epoch}
            if use_val:
                score = _val_score(np.asarray(y_val_unit),
                                   self._decode_unit(self._probs(val_inputs)))
                entry["val_score"] = score
                if score > best_score:
                    best_score, best_epoch = score, epoch
                    best_state = copy.deepcopy(self._head.state_dict())
            history.append(entry)
        if best_state is not None:
            self._head.load_state_dict(best_state)
        info: dict[str, Any] = {
            "vat_keys": self._keys_source,
            "variant": ("patch tokens" if self._keys_source.endswith("frame_tokens") else
                        "window embeddings" if self._keys_source.endswith("window_embeddings")
                        else "unrecorded keys"),
            "decode": p["decode"],
            "epochs_run": epochs,
            "steps": step,
            "best_epoch": best_epoch if best_state is not None else epochs,
            "selected_on": "validation (SROCC+PLCC)" if best_state is not None else "last epoch",
            "final_train_loss": history[-1]["loss"],
            "svr_gamma": self._svr.gamma,
            "svr_support": int(len(self._svr.support)),
            "logit_scale": float(self._head.logit_scale.detach()),
            "n_parameters": int(sum(q.numel() for q in self._head.parameters()
                                    if q.requires_grad)),
            "input_shapes": {k: list(v) for k, v in self.input_shapes.items()},
        }
        if best_state is not None:
            info["val_score"] = best_score
        elif use_val:
            info["note"] = ("validation scores were undefined (constant predictions); "
                            "kept the last epoch")
        else:
            info["note"] = "no validation part of at least 3 videos; kept the last epoch"
        return info

    def _predict_unit(self, inputs) -> np.ndarray:
        with torch_threads(int(self.params["threads"])):
            return self._decode_unit(self._probs(inputs))

    def _state(self) -> dict[str, np.ndarray]:
        state = {f"net.{k}": v.detach().cpu().numpy()
                 for k, v in self._head.state_dict().items()}
        state.update(self._svr.state("svr"))
        state["level_text"] = self._level_text
        state.update({f"fill.{role}": value for role, value in self._fill.items()})
        return state

    def _set_state(self, tensors: Mapping[str, np.ndarray]) -> None:
        self._head = self._build(self.input_shapes)
        weights = {k[4:]: torch.from_numpy(np.array(v)) for k, v in tensors.items()
                   if k.startswith("net.")}
        try:
            self._head.load_state_dict(weights, strict=True)
        except RuntimeError as err:
            raise RegressorError(f"saved weights do not fit '{self.name}': {err}") from None
        self._head.eval()
        self._svr = SVRDecoder.from_state(tensors, "svr")
        self._level_text = np.asarray(tensors["level_text"], dtype=np.float32)
        self._fill = {role: np.asarray(tensors[f"fill.{role}"], dtype=np.float32)
                      for role in (CLIP_FRAMES, CLIP_KEYS)}
        self._keys_source = str(self.fit_info.get("vat_keys", "unrecorded"))
