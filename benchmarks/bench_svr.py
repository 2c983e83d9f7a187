"""SVR search speed with and without kernel reuse, and the reproduction of VIDEVAL's results.

    python benchmarks/bench_svr.py [--repeats 3] [--speed-splits 10] [--videval-splits 100]
                                   [--jobs 2] [--large 28000] [--json out.json]

1. Speed of the *same* search (same grid, folds, draws, libsvm tolerance, same training
   part) with kernel reuse (squared distances once, one kernel per gamma sliced per fold and
   shared by every C; ``kernel='precomputed'``) and without (plain RBF fits, what
   ``RandomizedSearchCV(SVR(), grid, cv=3)`` does), on the training part of a KoNViD-1k split
   of the real VIDEVAL features (958 x 60): the default search (3-fold CV, 10 draws), the
   whole 10 x 10 grid (3-fold CV, 100 points, 300 fits) and the validation-holdout search.
   ``--repeats`` runs of each, alternating, median and range of wall and CPU seconds (CPU
   time is the fairer figure on a shared machine); both must choose the same (C, gamma).
   Then the whole ``--speed-splits``-split protocol (search + refit + test) both ways.
2. VIDEVAL check: median SROCC and PLCC (logistic, VIDEVAL's convention; linear beside it)
   over ``--videval-splits`` splits of VIDEVAL's own split seeds (``videval_splits``) with
   NaN features imputed by training means as RAPIQUE does, on KoNViD-1k, LIVE-VQC and
   YouTube-UGC (all 1,380 videos, and the 1,323 colour videos VIDEVAL's script keeps),
   beside the published numbers.
3. ``--large N``: the whole svr fit (the search on ``max_search`` of them, then the final
   fit) on N synthetic training videos (60 features) on each ``large`` path, with the
   process's peak memory (each in its own process).

Prints markdown tables and the machine load (1-minute load average before and after each
part; figures from a busy machine are not publication figures).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import scipy.io

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
from vqa_pipe.pipeline.feature_table import FLAT, FeatureTable, apply_nan_policy  # noqa: E402
from vqa_pipe.pipeline.regressors import Standardizer  # noqa: E402
from vqa_pipe.pipeline.regressors.svr import svr_cv_search, svr_search  # noqa: E402
from vqa_pipe.pipeline.splits import videval_splits  # noqa: E402
from vqa_pipe.stages.train import run_protocol  # noqa: E402

SHARED = Path(os.environ.get("VQA_PIPE_SHARED", REPO.parent / "shared")) / "data"
# dataset -> (feature/metadata key, MOS column, scale, published median SROCC, PLCC), VIDEVAL
# over 100 splits: https://github.com/vztu/BVQA_Benchmark README.md ("Regression Evaluation")
DATASETS = {
    "KoNViD-1k": ("KONVID_1K", "mos", "1-5", 0.7832, 0.7803),
    "LIVE-VQC": ("LIVE_VQC", "MOS", "0-100", 0.7522, 0.7514),
    "YouTube-UGC": ("YOUTUBE_UGC", "MOSFull", "1-5", 0.7787, 0.7733),
}
# 1-based rows of YOUTUBE_UGC_metadata.csv that VIDEVAL's demo_eval_BVQA_feats_one_dataset.py
# drops as grayscale (color_only=True); a fact about the dataset, listed in that script
YOUTUBE_GRAY_ROWS = (
    3, 6, 10, 22, 23, 46, 51, 52, 68, 74, 77, 99, 103, 122, 136, 141, 158, 173, 368, 426, 467,
    477, 506, 563, 594, 639, 654, 657, 666, 670, 671, 681, 690, 697, 702, 703, 710, 726, 736,
    764, 768, 777, 786, 796, 977, 990, 1012, 1015, 1023, 1091, 1118, 1205, 1282, 1312, 1336,
    1344, 1380,
)


def load() -> str:
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def videval_table(key: str, mos_col: str, scale: str, color_only: bool = False) -> FeatureTable:
    """The real VIDEVAL features in metadata row order; NaN kept for training-mean imputation."""
    x = scipy.io.loadmat(SHARED / "features" / "videval" / f"{key}_VIDEVAL_feats.mat")["feats_mat"]
    with open(SHARED / "labels" / f"{key}_metadata.csv", newline="") as fh:
        mos = np.array([float(r[mos_col]) for r in csv.DictReader(fh)])
    keep = np.ones(len(mos), dtype=bool)
    if color_only:
        keep[np.array(YOUTUBE_GRAY_ROWS) - 1] = False
    table = FeatureTable([f"v{i}" for i in np.flatnonzero(keep)], mos[keep], scale,
                         {FLAT: x[keep].astype(np.float32)}, dataset=key)
    return apply_nan_policy(table, "mean")


def timed_pair(a, b, repeats: int) -> tuple[dict, dict]:
    """Run ``a`` and ``b`` alternately ``repeats`` times each (so a change of machine load
    hits both alike); wall and CPU seconds of each run, and the last results."""
    runs = {"a": {"wall": [], "cpu": []}, "b": {"wall": [], "cpu": []}}
    for _ in range(repeats):
        for key, fn in (("a", a), ("b", b)):
            wall, cpu = time.perf_counter(), time.process_time()
            runs[key]["out"] = fn()
            runs[key]["wall"].append(time.perf_counter() - wall)
            runs[key]["cpu"].append(time.process_time() - cpu)
    return runs["a"], runs["b"]


def spread(values: list[float]) -> str:
    return f"{np.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def speed(args, out: dict) -> None:
    from threadpoolctl import threadpool_limits

    table = videval_table("KONVID_1K", "mos", "1-5")
    split = videval_splits(table.video_ids, 1)[0]
    part = table.subset(list(split.train) + list(split.val))
    scaler = Standardizer.fit_minmax(part.inputs[FLAT])
    x = scaler.transform(part.inputs[FLAT]).astype(np.float64)
    y = part.mos
    fit, val = slice(0, len(split.train)), slice(len(split.train), None)
    searches = {
        "CV, 10 draws (default)": lambda reuse: svr_cv_search(x, y, draws=10, seed=0,
                                                               kernel_reuse=reuse),
        "CV, whole 10x10 grid": lambda reuse: svr_cv_search(x, y, draws=0, kernel_reuse=reuse),
        "holdout, step 2, patience 2": lambda reuse: svr_search(
            x[fit], y[fit], x[val], y[val], kernel_reuse=reuse),
    }
    print(f"## Same search with and without kernel reuse ({len(x)} training videos x "
          f"{x.shape[1]}, KoNViD-1k VIDEVAL features, tol 1e-3, {args.repeats} repeats, one "
          f"BLAS thread)\n\n{load()}\n")
    print("| search | fits | reuse: wall s | reuse: CPU s | no reuse: wall s | "
          "no reuse: CPU s | speed-up (CPU) | same choice |\n|---|---|---|---|---|---|---|---|")
    with threadpool_limits(1, user_api="blas"):
        for name, run in searches.items():
            r, p = timed_pair(lambda run=run: run(True), lambda run=run: run(False),
                              args.repeats)
            same = (r["out"]["C"], r["out"]["gamma"]) == (p["out"]["C"], p["out"]["gamma"])
            out["speed"][name] = {"fits": r["out"]["n_fits"], "reuse": r["wall"],
                                  "reuse_cpu": r["cpu"], "plain": p["wall"],
                                  "plain_cpu": p["cpu"], "same_choice": same}
            print(f"| {name} | {r['out']['n_fits']} | {spread(r['wall'])} | {spread(r['cpu'])} | "
                  f"{spread(p['wall'])} | {spread(p['cpu'])} | "
                  f"{np.median(p['cpu']) / np.median(r['cpu']):.2f}x | {same} |", flush=True)
    if args.speed_splits:
        splits = videval_splits(table.video_ids, args.speed_splits)
        print(f"\n## Whole protocol, {args.speed_splits} splits (search + refit + test), "
              "1 process\n\n| kernel reuse | wall s | CPU s | CPU s/split | median SROCC |\n"
              "|---|---|---|---|---|")
        for reuse in (True, False):
            start, cpu = time.perf_counter(), time.process_time()
            result = run_protocol(table, splits, "svr", {"kernel_reuse": reuse}, jobs=1)
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu
            med = result.summary["test"]["srocc"]["median"]
            out["protocol"][str(reuse)] = {"seconds": wall, "cpu_seconds": cpu,
                                           "median_srocc": med}
            print(f"| {reuse} | {wall:.1f} | {cpu:.1f} | {cpu / args.speed_splits:.2f} | "
                  f"{med:.4f} |", flush=True)
    print(f"\n{load()}")


def videval(args, out: dict) -> None:
    n = args.videval_splits
    print(f"\n## VIDEVAL features, svr defaults (3-fold CV, 10 draws), median over {n} of "
          f"VIDEVAL's splits, {args.jobs} jobs\n\n{load()}\n")
    print("| dataset | videos | SROCC (std) | published | PLCC logistic (std) | published | "
          "PLCC linear | s |\n|---|---|---|---|---|---|---|---|")
    rows = [(name, *spec, False) for name, spec in DATASETS.items()]
    rows.append(("YouTube-UGC colour", *DATASETS["YouTube-UGC"], True))
    for name, key, col, scale, p_srocc, p_plcc, color in rows:
        table = videval_table(key, col, scale, color_only=color)
        start = time.perf_counter()
        result = run_protocol(table, videval_splits(table.video_ids, n), "svr", jobs=args.jobs)
        wall = time.perf_counter() - start
        s = result.summary["test"]
        out["videval"][name] = {
            "videos": len(table), "notes": result.notes, "seconds": wall,
            "srocc": s["srocc"]["median"], "srocc_std": s["srocc"]["std"],
            "plcc_logistic": s["plcc_logistic"]["median"],
            "plcc_logistic_std": s["plcc_logistic"]["std"], "plcc": s["plcc"]["median"],
            "published_srocc": p_srocc, "published_plcc": p_plcc,
        }
        print(f"| {name} | {len(table)} | {s['srocc']['median']:.4f} ({s['srocc']['std']:.4f})"
              f" | {p_srocc:.4f} | {s['plcc_logistic']['median']:.4f} "
              f"({s['plcc_logistic']['std']:.4f}) | {p_plcc:.4f} | {s['plcc']['median']:.4f} | "
              f"{wall:.0f} |", flush=True)
    print(f"\n{load()}")


LARGE_CHILD = """
import resource, sys, time, numpy as np
sys.path.insert(0, {repo!r})
import vqa_pipe
from vqa_pipe.pipeline.feature_table import FLAT, FeatureTable
from vqa_pipe.pipeline.regressors import create_regressor
n = {n}
rng = np.random.default_rng(0)
x = rng.uniform(0, 1, (n + 2000, 60)).astype(np.float32)
y = 3 + np.tanh(3 * (x[:, :5].sum(1) - 2.5)) + 0.5 * np.sin(4 * x[:, 5])
y = y + rng.normal(0, 0.3, n + 2000)
t = FeatureTable([f"v{{i}}" for i in range(n + 2000)], np.clip(y, 1, 5), "1-5", {{FLAT: x}})
m = create_regressor("svr", large={large!r})
start = time.perf_counter()
info = m.fit(t.take(range(n)))
fit_s = time.perf_counter() - start
from scipy.stats import spearmanr
p = m.predict(t.take(range(n, n + 2000)))
print(fit_s, spearmanr(t.mos[n:], p)[0], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
      info["fit_path"].split(":")[0], info["search_videos"], info["C"], info["gamma"], sep="|")
