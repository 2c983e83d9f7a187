"""Helpers shared by test modules: stores, manifests and tables built from the real sample
videos, real VIDEVAL features, or synthetic data. (Fixtures live in conftest.py.)"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from vqa_pipe.pipeline.feature_import import import_features
from vqa_pipe.pipeline.feature_table import (
    CLIP_FRAMES,
    CLIP_KEYS,
    FLAT,
    FRAME_COUNTS,
    FRAMES,
    LEVEL_TEXT,
    SEQUENCE,
    SPATIAL_CLIP_MAPS,
    SPATIAL_MAPS,
    FeatureTable,
)

FAST_TORCH = {"epochs": 25, "batch_size": 16}
FAST_VSFA = {"epochs": 25, "batch_size": 16, "lr": 1e-3}  # VSFA's 1e-5 needs 2000 epochs
FAST_CLIPVQA = {"epochs": 12, "lr": 2e-3, "warmup_epochs": 1, "batch_size": 16}

N_FRAMES, N_SCORES = 8, 6


# --------------------------------------------------------------------------- sample store
def _frame_stats(rgb: np.ndarray) -> np.ndarray:
    """Six statistics of a frame in [0, 1]: brightness, contrast, colour means, sharpness."""
    x = rgb.astype(np.float32) / 255.0
    luma = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    grad = np.abs(np.diff(luma, axis=0)).mean() + np.abs(np.diff(luma, axis=1)).mean()
    return np.array([luma.mean(), luma.std() * 2, *x.reshape(-1, 3).mean(0), min(1.0, grad * 8)],
                    dtype=np.float32)


def _pooled_frame(rgb: np.ndarray, size: int = 4) -> np.ndarray:
    """(3, size, size) block means of a frame."""
    h, w, _ = rgb.shape
    rows = np.array_split(np.arange(h), size)
    cols = np.array_split(np.arange(w), size)
    out = np.empty((3, size, size), dtype=np.float32)
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            out[:, i, j] = rgb[r][:, c].reshape(-1, 3).mean(0) / 255.0
    return out


_CACHE: dict[str, dict] = {}


def sample_features(sample_videos: dict) -> dict[str, dict[str, np.ndarray]]:
    """Per-video arrays of the semantic and spatial branches, from real decoded frames."""
    if "features" in _CACHE:
        return _CACHE["features"]
    from vqa_pipe.pipeline.decode import iter_frames, probe

    out = {}
    for name, row in sorted(sample_videos.items()):
        info = probe(row["path"])
        last = min(info.n_frames, 48) - 1
        idx = np.linspace(0, last, N_FRAMES).round().astype(int).tolist()
        frames = list(iter_frames(row["path"], idx))
        stats = np.stack([_frame_stats(f.rgb) for f in frames])
        pooled = np.stack([_pooled_frame(f.rgb) for f in frames])  # (F, 3, 4, 4)
        # two clips of four frames, T' = 2 (pairs averaged): (2, C=3, 2, 4, 4)
        clips = pooled.reshape(2, 2, 2, 3, 4, 4).mean(axis=2).transpose(0, 2, 1, 3, 4)
        out[Path(name).stem] = {
            "semantic": {
                "frame_scores": stats,
                "frame_times": np.array([f.time_s for f in frames], dtype=np.float32),
            },
            "spatial": {
                "clip_maps": clips.astype(np.float16),
                "clip_pooled": clips.mean(axis=(2, 3, 4)).astype(np.float32),
            },
        }
    _CACHE["features"] = out
    return out


def write_sample_manifest(sample_videos: dict, path: Path) -> Path:
    from vqa_pipe.pipeline.manifest import ManifestRow, write_manifest

    rows = []
    for name, row in sorted(sample_videos.items()):
        mos = float(row["mos"]) if row["mos"] else None
        rows.append(ManifestRow(video_id=Path(name).stem, path=row["path"], mos=mos,
                                mos_scale=row["mos_scale"] or None))
    return write_manifest(rows, path)


def build_sample_store(sample_videos: dict, folder: Path, *, branches=("semantic", "spatial"),
                       fail: dict[str, str] | None = None) -> tuple[Path, Path]:
    """A feature store and manifest of the ten sample videos in ``folder``."""
    from vqa_pipe.pipeline.store import FeatureStore

    features = sample_features(sample_videos)
    manifest = write_sample_manifest(sample_videos, folder / "samples.csv")
    ids = list(features)
    store = FeatureStore.create_or_open(folder / "samples.zarr", ids, part_size=4)
    for branch in branches:
        store.ensure_branch(branch, {"test": "image statistics of real frames",
                                     "random_weights": False})
        for part in range(store.n_parts):
            results = {}
            for vid in store.part_ids(part):
                reason = (fail or {}).get(vid)
                results[vid] = reason if reason else features[vid][branch]
            store.write_part(branch, part, results)
    return folder / "samples.zarr", manifest



# --------------------------------------------------------------------------- synthetic data
def synthetic_table(n: int = 240, seed: int = 0) -> FeatureTable:
    """A table whose MOS is a known non-linear function of every role's inputs."""
    rng = np.random.default_rng(seed)
    seq = rng.normal(size=(n, 8, 6)).astype(np.float32)
    clip_maps = rng.normal(size=(n, 2, 4, 2, 3, 3)).astype(np.float16)  # 2 clips
    maps = clip_maps.astype(np.float32).mean(axis=1)
    w = np.array([1.0, -0.5, 0.8, 0.0, 0.3, -1.0])
    quality = (seq @ w).mean(1) + 0.6 * np.tanh(seq[:, :, 0].mean(1) * 2)
    quality = quality + 0.8 * maps[:, 0].mean(axis=(1, 2, 3))
    mos = 1 + 4 * (quality - quality.min()) / np.ptp(quality)
    flat = np.concatenate([seq.mean(1), seq.std(1), maps.mean(axis=(2, 3, 4))], axis=1)
    frames = np.concatenate([seq, np.zeros((n, 3, 6), np.float32)], axis=1)  # padded to 11
    return FeatureTable([f"v{i:03d}" for i in range(n)], mos, "1-5",
                        {FLAT: flat, SEQUENCE: seq, SPATIAL_MAPS: maps,
                         SPATIAL_CLIP_MAPS: clip_maps, FRAMES: frames,
                         FRAME_COUNTS: np.full(n, 8, dtype=np.int64)}, dataset="synthetic")



