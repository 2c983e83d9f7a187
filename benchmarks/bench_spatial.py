"""Spatial branch speed: bare backbone per clip, fragment cutting per frame, whole videos.

    python benchmarks/bench_spatial.py [--device cpu] [--repeats 2] [--batch 1] [--videos DIR]

Random weights (speed does not depend on them). Prints markdown tables:
1. bare backbone seconds per 32x224x224 clip (swin3d_t, swin3d_t_grpb; torchvision's swin3d_t
   features for reference), best of ``--repeats``;
2. milliseconds to cut one native frame into the fragments of one clip;
3. seconds per video for the whole branch (decode + fragments + backbone, 4 clips) on a few
   real videos, and the share of it spent decoding.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's code, never an installed copy

import numpy as np  # noqa: E402
import torch  # noqa: E402
from vqa_pipe.pipeline.fragments import clip_rng, fragment_layout  # noqa: E402
from vqa_pipe.pipeline.swin_backbone import build_backbone  # noqa: E402

DEFAULT_VIDEOS = REPO.parent / "shared" / "data" / "videos"
VIDEOS = ("konvid_10053703034.mp4", "lsvq_1724.mp4", "kinetics_FEQ-gdkTN4Q_000008_000018.mp4")


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times)


def table_backbone(device: str, repeats: int, batch: int) -> None:
    from torchvision.models.video import swin3d_t

    print(f"\n### Bare backbone, seconds per clip (batch {batch}, 32x224x224, {device})\n")
    print("| backbone | s / clip |")
    print("|---|---|")
    x = torch.randn(batch, 3, 32, 224, 224, device=device)
    on_cuda = device.startswith("cuda")
    tv = swin3d_t().eval().to(device)
    models = {
        "swin3d_t": build_backbone("swin3d_t").init_random(0).eval().to(device),
        "swin3d_t_grpb": build_backbone("swin3d_t_grpb").init_random(0).eval().to(device),
        "torchvision swin3d_t (reference)": lambda v: tv.norm(tv.features(tv.patch_embed(v))),
    }
    for name, model in models.items():
        def run(model=model) -> None:
            with torch.inference_mode(), torch.autocast("cuda", torch.float16, enabled=on_cuda):
                model(x)

        run()  # warm-up
        print(f"| {name} | {best_of(run, repeats) / batch:.2f} |")


def table_fragments(repeats: int) -> None:
    print("\n### Cutting one frame into a 7x7x32 fragment frame, ms\n")
    print("| frame | upscaled | ms |")
    print("|---|---|---|")
    rng = np.random.default_rng(0)
    for h, w in ((144, 192), (540, 960), (720, 1280), (1080, 1920), (2160, 3840)):
        frame = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        layout = fragment_layout(h, w, rng=clip_rng(0, 0, 0))
        n = 50

        def cut(layout=layout, frame=frame, n=n) -> None:
            for _ in range(n):
                layout.extract(frame)

        seconds = best_of(cut, repeats)
        print(f"| {w}x{h} | {layout.upscaled} | {1000 * seconds / n:.2f} |")


def table_videos(videos: Path, device: str) -> None:
    from vqa_pipe.pipeline.branches import run_branches
    from vqa_pipe.pipeline.decode import iter_frames, probe
    from vqa_pipe.pipeline.spatial_branch import SpatialBranch

    print(f"\n### Whole spatial branch per video (swin3d_t, 4 clips x 32 frames, {device})\n")
    print("| video | size | frames decoded | decode s | branch s | decode share |")
    print("|---|---|---|---|---|---|")
    branch = SpatialBranch("swin3d_t", random_weights=True, device=device)
    for name in VIDEOS:
        path = videos / name
        if not path.is_file():
            continue
        info = probe(path)
        start = time.perf_counter()
        n = sum(1 for _ in iter_frames(path, branch.plan(), info=info))
        decode = time.perf_counter() - start
        start = time.perf_counter()
        run_branches(info, iter_frames(path, branch.plan(), info=info), [branch], name)
        total = time.perf_counter() - start
        print(f"| {name[:28]} | {info.width}x{info.height} | {n} | {decode:.2f} | "
              f"{total:.2f} | {decode / total:.0%} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--videos", type=Path, default=DEFAULT_VIDEOS)
    parser.add_argument("--skip-videos", action="store_true")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs, device {args.device}")
    table_backbone(args.device, args.repeats, args.batch)
    table_fragments(args.repeats)
    if not args.skip_videos and args.videos.is_dir():
        table_videos(args.videos, args.device)


if __name__ == "__main__":
    main()
