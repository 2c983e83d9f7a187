"""The spatial branch: FAST-VQA fragment clips through a Video Swin Tiny (CLiF-VQA's low-level
features).

Per video it stores, one row per fragment clip (``n_clips * n_samplings`` rows, sampling-major:
row ``s * n_clips + c`` is sampling ``s`` of clip ``c``):

- ``clip_maps`` (rows, C, T', H', W') float16: the backbone's last feature map (after its final
  LayerNorm), which FAST-VQA's VQAHead scores per clip (:mod:`.vqa_head`, the ``fastvqa`` and
  ``fused`` regressors); only with ``store_maps=True``. 768 x 16 x 7 x 7 for the defaults:
  1,204,224 bytes per clip.
- ``clip_pooled`` (rows, C) float32: the map's global average, a cheap vector for SVR-style
  regressors (3,072 bytes per clip).

Clips and patches are sampled as FAST-VQA samples them at test time (:mod:`.fragments`:
``clip_sampler`` and ``small_frames``, both ``fastvqa`` by default). Clips are built while
frames stream in: each arriving frame is cut into the mini-patches of
every clip (and sampling) that uses it, so at most one native-resolution frame is held at a
time. A clip is run through the backbone as soon as its last frame arrived, in batches of
``batch_clips`` (fp16 autocast on CUDA, results left on the GPU until the video ends so that
decoding the next frames overlaps with the computation).

Frames the plan asked for but the decoder never delivered (a container over-reporting its
length) are replaced by the nearest later delivered frame, or by the last one at the end of the
video, with a warning naming the video. A video with no frame at all is an error.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from vqa_pipe.pipeline.fragments import (
    SMALL_FRAMES,
    ClipPlan,
    FragmentError,
    FragmentLayout,
    clip_rng,
    fragment_layout,
)
from vqa_pipe.pipeline.swin_backbone import IMAGENET_MEAN_255, IMAGENET_STD_255, load_swin

log = logging.getLogger(__name__)


@dataclass
class _VideoState:
    key: str
    clip_indices: np.ndarray  # (n_clips, clip_len)
    slots: dict[int, list[tuple[int, int]]]  # frame index -> [(clip, position)]
    order: list[int]  # the frame indices needed, increasing
    buffers: np.ndarray  # (n_samplings, n_clips, clip_len, F, F, 3) uint8
    remaining: np.ndarray  # (n_clips,) slots still empty
    cursor: int = 0
    frame_hw: tuple[int, int] | None = None
    layouts: list[list[FragmentLayout]] = field(default_factory=list)  # [sampling][clip]
    ready: list[tuple[int, int]] = field(default_factory=list)  # (sampling, clip) not yet run
    outputs: dict[int, tuple[Any, Any]] = field(default_factory=dict)  # row -> (pooled, map)
    last_rgb: np.ndarray | None = None
    last_index: int = -1
    substituted: int = 0


class SpatialBranch:
    """FAST-VQA fragments + Video Swin features for the ``spatial`` store group."""

    name = "spatial"

    def __init__(
        self,
        backbone_name: str = "swin3d_t",
        weights: str | Path | None = None,
        random_weights: bool = False,
        *,
        grid: int = 7,
        patch: int = 32,
        clip_len: int = 32,
        frame_interval: int = 2,
        n_clips: int = 4,
        n_samplings: int = 1,
        seed: int = 0,
        store_maps: bool = True,
        device: str = "cpu",
        batch_clips: int = 4,
        clip_sampler: str = "fastvqa",
        small_frames: str = "fastvqa",
    ) -> None:
        """Load the backbone (errors about weights come here, before any video is decoded).

        Args:
            backbone_name: ``swin3d_t`` (torchvision / Video Swin Kinetics-400 weights),
                ``swin3d_t_grpb`` (FAST-VQA-B / DOVER technical-branch weights), or ``auto``
                (chosen from the checkpoint's keys).
            weights: local checkpoint file; ``None`` only with ``random_weights``.
            random_weights: seeded random weights, for smoke tests (recorded in the store).
            grid, patch: ``grid x grid`` mini-patches of ``patch`` pixels (224 x 224 fragments).
            clip_len, frame_interval, n_clips: temporal sampling (:class:`ClipPlan`).
            n_samplings: differently seeded spatial samplings per clip (augmentation copies).
            seed: seed of the clip offsets, the patch positions (and of random weights).
            store_maps: also store ``clip_maps``; ``clip_pooled`` is always stored.
            batch_clips: clips per backbone call.
            clip_sampler: ``fastvqa`` (FAST-VQA's FragmentSampleFrames, test mode) or
                ``centred`` (mmaction's SampleFrames, test mode); see :mod:`.fragments`.
            small_frames: frames under ``grid*patch`` pixels: ``fastvqa`` (FAST-VQA's torch
                upsampling, grid on the original size) or ``resize`` (Pillow upscale of the
                shorter side to ``grid*patch``, grid on the upscaled frame).
        """
        for label, value in (("grid", grid), ("patch", patch), ("n_samplings", n_samplings),
                             ("batch_clips", batch_clips)):
            if int(value) < 1:
                raise FragmentError(f"spatial branch: {label} must be >= 1, got {value}")
        if small_frames not in SMALL_FRAMES:
            raise FragmentError(f"spatial branch: small_frames must be one of "
                                f"{', '.join(SMALL_FRAMES)}, got {small_frames!r}")
        self._plan = ClipPlan(int(clip_len), int(frame_interval), int(n_clips),
                              sampler=str(clip_sampler), seed=int(seed))
        self.small_frames = str(small_frames)
        self.grid, self.patch = int(grid), int(patch)
        self.n_samplings, self.seed = int(n_samplings), int(seed)
        self.store_maps = bool(store_maps)
        self.device = str(device)
        self.batch_clips = int(batch_clips)
        # Videos in flight, whose ready clips batch up together; weak, so that a video dropped
        # by the caller after an error (never finished) frees its buffers.
        self._in_flight: list[weakref.ref] = []
        self.model, self.weights = load_swin(
            backbone_name, weights, random_weights=random_weights, device=self.device, seed=seed
        )
        self.backbone_name = self.model.name
        size = self.fragment_size
        self.map_shape = self.model.config.feature_shape(self._plan.clip_len, size, size)

    # ---------------------------------------------------------------- Branch protocol

    @property
    def random_weights(self) -> bool:
        return self.weights.get("source") == "random"

    @property
    def fragment_size(self) -> int:
        return self.grid * self.patch

    @property
    def n_rows(self) -> int:
        """Rows per video: ``n_clips * n_samplings``."""
        return self._plan.n_clips * self.n_samplings

    @property
    def weights_identity(self) -> str:
        """``random`` or ``<file name> sha256:<hex>``."""
        if self.random_weights:
            return "random"
        return f"{self.weights['file']} sha256:{self.weights['sha256']}"

    def config(self) -> dict:
        arrays = (["clip_maps"] if self.store_maps else []) + ["clip_pooled"]
        return {
            "model": self.backbone_name,
            "architecture": self.model.config.as_dict(),
            "weights": dict(self.weights),
            "weights_identity": self.weights_identity,
            "random_weights": self.random_weights,
            "grid": self.grid,
            "patch": self.patch,
            "fragment_size": self.fragment_size,
            "clip_len": self._plan.clip_len,
            "frame_interval": self._plan.frame_interval,
            "n_clips": self._plan.n_clips,
            "clip_sampler": self._plan.sampler,
            "small_frames": self.small_frames,
            "n_samplings": self.n_samplings,
            "seed": self.seed,
            "store_maps": self.store_maps,
            "arrays": arrays,
            "map_shape": list(self.map_shape),
            "row_order": "sampling-major: row = sampling * n_clips + clip",
            "normalise": {"mean": list(IMAGENET_MEAN_255), "std": list(IMAGENET_STD_255),
                          "scale": "0-255"},
        }

    def bytes_per_video(self) -> dict[str, int]:
        """Stored bytes per video for each array (before compression)."""
        c, t, h, w = self.map_shape
        out = {"clip_pooled": self.n_rows * c * 4}
        if self.store_maps:
            out["clip_maps"] = self.n_rows * c * t * h * w * 2
        return out

    def plan(self) -> ClipPlan:
        return self._plan

    def start_video(self, key: str, info: Any) -> _VideoState:
        n_frames = int(getattr(info, "n_frames", 0) or 0)
        if n_frames < 1:
            raise FragmentError(f"{key}: the video reports {n_frames} frames; nothing to sample")
        idx = self._plan.clip_indices(n_frames)
        slots: dict[int, list[tuple[int, int]]] = {}
        for c, row in enumerate(idx):
            for t, i in enumerate(row):
                slots.setdefault(int(i), []).append((c, t))
        size = self.fragment_size
        buffers = np.zeros(
            (self.n_samplings, self._plan.n_clips, self._plan.clip_len, size, size, 3), np.uint8
        )
        remaining = np.full(self._plan.n_clips, self._plan.clip_len, dtype=np.int64)
        state = _VideoState(key, idx, slots, sorted(slots), buffers, remaining)
        self._in_flight = [r for r in self._in_flight if r() is not None] + [weakref.ref(state)]
        return state

    def add_frame(self, state: _VideoState, frame: Any) -> None:
        rgb = np.asarray(frame.rgb)
        index = int(frame.index)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise FragmentError(f"{state.key}: frame {index} is not HxWx3 uint8 "
                                f"(shape {rgb.shape}, {rgb.dtype})")
        if state.frame_hw is None:
            self._make_layouts(state, rgb.shape[0], rgb.shape[1])
        elif tuple(rgb.shape[:2]) != state.frame_hw:
            raise FragmentError(
                f"{state.key}: frame {index} is {rgb.shape[1]}x{rgb.shape[0]} but earlier "
                f"frames were {state.frame_hw[1]}x{state.frame_hw[0]}"
            )
        if index <= state.last_index:
            return  # already seen (or not increasing): nothing new for the clips
        scaled = self._scaled(state, rgb)
        while state.cursor < len(state.order) and state.order[state.cursor] <= index:
            wanted = state.order[state.cursor]
            if wanted < index:
                state.substituted += 1  # skipped by the decoder: use this later frame
            self._fill(state, wanted, scaled)
            state.cursor += 1
        state.last_rgb, state.last_index = rgb, index
        if sum(len(st.ready) for st in self._waiting()) >= self.batch_clips:
            self._run(full_batches_only=True)

    def finish_video(self, state: _VideoState) -> dict[str, np.ndarray]:
        if state.last_rgb is None:
            raise FragmentError(f"{state.key}: no frames were decoded for the spatial branch")
        if state.cursor < len(state.order):
            scaled = self._scaled(state, state.last_rgb)
            for wanted in state.order[state.cursor:]:
                state.substituted += 1
                self._fill(state, wanted, scaled)
            state.cursor = len(state.order)
        if state.substituted:
            log.warning("%s: %d planned frames were not decoded; repeated neighbouring frames "
                        "in their place", state.key, state.substituted)
        self._run(full_batches_only=False)
        self._in_flight = [r for r in self._in_flight if r() is not None and r() is not state]
        rows = range(self.n_rows)
        out = {"clip_pooled": np.stack([state.outputs[r][0].cpu().numpy() for r in rows])}
        if self.store_maps:
            out["clip_maps"] = np.stack([state.outputs[r][1].cpu().numpy() for r in rows])
        state.outputs.clear()
        return out

    # ---------------------------------------------------------------- inspection

    def layouts_for(self, height: int, width: int) -> list[list[FragmentLayout]]:
        """Patch positions used for ``height x width`` frames: ``[sampling][clip]``."""
        return [
            [fragment_layout(height, width, grid=self.grid, patch=self.patch,
                             rng=clip_rng(self.seed, s, c), small_frames=self.small_frames)
             for c in range(self._plan.n_clips)]
            for s in range(self.n_samplings)
        ]

    def fragments(self, state: Any) -> np.ndarray:
        """The fragment clips built so far, (n_samplings, n_clips, clip_len, F, F, 3) uint8:
        what the backbone sees (before normalisation), e.g. to look at them."""
        view = state.buffers.view()
        view.flags.writeable = False
        return view

    # ---------------------------------------------------------------- internals

    def _make_layouts(self, state: _VideoState, height: int, width: int) -> None:
        try:
            state.layouts = self.layouts_for(height, width)
        except FragmentError as err:
            raise FragmentError(f"{state.key}: {err}") from None
        state.frame_hw = (height, width)

    def _scaled(self, state: _VideoState, rgb: np.ndarray) -> np.ndarray:
        return state.layouts[0][0].scale_frame(rgb)  # the same scaling for every layout

    def _fill(self, state: _VideoState, index: int, scaled: np.ndarray) -> None:
        for c, t in state.slots[index]:
            for s in range(self.n_samplings):
                state.buffers[s, c, t] = state.layouts[s][c].take(scaled)
            state.remaining[c] -= 1
            if state.remaining[c] == 0:
                state.ready.extend((s, c) for s in range(self.n_samplings))

    def _run(self, *, full_batches_only: bool) -> None:
        """Run the clips that are ready, of every video in flight, ``batch_clips`` at a time
        (clips of several videos share a batch); a partial batch only at a video's end."""
        waiting = self._waiting()
        jobs = [(st, s, c) for st in waiting for s, c in st.ready]
        n = len(jobs) // self.batch_clips * self.batch_clips if full_batches_only else len(jobs)
        if n == 0:
            return
        for start in range(0, n, self.batch_clips):
            batch = jobs[start:start + self.batch_clips]
            pooled, maps = self._forward(np.stack([st.buffers[s, c] for st, s, c in batch]))
            for k, (st, s, c) in enumerate(batch):
                st.outputs[s * self._plan.n_clips + c] = (
                    pooled[k], maps[k] if maps is not None else None
                )
        done = {(id(st), s, c) for st, s, c in jobs[:n]}
        for st in waiting:
            st.ready = [(s, c) for s, c in st.ready if (id(st), s, c) not in done]

    def _waiting(self) -> list[_VideoState]:
        return [st for st in (r() for r in self._in_flight) if st is not None]

    def _forward(self, clips: np.ndarray) -> tuple[Any, Any]:
        """(B, T, F, F, 3) uint8 -> pooled (B, C) float32 and maps (B, C, T', H', W') fp16."""
        import torch

        x = torch.from_numpy(clips)
        on_cuda = self.device.startswith("cuda")
        if on_cuda:
            x = x.pin_memory().to(self.device, non_blocking=True)
        mean = torch.tensor(IMAGENET_MEAN_255, device=x.device).view(1, 3, 1, 1, 1)
        std = torch.tensor(IMAGENET_STD_255, device=x.device).view(1, 3, 1, 1, 1)
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16,
                                                    enabled=on_cuda):
            x = (x.permute(0, 4, 1, 2, 3).float() - mean) / std
            feats = self.model(x)
            pooled = feats.float().mean(dim=(2, 3, 4))
            maps = feats.to(torch.float16) if self.store_maps else None
        return pooled, maps