"""


def large(args, out: dict) -> None:
    print(f"\n## svr fit (search on max_search videos + final fit) on {args.large} training "
          f"videos x 60 (synthetic), one process each, one BLAS thread\n\n{load()}\n")
    print("| large | fit s | test SROCC (2,000 held out) | peak RSS MB | searched on | C, gamma |"
          "\n|---|---|---|---|---|---|")
    for path in args.large_paths:
        code = LARGE_CHILD.format(repo=str(REPO), n=args.large, large=path)
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env=dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1"))
        if res.returncode:
            print(f"| {path} | failed: {res.stderr.strip().splitlines()[-1]} | | |")
            continue
        fit_s, rho, rss, ran, searched, c, gamma = res.stdout.strip().splitlines()[-1].split("|")
        out["large"][path] = {"seconds": float(fit_s), "srocc": float(rho),
                              "peak_rss_mb": float(rss), "path": ran, "C": float(c),
                              "gamma": float(gamma)}
        print(f"| {path} ({ran}) | {float(fit_s):.1f} | {float(rho):.4f} | {float(rss):.0f} | "
              f"{searched} | {float(c):g}, {float(gamma):g} |", flush=True)
    print(f"\n{load()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--speed-splits", type=int, default=10, help="0 skips")
    parser.add_argument("--videval-splits", type=int, default=100, help="0 skips")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--large", type=int, default=0, help="training videos; 0 skips")
    parser.add_argument("--large-paths", nargs="+", default=["subsample", "nystroem", "exact"])
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    out: dict = {"machine": f"{platform.processor() or platform.machine()}, "
                            f"{os.cpu_count()} CPUs", "speed": {}, "protocol": {},
                 "videval": {}, "large": {}}
    print(f"machine: {out['machine']}, {load()}\n")
    if not (SHARED / "features" / "videval").is_dir():
        print(f"real VIDEVAL features not found under {SHARED}: speed and VIDEVAL parts skipped")
    else:
        if not args.skip_speed:
            speed(args, out)
        if args.videval_splits:
            videval(args, out)
    if args.large:
        large(args, out)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
