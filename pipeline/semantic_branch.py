"""The semantic branch: frozen CLIP over each sampled frame, in one or two views.

``windows`` view (CLiF-VQA eqs. 1-7), per sampled frame:

- ``frame_scores`` (F, 2r) float32: mean then max over windows of each window's softmax
  probabilities over the r descriptions (by default one softmax over all r, eq. 2);
- ``window_embeddings`` (F, m*n, D) float16: every window's L2-normalised image embedding, so a
  new prompt set can be scored later without running CLIP again (``prompts.score_windows``).

``frame`` view (CLIPVQA's frame input, opt-in), per sampled frame:

- ``frame_embeddings`` (F, D) float32: the CLIP image embedding (before L2 normalisation) of
  the whole frame prepared as CLIPVQA does (short side to 256, centre crop 224, ImageNet
  mean/std; :mod:`.frame_view`);
- ``frame_tokens`` (F, N, W) float16, with ``clip_tokens``: the patch tokens after the last
  transformer block (class token dropped, before ``ln_post``), N = (224/patch)^2.

Both views: ``frame_times`` (F,) float32, each frame's time in seconds. F is the number of
frames the sampling plan asks for; a plan that names a frame twice (TSN sampling of a short
video) gets the frame's rows twice.

Branch-wide arrays (:meth:`SemanticBranch.branch_arrays`, stored under ``meta/semantic/``):
``text_embeddings`` (r, D), the prompts' L2-normalised text embeddings, and, with the frame view,
``level_text_embeddings`` (6, D) float32: CLIPVQA's quality-level words (``labels.csv``: bad,
poor, fair, good, great, excellent) through the bare ``"{}"`` template, NOT L2-normalised.

Scores are computed from the float16 embeddings exactly as stored, so rescoring the store with
the same prompts reproduces them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from vqa_pipe.pipeline.clip_model import ClipModel
from vqa_pipe.pipeline.errors import VqaPipeError
from vqa_pipe.pipeline.frame_view import CLIPVQA_MEAN, CLIPVQA_STD, clipvqa_frame
from vqa_pipe.pipeline.prompts import PromptSet, score_windows
from vqa_pipe.pipeline.windows import WindowGrid, window_views

VIEWS = ("windows", "frame")
FRAME_NORMS = ("clipvqa", "clip")
# CLIPVQA's labels/labels.csv (ids 0-5) and its text template (utils/tools.py generate_text).
LEVEL_LABELS = ("bad", "poor", "fair", "good", "great", "excellent")
LEVEL_TEMPLATE = "{}"


class SemanticConfigError(VqaPipeError):
    """The semantic branch was configured with settings that do not go together."""


@dataclass
class _VideoState:
    key: str
    planned: list[int]
    seen: dict = field(default_factory=dict)  # frame index -> row among decoded frames
    times: list = field(default_factory=list)
    windows: list = field(default_factory=list)
    frame_emb: list = field(default_factory=list)
    frame_tokens: list = field(default_factory=list)
    error: str | None = None  # set when a batch holding this video's images failed


class SemanticBranch:
    """CLIP window features (and optionally CLIPVQA frame features) for the ``semantic`` group.

    Args:
        clip: the frozen CLIP (:func:`~vqa_pipe.pipeline.clip_model.load_clip`).
        prompts: descriptions scored by the windows view.
        sampling: a picklable frame plan (``FrameSampling``, ``TSNSampling``).
        grid, window_fit: the windows view's m x n grid (``WindowGrid``).
        softmax: ``all`` (CLiF-VQA eq. 2, the default), ``per_set`` or ``pairs``.
        batch_windows: images per CLIP batch (windows and frame crops together).
        views: ``("windows",)`` (default), ``("frame",)`` or both.
        clip_tokens: also store the frame view's patch tokens (``frame_tokens``).
        frame_norm: the frame view's pixel normalisation: ``clipvqa`` (ImageNet mean/std, what
            CLIPVQA's code does) or ``clip`` (the CLIP model's own mean/std).
        level_labels: the quality-level words of ``level_text_embeddings``.
    """

    name = "semantic"

    def __init__(
        self,
        clip: ClipModel,
        prompts: PromptSet,
        sampling: Any,
        *,
        grid: tuple[int, int] = (3, 3),
        window_fit: str = "native",
        softmax: str = "all",
        batch_windows: int = 288,
        views: Sequence[str] = ("windows",),
        clip_tokens: bool = False,
        frame_norm: str = "clipvqa",
        level_labels: Sequence[str] = LEVEL_LABELS,
    ):
        views = tuple(dict.fromkeys(views))
        if not views or any(v not in VIEWS for v in views):
            raise SemanticConfigError(
                f"semantic views must be a non-empty selection of {', '.join(VIEWS)}, "
                f"got {list(views)}"
            )
        if clip_tokens and "frame" not in views:
            raise SemanticConfigError(
                "clip_tokens stores the frame view's patch tokens: add the 'frame' view"
            )
        if frame_norm not in FRAME_NORMS:
            raise SemanticConfigError(
                f"frame_norm must be one of {', '.join(FRAME_NORMS)}, got {frame_norm!r}"
            )
        self.clip = clip
        self.prompts = prompts
        self.sampling = sampling
        self.views = views
        self.clip_tokens = bool(clip_tokens)
        self.frame_norm = frame_norm
        self.grid = WindowGrid(grid[0], grid[1], clip.image_size, window_fit)
        self.softmax = softmax
        self.groups = prompts.groups(softmax)
        self.batch_windows = max(self.grid.n_windows, int(batch_windows))
        # Images waiting for CLIP, of every video in flight: (video state, window stack or
        # frame crop). Several videos share a batch (the decoder pool interleaves them).
        self._windows: list = []
        self._frames: list = []
        self.text_embeddings = clip.encode_texts(list(prompts.texts)).numpy().astype(np.float32)
        self.level_labels = tuple(str(w).strip() for w in level_labels)
        self.level_text_embeddings = None
        if "frame" in views:
            texts = [LEVEL_TEMPLATE.format(w) for w in self.level_labels]
            self.level_text_embeddings = (
                clip.encode_texts(texts, normalize=False).numpy().astype(np.float32)
            )

    @property
    def random_weights(self) -> bool:
        return self.clip.random_weights

    @property
    def frame_mean_std(self) -> tuple[tuple, tuple]:
        if self.frame_norm == "clipvqa":
            return CLIPVQA_MEAN, CLIPVQA_STD
        return self.clip.mean, self.clip.std

    def config(self) -> dict:
        sampling = self.sampling
        out = {
            **self.clip.config(),
            "views": list(self.views),
            "sampling": sampling.config() if hasattr(sampling, "config") else {
                "fps": sampling.fps, "max_frames": sampling.max_frames
            },
        }
        if "windows" in self.views:
            out.update({
                "grid": [self.grid.rows, self.grid.cols],
                "window_size": self.grid.size,
                "window_fit": self.grid.fit,
                "softmax": self.softmax,
                "prompts": self.prompts.to_config(),
                "feature_names": self.prompts.feature_names(),
            })
        if "frame" in self.views:
            mean, std = self.frame_mean_std
            size = self.clip.image_size
            out["frame_view"] = {
                "resize_short_side": int(256 / 224 * size),
                "interpolation": "bilinear (OpenCV INTER_LINEAR, uint8)",
                "center_crop": size,
                "normalization": self.frame_norm,
                "mean": [float(v) for v in mean],
                "std": [float(v) for v in std],
                "embeddings": "image embedding before L2 normalisation",
                "tokens": self.clip_tokens,
                "level_labels": list(self.level_labels),
                "level_template": LEVEL_TEMPLATE,
            }
        return out

    def branch_arrays(self) -> dict[str, np.ndarray]:
        """Branch-wide arrays to store with the configuration (``put_branch_array``)."""
        out = {"text_embeddings": self.text_embeddings}
        if self.level_text_embeddings is not None:
            out["level_text_embeddings"] = self.level_text_embeddings
        return out

    def plan(self) -> Any:
        return self.sampling

    def start_video(self, key: str, info: Any) -> _VideoState:
        return _VideoState(key, [int(i) for i in self.sampling.indices(info)])

    def add_frame(self, state: _VideoState, frame: Any) -> None:
        import torch

        if frame.index in state.seen:  # a plan may name a frame twice; it is decoded once
            return
        if state.error:  # a batch holding this video failed: it fails; spend nothing more
            return
        state.seen[frame.index] = len(state.times)
        state.times.append(float(frame.time_s))
        if "windows" in self.views:
            # The frame crosses to the device once (pinned, asynchronous on CUDA); the
            # windows are cut there.
            rgb = torch.from_numpy(np.ascontiguousarray(frame.rgb))
            if str(self.clip.device).startswith("cuda"):
                rgb = rgb.pin_memory().to(self.clip.device, non_blocking=True)
            self._windows.append((state, window_views(rgb, self.grid)))
        if "frame" in self.views:
            crop = clipvqa_frame(frame.rgb, self.clip.image_size)
            self._frames.append((state, torch.from_numpy(crop).permute(2, 0, 1)))
        if len(self._windows) * self.grid.n_windows + len(self._frames) >= self.batch_windows:
            self._flush()

    def _flush(self) -> None:
        """Encode every pending window and frame crop, of all videos in flight, in one batch
        each, and hand each video its rows (in its frames' order). A batch that fails (e.g.
        out of GPU memory) fails every video it held, each with the real reason."""
        pending = [st for st, _ in self._windows] + [st for st, _ in self._frames]
        try:
            self._encode_pending()
        except Exception as err:  # noqa: BLE001 - recorded on each video of the batch
            self._windows, self._frames = [], []
            reason = f"CLIP batch failed ({type(err).__name__}: {err})"
            for state in pending:
                state.error = state.error or reason

    def _encode_pending(self) -> None:
        import torch

        if self._windows:
            pending, self._windows = self._windows, []
            emb = self.clip.encode_images([view for _, views in pending for view in views])
            emb = emb.cpu().numpy().astype(np.float16).reshape(
                len(pending), self.grid.n_windows, -1
            )
            for (state, _), rows in zip(pending, emb):
                state.windows.append(rows[None])
        if self._frames:
            pending, self._frames = self._frames, []
            mean, std = self.frame_mean_std
            out = self.clip.encode_images(
                torch.stack([c for _, c in pending]), mean=mean, std=std, normalize=False,
                tokens=self.clip_tokens,
            )
            emb, tokens = out if self.clip_tokens else (out, None)
            emb = emb.cpu().numpy().astype(np.float32)
            tokens = None if tokens is None else tokens.cpu().numpy().astype(np.float16)
            for k, (state, _) in enumerate(pending):
                state.frame_emb.append(emb[k:k + 1])
                if tokens is not None:
                    state.frame_tokens.append(tokens[k:k + 1])

    def finish_video(self, state: _VideoState) -> dict[str, np.ndarray]:
        if any(st is state for st, _ in self._windows) or any(
            st is state for st, _ in self._frames
        ):
            self._flush()  # with the other videos' pending images: one cross-video batch
        if state.error:
            raise RuntimeError(f"{state.key}: {state.error}")
        if not state.times:
            raise ValueError(f"{state.key}: no frames were decoded")
        missing = sorted({i for i in state.planned if i not in state.seen})
        if missing:
            raise ValueError(
                f"{state.key}: frames {missing[:5]} were planned but not decoded"
            )
        rows = np.array([state.seen[i] for i in state.planned], dtype=np.int64)
        out = {"frame_times": np.asarray(state.times, dtype=np.float32)[rows]}
        if "windows" in self.views:
            emb = np.concatenate(state.windows)[rows]
            scores = score_windows(emb, self.text_embeddings, self.clip.logit_scale, self.groups)
            out["frame_scores"] = scores.astype(np.float32)
            out["window_embeddings"] = emb
        if "frame" in self.views:
            out["frame_embeddings"] = np.concatenate(state.frame_emb)[rows]
            if self.clip_tokens:
                out["frame_tokens"] = np.concatenate(state.frame_tokens)[rows]
        return out
