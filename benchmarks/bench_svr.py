"""SVR protocol speed, and the reproduction of VIDEVAL's published results.

    python benchmarks/bench_svr.py [--splits 10] [--jobs 1 2] [--videval-splits 100]
                                   [--naive] [--json out.json]

1. Speed: the full N-split SVR protocol (80/20 splits, C and gamma searched on a validation
   part of each training part, refit on train+val, test) on KoNViD-sized data: the real
   VIDEVAL features of KoNViD-1k (1,200 x 60) when ``../shared/data`` is there, else random
   features of that size. Wall time per ``--jobs`` value.
2. ``--naive``: the same search done the naive way (scikit-learn ``GridSearchCV``, VIDEVAL's
   10 x 10 grid, 5-fold CV) on one split, times the number of splits.
3. VIDEVAL check: median SROCC/PLCC over ``--videval-splits`` splits (the paper's protocol
   uses 100) on KoNViD-1k, LIVE-VQC and YouTube-UGC, beside the published numbers.
Prints markdown tables.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import scipy.io
from vqa_pipe.pipeline.feature_table import FLAT, FeatureTable, apply_nan_policy
from vqa_pipe.pipeline.splits import random_splits
from vqa_pipe.stages.train import run_protocol

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VQA_PIPE_SHARED", REPO.parent / "shared")) / "data"
# dataset -> (metadata, MOS column, scale); published median SROCC / PLCC of VIDEVAL over
# 100 splits: https://github.com/vztu/BVQA_Benchmark README.md ("Regression Evaluation Results")
DATASETS = {
    "KoNViD-1k": ("KONVID_1K", "mos", "1-5", 0.7832, 0.7803),
    "LIVE-VQC": ("LIVE_VQC", "MOS", "0-100", 0.7522, 0.7514),
    "YouTube-UGC": ("YOUTUBE_UGC", "MOSFull", "1-5", 0.7787, 0.7733),
}


def videval_table(key: str, mos_col: str, scale: str) -> FeatureTable:
    x = scipy.io.loadmat(SHARED / "features" / "videval" / f"{key}_VIDEVAL_feats.mat")["feats_mat"]
    with open(SHARED / "labels" / f"{key}_metadata.csv", newline="") as fh:
        mos = np.array([float(r[mos_col]) for r in csv.DictReader(fh)])
    table = FeatureTable([f"v{i}" for i in range(len(mos))], mos, scale,
                         {FLAT: x.astype(np.float32)}, dataset=key)
    return apply_nan_policy(table, "drop")


def konvid_sized() -> tuple[FeatureTable, str]:
    if (SHARED / "features" / "videval").is_dir():
        return videval_table("KONVID_1K", "mos", "1-5"), "real VIDEVAL features of KoNViD-1k"
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1200, 60)).astype(np.float32)
    mos = 3 + np.tanh(x[:, :5].sum(1) / 3) + rng.normal(0, 0.3, 1200)
    table = FeatureTable([f"v{i}" for i in range(1200)], np.clip(mos, 1, 5), "1-5", {FLAT: x})
    return table, "random features, 1,200 x 60 (../shared/data not found)"


def naive_one_split(table: FeatureTable) -> float:
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVR

    split = random_splits(table.video_ids, 1)[0]
    train = table.subset(list(split.train) + list(split.val))
    grid = {"svr__C": np.logspace(1, 10, 10, base=2), "svr__gamma": np.logspace(-8, 1, 10, base=2)}
    start = time.perf_counter()
    GridSearchCV(make_pipeline(StandardScaler(), SVR()), grid, cv=5).fit(
        train.inputs[FLAT], train.mos)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", type=int, default=10)
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--videval-splits", type=int, default=100,
                        help="0 skips the VIDEVAL check")
    parser.add_argument("--naive", action="store_true", help="also time GridSearchCV")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    out: dict = {"machine": f"{platform.processor() or platform.machine()}, "
                            f"{os.cpu_count()} CPUs", "speed": {}, "videval": {}}

    table, what = konvid_sized()
    splits = random_splits(table.video_ids, args.splits)
    print(f"## SVR protocol, {args.splits} splits, {what} ({len(table)} videos)\n")
    print("| jobs | wall s | s/split | median SROCC |\n|---|---|---|---|")
    for jobs in args.jobs:
        start = time.perf_counter()
        result = run_protocol(table, splits, "svr", jobs=jobs)
        wall = time.perf_counter() - start
        med = result.summary["test"]["srocc"]["median"]
        fits = np.mean([i["n_fits"] for i in result.fit_info.values()])
        out["speed"][jobs] = {"seconds": wall, "median_srocc": med, "fits_per_split": fits}
        print(f"| {jobs} | {wall:.1f} | {wall / args.splits:.2f} | {med:.4f} |")
    if args.naive:
        one = naive_one_split(table)
        out["naive_seconds_per_split"] = one
        print(f"\nnaive GridSearchCV (10 x 10 grid, 5-fold): {one:.1f} s per split, "
              f"~{one * args.splits / 60:.1f} min for {args.splits} splits")

    if args.videval_splits and (SHARED / "features" / "videval").is_dir():
        n = args.videval_splits
        print(f"\n## VIDEVAL features + our SVR protocol, median over {n} splits\n")
        print("| dataset | videos | SROCC (ours) | SROCC (published) | PLCC (ours) | "
              "PLCC (published) | s |\n|---|---|---|---|---|---|---|")
        for name, (key, col, scale, p_srocc, p_plcc) in DATASETS.items():
            table = videval_table(key, col, scale)
            start = time.perf_counter()
            result = run_protocol(table, random_splits(table.video_ids, n), "svr",
                                  jobs=max(args.jobs))
            wall = time.perf_counter() - start
            s = result.summary["test"]
            out["videval"][name] = {
                "videos": len(table), "notes": table.notes, "srocc": s["srocc"]["median"],
                "srocc_std": s["srocc"]["std"], "plcc": s["plcc"]["median"],
                "published_srocc": p_srocc, "published_plcc": p_plcc, "seconds": wall,
            }
            print(f"| {name} | {len(table)} | {s['srocc']['median']:.4f} "
                  f"({s['srocc']['std']:.4f}) | {p_srocc:.4f} | {s['plcc']['median']:.4f} | "
                  f"{p_plcc:.4f} | {wall:.0f} |")
    print(f"\nmachine: {out['machine']}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
