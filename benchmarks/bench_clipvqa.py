"""``clipvqa`` head: training time per split on a KoNViD-sized cache, and bytes per cached view.

    python benchmarks/bench_clipvqa.py [--videos 1200] [--frames 32] [--epochs 40]
                                       [--run-epochs 2] [--splits 1] [--threads 1]
                                       [--token-videos 160] [--token-epochs 1]
                                       [--variants windows tokens] [--disk-videos 8]

Sizes are ViT-B/16's: D = 512, width 768, 196 patches, and a 3x3 window grid.

1. **Bytes per video** of each cached view at ``--frames`` frames: raw (shape x dtype), and
   on disk after writing ``--disk-videos`` random videos through ``FeatureStore`` (random
   values: real features may compress differently).
2. **Windows variant** (keys = window embeddings, 32 x 9 x 512 float16): a protocol split on
   ``--videos`` videos (80/20, 20 % of training for epoch selection: 768 train, 192
   validation, 240 test) with the regressor's defaults (batch 16), run for ``--run-epochs``
   epochs (validation pass included); a split of ``--epochs`` epochs is projected as that
   fit time x epochs / run-epochs (printed as a projection unless the two are equal).
3. **Tokens variant** (keys = patch tokens, 32 x 196 x 768 float16, 9.6 MB per video: 11.6 GB
   for 1,200 videos, more than this 24 GiB shared machine can hold beside the rest): the
   cost of one training step and of one predicted video is measured on ``--token-videos``
   videos and ``--token-epochs`` epochs; the time of a KoNViD-sized split is then *computed*
   from those rates (48 steps x 40 epochs + 40 validation passes of 192 videos + 240 test
   videos) and printed as a projection. With ``--token-videos 1200 --token-epochs 40`` the
   whole split runs instead.

The MOS is a fixed function of the frame embeddings, so the SROCC shows the head learns;
speed does not depend on the values. Prints markdown tables and the machine's load average
before and after (the 2-core machine is shared).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's code, never an installed copy

import numpy as np  # noqa: E402
import torch  # noqa: E402
from vqa_pipe.pipeline.feature_table import CLIP_FRAMES, CLIP_KEYS, LEVEL_TEXT, FeatureTable  # noqa: E402
from vqa_pipe.pipeline.metrics import srocc  # noqa: E402
from vqa_pipe.pipeline.regressors import create_regressor  # noqa: E402
from vqa_pipe.pipeline.splits import random_splits  # noqa: E402

DIM, WIDTH, PATCHES, WINDOWS, LEVELS = 512, 768, 196, 9, 6


def cache(n: int, frames: int, keys: str, seed: int = 0) -> FeatureTable:
    """A random cache of ``n`` videos; ``keys`` is ``windows`` or ``tokens``."""
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, frames, DIM)).astype(np.float32)
    direction = rng.normal(size=DIM).astype(np.float32)
    signal = emb.mean(1) @ direction
    emb += (np.tanh(signal) * 2)[:, None, None] * direction / np.linalg.norm(direction)
    shape = (frames, WINDOWS, DIM) if keys == "windows" else (frames, PATCHES, WIDTH)
    key_arr = np.empty((n,) + shape, dtype=np.float16)
    for i in range(n):  # one video at a time: no float64 copy of a large array
        key_arr[i] = rng.standard_normal(shape, dtype=np.float32)
    text = np.repeat(rng.normal(size=(1, LEVELS, DIM)).astype(np.float32), n, axis=0)
    mos = 1 + 4 * (signal - signal.min()) / np.ptp(signal)
    source = "semantic/window_embeddings" if keys == "windows" else "semantic/frame_tokens"
    return FeatureTable([f"v{i}" for i in range(n)], mos, "1-5",
                        {CLIP_FRAMES: emb, CLIP_KEYS: key_arr, LEVEL_TEXT: text},
                        dataset=f"konvid-sized ({keys})",
                        info={"role_sources": {CLIP_KEYS: source}})


def bytes_per_video(frames: int, disk_videos: int) -> None:
    from vqa_pipe.pipeline.store import FeatureStore

    views = {
        "semantic/frame_embeddings": ((frames, DIM), np.float32),
        "semantic/frame_tokens": ((frames, PATCHES, WIDTH), np.float16),
        "semantic/window_embeddings": ((frames, WINDOWS, DIM), np.float16),
        "semantic/frame_scores (68 prompts, for comparison)": ((frames, 68), np.float32),
    }
    rng = np.random.default_rng(0)
    folder = Path(tempfile.mkdtemp(prefix="bench_clipvqa_"))
    try:
        ids = [f"v{i}" for i in range(disk_videos)]
        store = FeatureStore.create_or_open(folder / "s.zarr", ids, part_size=disk_videos)
        store.ensure_branch("semantic", {"bench": True})
        store.write_part("semantic", 0, {
            v: {name.split("/")[1].split()[0]: rng.standard_normal(shape).astype(dtype)
                for name, (shape, dtype) in views.items()} for v in ids})
        part = folder / "s.zarr" / "parts" / "p000000" / "semantic"
        print(f"## Bytes per video, {frames} frames, ViT-B/16 (D={DIM}, width {WIDTH}, "
              f"{PATCHES} patches, 3x3 windows)\n")
        print("| view | shape per video | dtype | raw bytes | on disk (random values) |")
        print("|---|---|---|---|---|")
        for name, (shape, dtype) in views.items():
            array = name.split("/")[1].split()[0]
            raw = int(np.prod(shape)) * np.dtype(dtype).itemsize
            disk = sum(p.stat().st_size for p in (part / array).rglob("*") if p.is_file())
            print(f"| `{name}` | {shape} | {np.dtype(dtype).name} | {raw:,} | "
                  f"{disk / disk_videos:,.0f} |")
        print(f"| `meta/semantic/level_text_embeddings` (once per store) | ({LEVELS}, {DIM}) "
              f"| float32 | {LEVELS * DIM * 4:,} | - |\n")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run_windows(args) -> None:
    table = cache(args.videos, args.frames, "windows")
    splits = random_splits(table.video_ids, args.splits)
    run = args.run_epochs
    print(f"## Windows variant, {args.videos} videos x {args.frames} frames, keys "
          f"{args.frames}x{WINDOWS}x{DIM} float16, {run} of {args.epochs} epochs run, "
          f"{args.threads} thread(s)\n")
    print(f"| split | train/val/test | parameters trained | steps | fit s ({run} epochs) | "
          f"s per step | predict test s | {args.epochs}-epoch split, min | SROCC svr / exp. |")
    print("|---|---|---|---|---|---|---|---|---|")
    for split in splits:
        train, val = table.subset(split.train), table.subset(split.val)
        test = table.subset(split.test["test"])
        model = create_regressor("clipvqa", epochs=run, threads=args.threads)
        start = time.perf_counter()
        info = model.fit(train, val)
        fit_s = time.perf_counter() - start
        start = time.perf_counter()
        pred = model.predict(test)
        pred_s = time.perf_counter() - start
        model.params["decode"] = "expectation"  # same network, the other decoder
        pred_e = model.predict(test)
        split_min = (fit_s * args.epochs / run + pred_s) / 60
        label = f"{split_min:.1f}" if run == args.epochs else f"{split_min:.0f} (projected)"
        print(f"| {split.name} | {len(train)}/{len(val)}/{len(test)} | "
              f"{info['n_parameters']:,} | {info['steps']} | {fit_s:.1f} | "
              f"{fit_s / info['steps']:.2f} | {pred_s:.2f} | {label} | "
              f"{srocc(test.mos, pred):.3f} / {srocc(test.mos, pred_e):.3f} |")
    print()


def run_tokens(args) -> None:
    n = args.token_videos
    table = cache(n, args.frames, "tokens")
    split = random_splits(table.video_ids, 1)[0]
    train, test = table.subset(split.train), table.subset(split.test["test"])
    del table  # the subsets are copies: keep one set of token arrays
    print(f"## Tokens variant, keys {args.frames}x{PATCHES}x{WIDTH} float16 "
          f"({args.frames * PATCHES * WIDTH * 2 / 1e6:.1f} MB per video), "
          f"{args.threads} thread(s)\n")
    model = create_regressor("clipvqa", epochs=args.token_epochs, threads=args.threads)
    start = time.perf_counter()
    info = model.fit(train)  # no validation part: only training steps are timed
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    model.predict(test)
    per_video = (time.perf_counter() - start) / len(test)
    per_step = fit_s / info["steps"]
    print(f"measured on {len(train)} training videos, {args.token_epochs} epoch(s): "
          f"{info['steps']} steps of 16 videos in {fit_s:.1f} s = **{per_step:.2f} s per step**; "
          f"prediction {per_video:.3f} s per video ({len(test)} videos)\n")
    steps, epochs = 768 // 16, args.epochs
    projected = steps * epochs * per_step + epochs * 192 * per_video + 240 * per_video
    print(f"projection for a KoNViD-sized split (768 train / 192 val / 240 test, {epochs} "
          f"epochs, not run): {steps} x {epochs} steps x {per_step:.2f} s + "
          f"{epochs} x 192 + 240 predictions x {per_video:.3f} s = "
          f"**{projected / 60:.0f} min** ({projected / 3600:.1f} h)\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=1200)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=40, help="epochs of a split")
    parser.add_argument("--run-epochs", type=int, default=2,
                        help="epochs actually run for the windows variant")
    parser.add_argument("--splits", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads while fitting (the regressor's default is 1)")
    parser.add_argument("--token-videos", type=int, default=160)
    parser.add_argument("--token-epochs", type=int, default=1)
    parser.add_argument("--variants", nargs="+", default=["windows", "tokens"],
                        choices=["windows", "tokens"])
    parser.add_argument("--disk-videos", type=int, default=8)
    args = parser.parse_args()
    load_before = os.getloadavg()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}; load average before: "
          f"{' / '.join(f'{x:.1f}' for x in load_before)}\n")
    bytes_per_video(args.frames, args.disk_videos)
    started = time.perf_counter()
    if "windows" in args.variants:
        run_windows(args)
    if "tokens" in args.variants:
        run_tokens(args)
    print(f"total {time.perf_counter() - started:.0f} s; load average after: "
          f"{' / '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
