"""The semantic branch: CLIP over m×n windows of each sampled frame, scored against prompts.

Per sampled frame it stores (CLiF-VQA eqs. 1-7):

- ``frame_scores`` (F, 2r) float32: mean then max over windows of each window's softmax
  probabilities over the r descriptions;
- ``window_embeddings`` (F, m*n, D) float16: every window's L2-normalised image embedding, so a
  new prompt set can be scored later without running CLIP again (``prompts.score_windows``);
- ``frame_times`` (F,) float32: each frame's time in seconds.

Scores are computed from the float16 embeddings exactly as stored, so rescoring the store with
the same prompts reproduces them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from vqa_pipe.pipeline.clip_model import ClipModel
from vqa_pipe.pipeline.prompts import PromptSet, score_windows
from vqa_pipe.pipeline.windows import WindowGrid, cut_windows


@dataclass
class _VideoState:
    key: str
    pending: list = field(default_factory=list)
    embeddings: list = field(default_factory=list)
    times: list = field(default_factory=list)


class SemanticBranch:
    """CLIP window features for the ``semantic`` store group."""

    name = "semantic"

    def __init__(
        self,
        clip: ClipModel,
        prompts: PromptSet,
        sampling: Any,
        *,
        grid: tuple[int, int] = (3, 3),
        window_fit: str = "native",
        softmax: str = "per_set",
        batch_windows: int = 288,
    ):
        self.clip = clip
        self.prompts = prompts
        self.sampling = sampling
        self.grid = WindowGrid(grid[0], grid[1], clip.image_size, window_fit)
        self.softmax = softmax
        self.groups = prompts.groups(softmax)
        self.batch_windows = max(self.grid.n_windows, int(batch_windows))
        self.text_embeddings = clip.encode_texts(list(prompts.texts)).numpy().astype(np.float32)

    @property
    def random_weights(self) -> bool:
        return self.clip.random_weights

    def config(self) -> dict:
        return {
            **self.clip.config(),
            "grid": [self.grid.rows, self.grid.cols],
            "window_size": self.grid.size,
            "window_fit": self.grid.fit,
            "softmax": self.softmax,
            "sampling": {"fps": self.sampling.fps, "max_frames": self.sampling.max_frames},
            "prompts": self.prompts.to_config(),
            "feature_names": self.prompts.feature_names(),
        }

    def plan(self) -> Any:
        return self.sampling

    def start_video(self, key: str, info: Any) -> _VideoState:
        return _VideoState(key)

    def add_frame(self, state: _VideoState, frame: Any) -> None:
        import torch

        rgb = torch.from_numpy(np.ascontiguousarray(frame.rgb)).to(self.clip.device)
        state.pending.append(cut_windows(rgb.permute(2, 0, 1), self.grid))
        state.times.append(float(frame.time_s))
        if len(state.pending) * self.grid.n_windows >= self.batch_windows:
            self._flush(state)

    def _flush(self, state: _VideoState) -> None:
        import torch

        if not state.pending:
            return
        windows = torch.cat(state.pending)
        state.pending.clear()
        emb = self.clip.encode_images(windows).cpu().numpy().astype(np.float16)
        state.embeddings.append(emb.reshape(-1, self.grid.n_windows, emb.shape[-1]))

    def finish_video(self, state: _VideoState) -> dict[str, np.ndarray]:
        self._flush(state)
        if not state.embeddings:
            raise ValueError(f"{state.key}: no frames were decoded")
        emb = np.concatenate(state.embeddings)
        scores = score_windows(emb, self.text_embeddings, self.clip.logit_scale, self.groups)
        return {
            "frame_scores": scores.astype(np.float32),
            "window_embeddings": emb,
            "frame_times": np.asarray(state.times, dtype=np.float32),
        }
