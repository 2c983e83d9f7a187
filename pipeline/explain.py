"""Why a video got its score: description deviations, contributions, a per-frame curve.

Three explanations, each computed from the model inputs the score itself came from:

* **Deviations** (any model with the semantic branch). A description's probability in a video
  is its probability averaged over windows and frames (the first r pooled semantic features).
  Its z-score is ``(p - mean) / std`` over the training videos: signed, so ``blurry +2.1``
  means "much blurrier than the training videos looked to CLIP".
* **Contributions** (occlusion to the training mean). The change of the prediction when one
  description's features (every input column computed from its probabilities: pooled mean and
  std of its average and maximum over windows, or its two columns at every time step of the
  sequence) are replaced by their training-set means: ``c_d = f(x) - f(x with d at the mean)``,
  in MOS points of the training scale. For a model that is linear in its inputs (``ridge``) this
  is exactly ``sum_j coef_j (x_j - mean_j)`` over the description's columns, the contributions
  add up with the *reference* (the prediction with every description at its mean) to the score,
  and nothing is approximated. For non-linear models (svr, mlp, gru) each contribution
  is the exact effect of that one replacement, but interactions make them not add up; the
  reference is reported so the gap can be seen. An ensemble's contribution is the mean of its
  members' (the replacement is linear in the average).
* **Per-frame curve**. For every sampled frame t, the prediction for a clip in which every frame
  looks like frame t: the sequence input holds frame t's scores at every time step; pooled
  semantic features take frame t's scores as their mean and keep the video's own spread over
  time (std). It ranks frames (worst and best for the report) and shows how quality moves
  along the video; for the temporal heads (mlp, gru) it is their response to a one-frame
  window. Inputs of other branches (pooled Swin maps) stay as they are for the video.

Models whose inputs carry the descriptions in a form not listed here, or that read per-clip
maps (``fused``, ``fastvqa``: megabytes per video, copied once per description and frame),
frame embeddings (``clipvqa``) or every frame's scores (``vsfa``) get deviations only, with a
note; nothing is guessed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

FLAT = "flat"
SEQUENCE = "sequence"
KNOWN_ROLES = (FLAT, SEQUENCE, "spatial_maps", "spatial_pooled")
MAX_BATCH_BYTES = 256 << 20
METHOD = "occlusion: one description's features replaced by their training-set mean"


@dataclass
class VideoExplanation:
    """One video's explanation (values on the training scale where they are scores)."""

    video_id: str
    deviations: list[dict[str, float | str]] = field(default_factory=list)
    contributions: list[dict[str, float | str]] | None = None
    reference: float | None = None
    exact: bool = False
    frame_times: list[float] = field(default_factory=list)
    frame_curve: list[float] | None = None
    notes: list[str] = field(default_factory=list)

    def top_deviations(self, k: int) -> list[dict]:
        """The k largest |z| (zero-shot: the k probabilities farthest from 0.5)."""

        def size(d: Mapping) -> float:
            z = d.get("z")
            return abs(float(z)) if z is not None else abs(float(d["probability"]) - 0.5)

        return sorted(self.deviations, key=lambda d: -size(d))[:k]

    def top_contributions(self, k: int) -> list[dict]:
        if not self.contributions:
            return []
        return sorted(self.contributions, key=lambda c: -abs(float(c["contribution"])))[:k]

    def to_json(self) -> dict[str, Any]:
        return {
            "deviations": self.deviations,
            "contributions": self.contributions,
            "contribution_method": METHOD if self.contributions is not None else None,
            "contributions_exact": self.exact if self.contributions is not None else None,
            "reference": self.reference,
            "frame_times": self.frame_times,
            "frame_curve": self.frame_curve,
            "notes": self.notes,
        }