# --------------------------------------------------------------------------- VIDEVAL
# dataset -> (metadata file, id column, MOS column, scale)
VIDEVAL = {
    "KONVID_1K": ("KONVID_1K_metadata.csv", "flickr_id", "mos", "1-5"),
    "LIVE_VQC": ("LIVE_VQC_metadata.csv", "File", "MOS", "0-100"),
    "YOUTUBE_UGC": ("YOUTUBE_UGC_metadata.csv", "vid", "MOSFull", "1-5"),
}


def stem(name: str) -> str:
    return name.rsplit(".", 1)[0]


def videval_manifest(shared_data: Path, dataset: str, path: Path, ids=None) -> Path:
    """A manifest of a VIDEVAL dataset from its metadata (ids as the manifest builder makes
    them: KoNViD flickr id, LIVE-VQC file stem, YouTube-UGC ``vid``)."""
    from vqa_pipe.pipeline.manifest import ManifestRow, write_manifest

    meta, id_col, mos_col, scale = VIDEVAL[dataset]
    with open(shared_data / "labels" / meta, newline="") as fh:
        records = list(csv.DictReader(fh))
    rows = []
    for rec in records:
        vid = stem(rec[id_col]) if dataset == "LIVE_VQC" else rec[id_col]
        if ids is not None and vid not in ids:
            continue
        rows.append(ManifestRow(video_id=vid, path=Path(f"videos/{vid}.mp4"),
                                mos=float(rec[mos_col]), mos_scale=scale))
    return write_manifest(rows, path)


def import_videval(shared_data: Path, dataset: str, folder: Path, **kwargs):
    """Manifest + store with the real VIDEVAL features of ``dataset`` in ``folder``."""
    meta, id_col, _, _ = VIDEVAL[dataset]
    manifest = videval_manifest(shared_data, dataset, folder / f"{dataset}.csv",
                                kwargs.pop("ids", None))
    report = import_features(
        shared_data / "features" / "videval" / f"{dataset}_VIDEVAL_feats.mat",
        manifest, folder / f"{dataset}.zarr", name="videval",
        order_file=shared_data / "labels" / meta, order_column=id_col, part_size=128, **kwargs,
    )
    return folder / f"{dataset}.zarr", manifest, report



# --------------------------------------------------------------------------- CLIPVQA
def toy_table(n: int = 96, n_frames: int = 8, dim: int = 64, n_keys: int = 4, width: int = 32,
              seed: int = 0, scale: str = "1-5") -> FeatureTable:
    """Two groups of videos (low and high MOS) whose frame embeddings differ along one
    direction: a separable problem the head must learn."""
    rng = np.random.default_rng(seed)
    high = rng.random(n) < 0.5
    q = np.where(high, 0.8, 0.2) + rng.normal(0, 0.03, n)
    direction = rng.normal(size=dim)
    direction /= np.linalg.norm(direction)
    frames = rng.normal(size=(n, n_frames, dim)) + 6 * (q[:, None, None] - 0.5) * direction
    keys = rng.normal(size=(n, n_frames, n_keys, width)).astype(np.float16)
    text = np.repeat(rng.normal(size=(1, 6, dim)), n, axis=0).astype(np.float32)
    low, top = (1.0, 5.0) if scale == "1-5" else (0.0, 100.0)
    return FeatureTable(
        [f"v{i:03d}" for i in range(n)], low + (top - low) * np.clip(q, 0, 1), scale,
        {CLIP_FRAMES: frames.astype(np.float32), CLIP_KEYS: keys, LEVEL_TEXT: text},
        dataset="toy", info={"role_sources": {CLIP_KEYS: "semantic/frame_tokens"}},
    )


def fixture_module(path: Path, name: str):
    """A fixture folder's Python file (its seeded weight rules) loaded as a module; these files
    import only the standard library and numpy at the top (upstream code only in ``main()``)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
