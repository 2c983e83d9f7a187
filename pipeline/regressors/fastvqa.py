"""``fastvqa``: FAST-VQA's own quality head on cached clip maps; nothing is trained.

With a store extracted by a frozen FAST-VQA backbone (``--swin-weights FAST_VQA_B_1_4.pth``)
and this regressor given the same checkpoint, the predictions are FAST-VQA's own: the head
(:class:`~vqa_pipe.pipeline.vqa_head.VQAHead`, weights ``vqa_head.*``, or DOVER's
``technical_head.*``) scores every position of every clip map (role ``spatial_clip_maps``)
and the video's score is the mean over positions, then over clips, as FAST-VQA's
``new_test.py`` computes it. The maps are cached in float16, so scores differ from an
all-float32 FAST-VQA run by float16 rounding (measured in ``docs/notes/fastvqa.md``).

``fit`` trains nothing. It reads the head from the checkpoint, checks that the training
store's spatial features come from that very checkpoint (sha256; ``check_backbone=false``
skips this), notes where the store's sampling departs from FAST-VQA-B's test protocol, scores
the training part, and records all of it in ``fit_info``. Predictions are the raw FAST-VQA
scores (``calibrate="none"``: a linear map of them lands on each video's MOS scale, so SROCC,
KROCC and PLCC are FAST-VQA's own), or, with ``calibrate="linear"``, a least-squares line from
score to the training part's MOS (the only thing fitted; it changes RMSE only).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from vqa_pipe.pipeline.feature_table import SPATIAL_CLIP_MAPS, FeatureTable
from vqa_pipe.pipeline.regressors import Param, Regressor, RegressorError, register_regressor

log = logging.getLogger(__name__)

CALIBRATIONS = ("none", "linear")
# FAST-VQA-B's test-time sampling (options/fast/fast-b.yml, val-* sets) in spatial-branch terms.
FASTVQA_PROTOCOL: dict[str, Any] = {
    "model": "swin3d_t_grpb", "grid": 7, "patch": 32, "clip_len": 32, "frame_interval": 2,
    "n_clips": 4, "clip_sampler": "fastvqa", "small_frames": "fastvqa", "n_samplings": 1,
}


def protocol_departures(spatial_config: Mapping[str, Any]) -> list[str]:
    """How a store's spatial-branch settings differ from FAST-VQA-B's test protocol."""
    out = []
    for key, want in FASTVQA_PROTOCOL.items():
        have = spatial_config.get(key, "centred" if key == "clip_sampler" else
                                  "resize" if key == "small_frames" else None)
        if have != want:
            out.append(f"{key}={have} (FAST-VQA-B: {want})")
    return out


@register_regressor("fastvqa")
class FastVQARegressor(Regressor):
    """FAST-VQA's VQAHead from a checkpoint over ``spatial_clip_maps``; no training."""

    roles = (SPATIAL_CLIP_MAPS,)
    params_spec = (
        Param("calibrate", "choice", "none", "none: FAST-VQA's raw scores; linear: a line to "
              "the training MOS (changes RMSE only)", choices=CALIBRATIONS),
        Param("check_backbone", "bool", True, "refuse a store whose spatial weights are not "
              "the checkpoint's"),
        Param("batch_size", "int", 16, "videos per head call", low=1),
        Param("threads", "int", 1, "torch CPU threads (0: leave torch's setting)", low=0),
    )
    # a checkpoint path: FAST-VQA (vqa_head.*) or DOVER (technical_head.*), checked below
    defaults: dict[str, Any] = {"checkpoint": None}

    def _check_params(self) -> None:
        p = self.params
        if not p["checkpoint"] or not isinstance(p["checkpoint"], (str, Path)):
            raise RegressorError(
                f"{self.who} needs the FAST-VQA checkpoint: --param checkpoint=FILE (e.g. "
                "FAST_VQA_B_1_4.pth, or DOVER.pth for its technical head), the file the "
                "store's spatial branch was extracted with"
            )

    # ------------------------------------------------------------------ store checks
    def _store_check(self, table: FeatureTable) -> dict[str, Any]:
        """Compare the table's store with the head's checkpoint; raise on a foreign backbone."""
        from vqa_pipe.pipeline.store import FeatureStore, StoreError

        store_path = table.info.get("store")
        if not store_path:
            return {"store": None, "note": "no store recorded: backbone identity not checked"}
        try:
            config = FeatureStore.open(store_path).branch_config("spatial")
        except StoreError as err:
            raise RegressorError(f"{self.who}: {err}") from None
        weights = dict(config.get("weights", {}))
        head_sha = self._head_info.get("sha256")
        same = weights.get("source") == "file" and weights.get("sha256") == head_sha
        if not same and bool(self.params["check_backbone"]):
            used = ("random weights" if config.get("random_weights") else
                    f"{weights.get('file')} (sha256 {weights.get('sha256')})")
            raise RegressorError(
                f"{self.who}: store {store_path} has spatial features from {used}, not from "
                f"the head's checkpoint {self._head_info.get('file')} (sha256 {head_sha}). "
                "FAST-VQA's head only means something on its own backbone's features: "
                f"re-extract with --swin-weights {self.params['checkpoint']}, or pass "
                "--param check_backbone=false if that file holds the same backbone weights"
            )
        departures = protocol_departures(config)
        if departures:
            log.warning("%s: store %s departs from FAST-VQA-B's test sampling: %s", self.who,
                        store_path, "; ".join(departures))
        return {"store": str(store_path), "backbone_matches_checkpoint": same,
                "backbone_weights": weights.get("file"), "protocol_departures": departures}

    def fit(self, train: FeatureTable, val: FeatureTable | None = None) -> dict[str, Any]:
        self._load_head()
        check = self._store_check(train)
        info = super().fit(train, val)
        info["store_check"] = check
        return info

    def predict_unit(self, table: FeatureTable) -> np.ndarray:
        if self._fitted:
            self._store_check(table)
        return super().predict_unit(table)

    # ------------------------------------------------------------------ the head
    def _load_head(self) -> None:
        from vqa_pipe.pipeline.vqa_head import build_head, read_head_checkpoint

        checkpoint = read_head_checkpoint(self.params["checkpoint"])
        self._head = build_head(checkpoint, dropout=0.5).eval()
        self._head_info = checkpoint.summary()

    def _scores(self, maps: np.ndarray) -> np.ndarray:
        import torch
        from vqa_pipe.pipeline.regressors._torch_training import torch_threads

        channels = self._head.in_channels
        if maps.ndim != 6 or maps.shape[2] != channels:
            raise RegressorError(
                f"{self.who}: clip maps of shape {tuple(maps.shape[1:])} do not fit the head "
                f"(expected (clips, {channels}, T', H', W'))"
            )
        out = []
        batch = int(self.params["batch_size"])
        with torch_threads(int(self.params["threads"])), torch.no_grad():
            for start in range(0, len(maps), batch):
                x = torch.from_numpy(np.ascontiguousarray(maps[start:start + batch]))
                out.append(self._head.score_clips(x.float()).double().numpy())
        return np.concatenate(out) if out else np.zeros(0)

    def _fit(self, inputs, y_unit, val_inputs, y_val_unit) -> dict[str, Any]:
        from scipy import stats

        scores = self._scores(inputs[SPATIAL_CLIP_MAPS])
        if self.params["calibrate"] == "linear" and np.ptp(scores) > 0:
            slope, intercept = np.polyfit(scores, y_unit, 1)
        else:
            slope, intercept = 1.0, 0.0
        self._calibration = np.array([slope, intercept], dtype=np.float64)
        info: dict[str, Any] = {
            "trained": "nothing: FAST-VQA's own head scores the cached clip maps",
            "head": self._head_info,
            "pooling": "mean over positions, then over clips (FAST-VQA new_test.py)",
            "calibrate": self.params["calibrate"],
            "calibration": [float(slope), float(intercept)],
            "train_scores": {"mean": float(scores.mean()), "std": float(scores.std())},
        }
        if len(scores) >= 3 and np.ptp(scores) > 0 and np.ptp(y_unit) > 0:
            info["train_srocc"] = float(stats.spearmanr(scores, y_unit)[0])
        return info

    def _predict_unit(self, inputs) -> np.ndarray:
        slope, intercept = self._calibration
        return slope * self._scores(inputs[SPATIAL_CLIP_MAPS]) + intercept

    def _state(self) -> dict[str, np.ndarray]:
        state = {f"head.{k}": v.detach().cpu().numpy()
                 for k, v in self._head.state_dict().items()}
        state["calibration"] = self._calibration
        return state

    def _set_state(self, tensors: Mapping[str, np.ndarray]) -> None:
        import torch
        from vqa_pipe.pipeline.vqa_head import build_head, head_from_state

        head = {k[len("head."):]: torch.from_numpy(np.array(v)) for k, v in tensors.items()
                if k.startswith("head.")}
        checkpoint = head_from_state(head, f"saved '{self.name}' model", fmt="bare")
        self._head = build_head(checkpoint).eval()
        self._head_info = dict(self.fit_info.get("head", {}))
        self._calibration = np.asarray(tensors["calibration"], dtype=np.float64)