def predict_unit(models: Sequence[Any], inputs: Mapping[str, np.ndarray]) -> np.ndarray:
    """The ensemble's unit-scale prediction for every row of ``inputs`` (mean over members).

    Rows are sent in batches of at most :data:`MAX_BATCH_BYTES` of inputs, so many occlusion
    copies of large inputs (Swin maps) never sit in memory at once.
    """
    from vqa_pipe.pipeline.feature_table import FeatureTable

    n = len(next(iter(inputs.values())))
    row_bytes = sum(int(np.asarray(v[:1]).nbytes) for v in inputs.values()) or 1
    step = max(1, MAX_BATCH_BYTES // row_bytes)
    out = np.zeros(n, dtype=np.float64)
    for start in range(0, n, step):
        part = {k: np.ascontiguousarray(v[start:start + step]) for k, v in inputs.items()}
        m = len(next(iter(part.values())))
        table = FeatureTable(
            video_ids=[f"row{start + i}" for i in range(m)],
            mos=np.zeros(m),
            scales=["0-100"] * m,
            inputs=part,
        )
        out[start:start + m] = np.mean([model.predict_unit(table) for model in models], axis=0)
    return out


class Explainer:
    """Explanations for one model (or ensemble) trained on semantic features.

    Args:
        models: the loaded members.
        roles: the inputs they read.
        flat_layout: ``[[branch, array, width], ...]`` of the flat input, as trained.
        descriptions: the r descriptions of the semantic branch, in store order.
        stats: training statistics (see :func:`vqa_pipe.pipeline.bundle.training_stats`).
        span: width of the training MOS scale (``high - low``), to report in MOS points.
        linear: True when the model is linear in its inputs (contributions exact).
    """

    def __init__(
        self,
        models: Sequence[Any],
        roles: Sequence[str],
        flat_layout: Sequence,
        descriptions: Sequence[str],
        stats: Mapping[str, np.ndarray],
        *,
        span: float,
        low: float,
        linear: bool = False,
    ) -> None:
        self.models = list(models)
        self.roles = list(roles)
        self.descriptions = list(descriptions)
        self.r = len(self.descriptions)
        self.stats = dict(stats)
        self.span = float(span)
        self.low = float(low)
        self.linear = bool(linear)
        self.semantic_cols: slice | None = None
        start = 0
        for branch, _array, width in flat_layout or []:
            if branch == "semantic":
                self.semantic_cols = slice(start, start + int(width))
            start += int(width)
        self.notes: list[str] = []
        unknown = [r for r in self.roles if r not in KNOWN_ROLES]
        carries = (FLAT in self.roles and self.semantic_cols is not None) or SEQUENCE in self.roles
        self.can_attribute = bool(self.r) and not unknown and carries
        if unknown:
            self.notes.append(
                f"contributions and the frame curve are not available for inputs {unknown}"
            )
        elif not carries and self.r:
            self.notes.append("the model reads no semantic features: no contributions")
        if self.can_attribute and self.semantic_cols is not None:
            width = self.semantic_cols.stop - self.semantic_cols.start
            if width != 4 * self.r:
                self.can_attribute = False
                self.notes.append(
                    f"flat semantic block has {width} columns, not 4r = {4 * self.r}"
                )

    # ------------------------------------------------------------------ pieces
    def to_scale(self, unit: np.ndarray) -> np.ndarray:
        return np.asarray(unit, dtype=np.float64) * self.span + self.low

    def _flat_columns(self, d: int) -> list[int]:
        base = self.semantic_cols.start  # type: ignore[union-attr]
        return [base + d, base + self.r + d, base + 2 * self.r + d, base + 3 * self.r + d]

    def _occlude(self, inputs: Mapping[str, np.ndarray], d: int | None) -> dict[str, np.ndarray]:
        """Copy of one video's inputs (leading axis 1) with description ``d`` (None: all) at the
        training mean."""
        out = {k: np.array(v, copy=True) for k, v in inputs.items()}
        ds = range(self.r) if d is None else [d]
        if FLAT in out and self.semantic_cols is not None:
            mean = self.stats["role.flat.mean"]
            cols = [c for k in ds for c in self._flat_columns(k)]
            out[FLAT][:, cols] = mean[cols]
        if SEQUENCE in out:
            mean = self.stats["role.sequence.mean"]
            cols = [c for k in ds for c in (k, self.r + k)]
            out[SEQUENCE][:, :, cols] = mean[:, cols]
        return out

    def _frame_inputs(self, inputs: Mapping[str, np.ndarray], frames: np.ndarray) -> dict:
        """One row per frame t: the video's inputs as if every frame looked like frame t."""
        f = len(frames)
        out = {k: np.repeat(np.asarray(v), f, axis=0) for k, v in inputs.items()}
        if FLAT in out and self.semantic_cols is not None:
            base = self.semantic_cols.start
            out[FLAT][:, base:base + 2 * self.r] = frames
        if SEQUENCE in out:
            out[SEQUENCE][:] = frames[:, None, :]
        return out

    def deviations(self, frame_scores: np.ndarray) -> list[dict]:
        """Every description's probability (mean over windows and frames) and its z-score."""
        if not self.r or "semantic_flat.mean" not in self.stats:
            return []
        p = np.asarray(frame_scores, dtype=np.float64)[:, : self.r].mean(axis=0)
        mean = self.stats["semantic_flat.mean"][: self.r].astype(np.float64)
        std = self.stats["semantic_flat.std"][: self.r].astype(np.float64)
        z = np.where(std > 1e-9, (p - mean) / np.maximum(std, 1e-9), 0.0)
        return [
            {"description": name, "probability": float(p[i]), "z": float(z[i]),
             "training_mean": float(mean[i])}
            for i, name in enumerate(self.descriptions)
        ]

    # ------------------------------------------------------------------ one video
    def explain(
        self,
        video_id: str,
        inputs: Mapping[str, np.ndarray],
        frame_scores: np.ndarray,
        frame_times: np.ndarray,
    ) -> VideoExplanation:
        """Explain one video. ``inputs``: its model inputs (leading axis of length 1);
        ``frame_scores`` (F, 2r) and ``frame_times`` (F,) from the store."""
        exp = VideoExplanation(video_id, deviations=self.deviations(frame_scores),
                               frame_times=[float(t) for t in frame_times], notes=list(self.notes))
        if not self.can_attribute:
            return exp
        rows = [dict(inputs)] + [self._occlude(inputs, d) for d in range(self.r)]
        rows.append(self._occlude(inputs, None))
        stacked = {k: np.concatenate([row[k] for row in rows]) for k in inputs}
        frames = np.asarray(frame_scores, dtype=np.float32)
        per_frame = self._frame_inputs(inputs, frames) if len(frames) else None
        if per_frame is not None:
            stacked = {k: np.concatenate([stacked[k], per_frame[k]]) for k in stacked}
        pred = predict_unit(self.models, stacked)
        base = pred[0]
        occluded = pred[1:1 + self.r]
        exp.contributions = [
            {"description": name, "contribution": float((base - occluded[i]) * self.span)}
            for i, name in enumerate(self.descriptions)
        ]
        exp.reference = float(self.to_scale(pred[1 + self.r]))
        exp.exact = self.linear
        if per_frame is not None:
            exp.frame_curve = [float(v) for v in self.to_scale(pred[2 + self.r:])]
        return exp


def window_probabilities(
    window_embeddings: np.ndarray,
    text_embeddings: np.ndarray,
    logit_scale: float,
    groups: Sequence[np.ndarray],
) -> np.ndarray:
    """Each window's probability of each description, (F, k, r), computed exactly as the
    stored frame scores are (:func:`vqa_pipe.pipeline.prompts.score_windows` on one window)."""
    from vqa_pipe.pipeline.prompts import score_windows

    w = np.asarray(window_embeddings)
    f, k, dim = w.shape
    r = len(text_embeddings)
    per_window = score_windows(w.reshape(f * k, 1, dim), text_embeddings, logit_scale, groups)
    return per_window[:, :r].reshape(f, k, r)


def zero_shot_explanation(
    video_id: str,
    frame_scores: np.ndarray,
    frame_times: np.ndarray,
    descriptions: Sequence[str],
    quality: int,
    attributes: Sequence[int],
) -> VideoExplanation:
    """A zero-shot (CLIP-IQA) score's explanation: the probability of the first description of
    every other antonym pair (``Sharp`` vs ``Blurry`` ...), averaged over windows and frames
    (no training set, so no z-scores and no contributions), and the per-frame curve of the
    quality probability x 100."""
    x = np.asarray(frame_scores, dtype=np.float64)
    p = x.mean(axis=0) if len(x) else np.zeros(x.shape[1])
    exp = VideoExplanation(video_id, frame_times=[float(t) for t in frame_times])
    exp.deviations = [
        {"description": descriptions[i], "probability": float(p[i]), "z": None}
        for i in attributes
    ]
    exp.frame_curve = [float(v) for v in 100.0 * x[:, quality]]
    exp.notes.append(
        "zero-shot: attribute probabilities against their antonyms (0.5 = undecided); "
        "no training set, so no z-scores or contributions"
    )
    return exp
