"""Benchmark ``vqa-pipe score`` against ``vqa-pipe extract`` on the same videos.

Scoring is extraction plus a regressor and its explanations, so the target is: score within
1.1x of extract. Both sides run the stage functions the commands run, in this process, with
the same model, batch size, torch threads and frame sampling, each building its models itself
(as the commands do), into a fresh store every time:

- ``extract``: :func:`vqa_pipe.stages.extract.extract` of a manifest of the videos;
- ``score``: :func:`vqa_pipe.stages.score.run_score` of the same videos with a model bundle
  (ridge, exported from a small run on these videos' features; that run is the warm-up).

The two alternate in every repeat (extract first in odd repeats, score first in even ones) so
that drifting machine load does not favour one. Prints each repeat, the median and spread
(min-max) of both, the ratio of medians, the median of per-repeat ratios and the machine load
before and after. Random weights cost the same time as real ones.

    python benchmarks/bench_score.py --videos ../shared/data/videos --model ViT-B-32 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's vqa_pipe


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} on {os.cpu_count()} cores"


def _manifest(videos: list[Path], out: Path, with_mos: bool) -> Path:
    import numpy as np
    from vqa_pipe.pipeline.manifest import ManifestRow, write_manifest

    rng = np.random.default_rng(0)
    rows = [ManifestRow(v.stem, v.resolve(), float(rng.uniform(1, 5)) if with_mos else None,
                        "1-5" if with_mos else None) for v in videos]
    return write_manifest(rows, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=Path,
                        default=Path(__file__).resolve().parents[1].parent / "shared/data/videos")
    parser.add_argument("--model", default="ViT-B-32", help="CLIP model (random weights)")
    parser.add_argument("--fps", type=float, default=2.0)
    parser.add_argument("--max-frames", type=int, default=64)
    parser.add_argument("--batch", type=int, default=288, help="windows per CLIP batch")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--limit", type=int, default=0,
                        help="time the first N videos only (0: all; training uses all)")
    args = parser.parse_args()

    import torch
    from vqa_pipe.stages.export import run_export
    from vqa_pipe.stages.extract import ExtractOptions, extract
    from vqa_pipe.stages.score import ScoreOptions, run_score
    from vqa_pipe.stages.train import DatasetRef, TrainOptions, run_train

    torch.set_num_threads(args.threads)
    every = sorted(p for p in args.videos.iterdir() if p.suffix == ".mp4")
    videos = every[: args.limit] if args.limit else every
    quiet = lambda msg: None  # noqa: E731
    branch = {"clip_model": args.model, "fps": args.fps, "max_frames": args.max_frames,
              "batch_windows": args.batch}
    run = ExtractOptions(random_weights=True, device=args.device, progress=False)
    print(f"{len(videos)} videos, CLIP {args.model} (random weights), {args.fps:g} frames/s, "
          f"at most {args.max_frames}, batch {args.batch}, {args.threads} torch threads, "
          f"device {args.device}")
    print(f"before: {_load()}")
    work = Path(tempfile.mkdtemp(prefix="vqa-bench-score-"))
    try:
        # warm-up, and the model to score with: a ridge run on the features of every video of
        # the folder (seeded made-up MOS: the model's quality does not change its speed)
        labelled = _manifest(every, work / "train.csv", with_mos=True)
        t = time.perf_counter()
        extract(labelled, work / "train.zarr", run, branch, log=quiet)
        warm = time.perf_counter() - t
        run_dir = work / "runs" / "bench" / "ridge"
        run_train(DatasetRef(work / "train.zarr", labelled, "bench"), run_dir,
                  TrainOptions(regressor="ridge", params={"alpha": 1.0}, n_splits=2,
                               test_ratio=0.5, val_ratio=0.0))
        bundle = run_export(run_dir, work / "model", log=quiet)
        plain = _manifest(videos, work / "videos.csv", with_mos=False)
        print(f"warm-up extraction {warm:.1f} s; bundle {bundle.name} ({bundle.regressor})")

        def time_extract(k: int) -> float:
            t0 = time.perf_counter()
            summary = extract(plain, work / f"e{k}.zarr", run, branch, log=quiet)
            assert not summary.failed, summary.failed
            return time.perf_counter() - t0

        def time_score(k: int) -> float:
            t0 = time.perf_counter()
            result = run_score(bundle.path, [str(v) for v in videos],
                               ScoreOptions(out=str(work / f"s{k}"), batch_windows=args.batch),
                               run, log=quiet)
            assert not result.failed, [r.error for r in result.failed]
            return time.perf_counter() - t0

        ext, sco = [], []
        for k in range(args.repeats):
            if k % 2 == 0:
                ext.append(time_extract(k))
                sco.append(time_score(k))
            else:
                sco.append(time_score(k))
                ext.append(time_extract(k))
            print(f"repeat {k + 1}: extract {ext[-1]:.2f} s, score {sco[-1]:.2f} s, "
                  f"ratio {sco[-1] / ext[-1]:.3f}  ({_load()})")
        ratios = [s / e for s, e in zip(sco, ext)]
        result = {
            "videos": len(videos),
            "extract_s": {"median": statistics.median(ext), "min": min(ext), "max": max(ext)},
            "score_s": {"median": statistics.median(sco), "min": min(sco), "max": max(sco)},
            "ratio_of_medians": statistics.median(sco) / statistics.median(ext),
            "median_ratio": statistics.median(ratios),
            "target": "score / extract <= 1.1",
        }
        print(f"extract: median {result['extract_s']['median']:.2f} s "
              f"(min {min(ext):.2f}, max {max(ext):.2f})")
        print(f"score:   median {result['score_s']['median']:.2f} s "
              f"(min {min(sco):.2f}, max {max(sco):.2f})")
        print(f"score / extract: {result['ratio_of_medians']:.3f} (ratio of medians), "
              f"{result['median_ratio']:.3f} (median of per-repeat ratios); target <= 1.1")
        print(f"after: {_load()}")
        print(json.dumps(result))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
