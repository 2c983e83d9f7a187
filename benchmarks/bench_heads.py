"""Torch regressor speed on a KoNViD-sized cache: seconds per split on CPU.

    python benchmarks/bench_heads.py [--regressors mlp gru fused] [--splits 3]
                                     [--frames 16] [--scores 68] [--epochs 60] [--threads 1]

The cache is random, with the shapes of a KoNViD-1k store: 1,200 videos, T = 16 frames of
2r = 68 CLIP prompt scores (the default 17 antonym pairs), and for ``fused`` Swin-T clip maps
of 4 clips x 768 x 4 x 7 x 7 per video (float16; the real maps have T' = 16). The MOS is a
fixed function of the inputs, so the printed SROCC shows the model learns; speed does not
depend on the values. Each split trains on 768
videos with 192 for epoch selection (the protocol's 80/20 then 80/20) and tests on 240.
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch
from vqa_pipe.pipeline.feature_table import SEQUENCE, SPATIAL_CLIP_MAPS, FeatureTable
from vqa_pipe.pipeline.metrics import srocc
from vqa_pipe.pipeline.regressors import create_regressor
from vqa_pipe.pipeline.splits import random_splits


def konvid_sized_cache(frames: int, scores: int, with_maps: bool) -> FeatureTable:
    rng = np.random.default_rng(0)
    seq = rng.uniform(0, 1, size=(1200, frames, scores)).astype(np.float32)
    w = rng.normal(size=scores)
    quality = (seq @ w).mean(1) + np.sin(seq[:, :, 0].mean(1) * 6)
    inputs = {SEQUENCE: seq}
    if with_maps:
        maps = rng.normal(size=(1200, 4, 768, 4, 7, 7)).astype(np.float16)
        quality = quality + maps[:, :, :8].astype(np.float32).mean(axis=(1, 2, 3, 4, 5)) * 40
        inputs[SPATIAL_CLIP_MAPS] = maps
    mos = 1 + 4 * (quality - quality.min()) / np.ptp(quality)
    return FeatureTable([f"v{i}" for i in range(1200)], mos, "1-5", inputs, dataset="konvid-sized")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regressors", nargs="+", default=["mlp", "gru"])
    parser.add_argument("--splits", type=int, default=3)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--scores", type=int, default=68)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads while fitting (the regressors' default is 1)")
    args = parser.parse_args()
    table = konvid_sized_cache(args.frames, args.scores, "fused" in args.regressors)
    splits = random_splits(table.video_ids, args.splits)
    print(f"## Torch heads, 1,200 videos x {args.frames} frames x {args.scores} scores, "
          f"{args.epochs} epochs, torch {torch.__version__}, {args.threads} thread(s)\n")
    print("| regressor | parameters | s/split (fit) | s/split (predict 240) | median SROCC |")
    print("|---|---|---|---|---|")
    for name in args.regressors:
        fit_s, pred_s, scores = [], [], []
        n_params = 0
        for split in splits:
            model = create_regressor(name, epochs=args.epochs, threads=args.threads)
            start = time.perf_counter()
            info = model.fit(table.subset(split.train), table.subset(split.val))
            fit_s.append(time.perf_counter() - start)
            test = table.subset(split.test["test"])
            start = time.perf_counter()
            pred = model.predict(test)
            pred_s.append(time.perf_counter() - start)
            scores.append(srocc(test.mos, pred))
            n_params = info["n_parameters"]
        print(f"| {name} | {n_params:,} | {np.median(fit_s):.2f} | {np.median(pred_s):.3f} | "
              f"{np.median(scores):.3f} |")
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
