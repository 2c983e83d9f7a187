"""Torch regressor speed on a KoNViD-sized cache: seconds per split on CPU.

    python benchmarks/bench_heads.py [--regressors mlp gru vsfa fused] [--splits 3]
                                     [--frames 16] [--scores 68] [--epochs 60]
                                     [--vsfa-frames 64] [--vsfa-epochs 5] [--threads 1]

The cache is random, with the shapes of a KoNViD-1k store: 1,200 videos, T = 16 frames of
2r = 68 CLIP prompt scores (the default 17 antonym pairs), and for ``fused`` Swin-T clip maps
of 4 clips x 768 x 4 x 7 x 7 per video (float16; the real maps have T' = 16). ``vsfa`` reads
every frame (the variable-length ``frames`` role): 16 to ``--vsfa-frames`` frames per video
(the extractor's default cap is 64); it runs ``--vsfa-epochs`` epochs and the table also gives
the time projected to VSFA's 2000. The MOS is a fixed function of the inputs, so the printed
SROCC shows the model learns; speed does not depend on the values. Each split trains on 768
videos with 192 for epoch selection (the protocol's 80/20 then 80/20), then (``refit``, the
default of mlp/gru/fused) retrains on all 960 for the chosen number of epochs, and tests on
240. Prints a markdown table and the machine load.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
from vqa_pipe.pipeline.feature_table import (  # noqa: E402
    FRAME_COUNTS,
    FRAMES,
    SEQUENCE,
    SPATIAL_CLIP_MAPS,
    FeatureTable,
    pad_frames,
)
from vqa_pipe.pipeline.metrics import srocc  # noqa: E402
from vqa_pipe.pipeline.regressors import create_regressor  # noqa: E402
from vqa_pipe.pipeline.splits import random_splits  # noqa: E402


def konvid_sized_cache(frames: int, scores: int, with_maps: bool,
                       vsfa_frames: int) -> FeatureTable:
    rng = np.random.default_rng(0)
    seq = rng.uniform(0, 1, size=(1200, frames, scores)).astype(np.float32)
    w = rng.normal(size=scores)
    quality = (seq @ w).mean(1) + np.sin(seq[:, :, 0].mean(1) * 6)
    lengths = rng.integers(16, vsfa_frames + 1, 1200)
    # every frame: the resampled sequence repeated, so the same quality holds
    rows = [np.repeat(s, int(np.ceil(n / frames)), axis=0)[:n] for s, n in zip(seq, lengths)]
    inputs = {SEQUENCE: seq, FRAMES: pad_frames(rows), FRAME_COUNTS: lengths.astype(np.int64)}
    if with_maps:
        maps = rng.normal(size=(1200, 4, 768, 4, 7, 7)).astype(np.float16)
        quality = quality + maps[:, :, :8].astype(np.float32).mean(axis=(1, 2, 3, 4, 5)) * 40
        inputs[SPATIAL_CLIP_MAPS] = maps
    mos = 1 + 4 * (quality - quality.min()) / np.ptp(quality)
    return FeatureTable([f"v{i}" for i in range(1200)], mos, "1-5", inputs, dataset="konvid-sized")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regressors", nargs="+", default=["mlp", "gru", "vsfa"])
    parser.add_argument("--splits", type=int, default=3)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--scores", type=int, default=68)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--vsfa-frames", type=int, default=64)
    parser.add_argument("--vsfa-epochs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads while fitting (the regressors' default is 1)")
    args = parser.parse_args()
    table = konvid_sized_cache(args.frames, args.scores, "fused" in args.regressors,
                               args.vsfa_frames)
    splits = random_splits(table.video_ids, args.splits)
    print(f"## Torch heads, 1,200 videos x {args.frames} frames x {args.scores} scores "
          f"(vsfa: 16-{args.vsfa_frames} frames), torch {torch.__version__}, "
          f"{args.threads} thread(s)\n")
    print("load average {:.2f} {:.2f} {:.2f}\n".format(*os.getloadavg()))
    print("| regressor | epochs | refit | parameters | s/split (fit) | s/epoch | "
          "s/split (predict 240) | median SROCC |\n|---|---|---|---|---|---|---|---|")
    for name in args.regressors:
        fit_s, pred_s, scores, epochs_run = [], [], [], []
        n_params, refit = 0, False
        epochs = args.vsfa_epochs if name == "vsfa" else args.epochs
        for split in splits:
            model = create_regressor(name, epochs=epochs, threads=args.threads)
            start = time.perf_counter()
            info = model.fit(table.subset(split.train), table.subset(split.val))
            fit_s.append(time.perf_counter() - start)
            epochs_run.append(info["epochs_run"] + info.get("refit_epochs", 0))
            test = table.subset(split.test["test"])
            start = time.perf_counter()
            pred = model.predict(test)
            pred_s.append(time.perf_counter() - start)
            scores.append(srocc(test.mos, pred))
            n_params, refit = info["n_parameters"], info["refit_on"] == "train+val"
        per_epoch = float(np.median(np.array(fit_s) / np.array(epochs_run)))
        extra = f" (2000 epochs: ~{per_epoch * 2000 / 60:.0f} min)" if name == "vsfa" else ""
        print(f"| {name} | {epochs} | {refit} | {n_params:,} | {np.median(fit_s):.2f} | "
              f"{per_epoch:.3f}{extra} | {np.median(pred_s):.3f} | {np.median(scores):.3f} |",
              flush=True)
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
          "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


if __name__ == "__main__":
    main()
