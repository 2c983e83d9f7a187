"""Decoding speed and memory on the real sample videos.

    python benchmarks/bench_decode.py [--videos ../shared/data/videos] [--leak-rounds 40]

Prints markdown tables:
1. seconds per video for each backend, 2 frames/s sampling and every frame (in process);
2. the background decoder (worker process, bounded queue) against in-process decoding;
3. resident memory of a process that decodes the same video many times per backend
   (decord 0.6 is known to grow), of a background run over a long video, all frames, and
   of a background run feeding a slow consumer, per backend.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's code, never an installed copy

from vqa_pipe.pipeline.decode import FrameSampling, decode_in_background, iter_frames, probe  # noqa: E402

DEFAULT_VIDEOS = REPO.parent / "shared" / "data" / "videos"


def rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def timed(path: Path, plan, backend: str) -> tuple[float, int]:
    start = time.perf_counter()
    n = sum(1 for _ in iter_frames(path, plan, backend=backend))
    return time.perf_counter() - start, n


def table_backends(videos: list[Path]) -> None:
    print("\n### In-process decoding, seconds per video\n")
    print("| video | size | frames | 2/s: decord | 2/s: pyav | all: decord | all: pyav |")
    print("|---|---|---|---|---|---|---|")
    totals = [0.0] * 4
    for path in videos:
        info = probe(path)
        cells = []
        for k, (plan, backend) in enumerate(
            [(FrameSampling(), "decord"), (FrameSampling(), "pyav"),
             (FrameSampling(None, None), "decord"), (FrameSampling(None, None), "pyav")]
        ):
            seconds, _ = timed(path, plan, backend)
            totals[k] += seconds
            cells.append(f"{seconds:.2f}")
        print(f"| {path.name[:28]} | {info.width}x{info.height} | {info.n_frames} | "
              + " | ".join(cells) + " |")
    print("| **total** | | | " + " | ".join(f"**{t:.2f}**" for t in totals) + " |")


def table_background(videos: list[Path]) -> None:
    print("\n### Background decoder vs in process (2 frames/s, backend auto)\n")
    start = time.perf_counter()
    n_in = sum(timed(p, FrameSampling(), "auto")[1] for p in videos)
    t_in = time.perf_counter() - start
    start = time.perf_counter()
    n_bg = 0
    with decode_in_background([(p.name, p) for p in videos], FrameSampling()) as run:
        for video in run:
            n_bg += sum(1 for _ in video.frames)
    t_bg = time.perf_counter() - start
    print("| mode | frames | seconds (incl. worker start) |")
    print("|---|---|---|")
    print(f"| in process | {n_in} | {t_in:.2f} |")
    print(f"| decode_in_background | {n_bg} | {t_bg:.2f} |")


def _leak_probe(path: str, backend: str, rounds: int, out) -> None:
    plan = FrameSampling()
    sum(1 for _ in iter_frames(path, plan, backend=backend))
    base = rss_mib()
    for _ in range(rounds):
        sum(1 for _ in iter_frames(path, plan, backend=backend))
    out.put((base, rss_mib()))


def table_memory(videos: list[Path], rounds: int) -> None:
    print(f"\n### Resident memory, same video decoded {rounds} times (fresh process each)\n")
    print("| video | backend | RSS after 1 (MiB) | RSS after all (MiB) | growth per video (MiB) |")
    print("|---|---|---|---|---|")
    ctx = mp.get_context("spawn")
    for path in videos:
        for backend in ("decord", "pyav"):
            out = ctx.Queue()
            proc = ctx.Process(target=_leak_probe, args=(str(path), backend, rounds, out))
            proc.start()
            base, end = out.get()
            proc.join()
            print(f"| {path.name[:28]} | {backend} | {base:.0f} | {end:.0f} | "
                  f"{(end - base) / rounds:.2f} |")
    longest = max(videos, key=lambda p: probe(p).n_frames * probe(p).width * probe(p).height)
    for prefetch in (4, 32):
        with decode_in_background([("x", longest)], FrameSampling(None, None),
                                  prefetch_frames=prefetch) as run:
            video = next(run)
            n = 0
            peak_worker = 0.0
            for _ in video.frames:
                n += 1
                if n % 25 == 0:
                    peak_worker = max(peak_worker, _rss_of(run.worker_pid))
                    time.sleep(0.01)  # a slow consumer: the worker must wait, not hoard
        parent_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"\nAll {n} frames of {longest.name} in the background, prefetch_frames="
              f"{prefetch}: worker RSS peak {peak_worker:.0f} MiB (sampled), "
              f"parent peak RSS so far {parent_peak:.0f} MiB")
    print(f"\nA slow consumer (50 ms a frame, 2 frames/s) of {longest.name} in the background, "
          "prefetch_frames=32:\n")
    print("| backend | frames | worker peak RSS (VmHWM, MiB) |")
    print("|---|---|---|")
    for backend in ("decord", "pyav"):
        with decode_in_background([("x", longest)], FrameSampling(2.0, None),
                                  prefetch_frames=32, backend=backend) as run:
            video = next(run)
            n = 0
            for _ in video.frames:
                n += 1
                time.sleep(0.05)  # decord 0.6 used to decode ahead into RGB while it waited
            peak = _rss_of(run.worker_pid, "VmHWM")
        print(f"| {backend} | {n} | {peak:.0f} |")


def _rss_of(pid: int | None, field: str = "VmRSS") -> float:
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=Path, default=DEFAULT_VIDEOS)
    parser.add_argument("--leak-rounds", type=int, default=40)
    parser.add_argument("--skip", nargs="*", default=[], choices=["backends", "background",
                                                                   "memory"])
    args = parser.parse_args()
    videos = sorted(args.videos.glob("*.mp4"))
    if not videos:
        sys.exit(f"no .mp4 files in {args.videos}")
    print(f"{len(videos)} videos from {args.videos}; {os.cpu_count()} CPU cores")
    if "backends" not in args.skip:
        table_backends(videos)
    if "background" not in args.skip:
        table_background(videos)
    if "memory" not in args.skip:
        table_memory([p for p in videos if p.name.startswith(("konvid_5", "kinetics_FEQ"))],
                     args.leak_rounds)


if __name__ == "__main__":
    main()
