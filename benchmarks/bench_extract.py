"""Benchmark stage one (semantic branch) against its own lower bounds, like with like.

Two regimes, each with a warm-up run first and ``--repeats`` timed runs (median and spread
printed), the machine's load average printed before and after:

1. **Decode-bound** (a cheap model, ``vqa-tiny-clip`` by default): extraction with N decoder
   processes (``--decoders``) against N parallel decode-only processes over the *same* videos,
   handed out the same way (one shared queue the decoders pull from), the same frames, the
   same background decoder and FFmpeg threads, frames dropped. Decode-only is a lower bound:
   the ratio is >= 1. Target on a 2-core machine: <= 1.15 at N = 2. Also printed: the same
   extraction with CLIP stubbed out (the pipeline's own cost), the CPU seconds of the model
   process and of the decoders, and the lower bound those CPU seconds put on the ratio when
   the model shares the cores with the decoders (as it does on a CPU-only machine).
2. **Compute-bound** (``--model``, ViT-B-32 by default, random weights cost the same time as
   real ones): extraction against bare ``encode_image`` on the *same batches* (the batch sizes
   extraction actually sent to CLIP are recorded and replayed), same threads, same device.
   Target on a CPU: <= 1.25.

A ratio under 1 means the benchmark does not compare like with like, and is flagged.
``--long N`` also checks that peak memory stays flat on one real video concatenated N times.

    python benchmarks/bench_extract.py --repeats 3 --decoders 1 2
    python benchmarks/bench_extract.py --device cuda --model ViT-B-32 --decoders 8 16  # a GPU box
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's code, never an installed copy


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} CPUs"


def _manifest(videos: list[Path], out: Path) -> Path:
    from vqa_pipe.pipeline.manifest import ManifestRow, write_manifest

    return write_manifest([ManifestRow(v.stem, v.resolve(), None, None) for v in videos], out)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # ended decoder processes
    return usage.ru_utime + usage.ru_stime


def timed(fn: Callable[[], object], repeats: int) -> tuple:
    """Warm-up once, then ``repeats`` runs: (median, min, max) seconds, the last result, and
    the median CPU seconds of this process and of the (ended) decoder processes per run."""
    result = fn()
    times, own, children = [], [], []
    for _ in range(repeats):
        start, cpu, child = time.perf_counter(), time.process_time(), _children_cpu()
        result = fn()
        times.append(time.perf_counter() - start)
        own.append(time.process_time() - cpu)
        children.append(_children_cpu() - child)
    return (statistics.median(times), min(times), max(times), result,
            statistics.median(own), statistics.median(children))


def spread(stats: tuple) -> str:
    median, low, high = stats[:3]
    return f"{median:.2f} s (min {low:.2f}, max {high:.2f})"


class SharedVideos:
    """One queue of videos that several decoders pull from, in order, as extraction's pool
    does (``pipeline.extraction``); no part gate here, since nothing is written."""

    def __init__(self, items: list) -> None:
        self._items = iter(items)
        self._lock = threading.Lock()

    def __iter__(self):
        return self

    def __next__(self):
        with self._lock:
            return next(self._items)


def decode_only(videos: list[Path], plan, decoders: int) -> int:
    """N background decoders pulling the videos from one shared queue, as extraction's decoder
    pool does; frames dropped."""
    from vqa_pipe.pipeline.decode import decode_in_background
    from vqa_pipe.pipeline.extraction import decoder_threads

    source = SharedVideos([(v.stem, str(v)) for v in videos])
    counts = [0] * decoders
    ffmpeg_threads = decoder_threads(decoders)  # as extraction's pool gives each decoder

    def drain(i: int) -> None:
        with decode_in_background(source, plan, threads=ffmpeg_threads) as stream:
            for video in stream:
                for _ in video.frames:
                    counts[i] += 1

    threads = [threading.Thread(target=drain, args=(i,)) for i in range(decoders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts)


def extract_once(branches, manifest: Path, work: Path, decoders: int):
    from vqa_pipe.stages.extract import SerialRunner, run_extract

    store = work / "s.zarr"
    shutil.rmtree(store, ignore_errors=True)
    summary = run_extract(manifest, store, branches, progress=False, log=lambda m: None,
                          runner=SerialRunner(branches, decoders=decoders))
    if summary.failed:
        print("failed:", summary.failed, file=sys.stderr)
    return summary


def build(model: str, args) -> list:
    from vqa_pipe.pipeline.branches import build_branches

    return build_branches(["semantic"], device=args.device, random_weights=True,
                          clip_model=model, fps=args.fps, max_frames=args.max_frames,
                          batch_windows=args.batch)


def stub_clip(branch) -> Callable[[], None]:
    """Replace the branch's CLIP encoder by a near-free one (one image encoded per batch, its
    embedding repeated): what is left of extraction is the pipeline's own cost. Returns the
    function that restores it."""
    encode = branch.clip.encode_images

    def stubbed(images, **kwargs):
        one = encode(images[:1], **kwargs)
        if isinstance(one, tuple):
            return tuple(t.expand(len(images), *t.shape[1:]).clone() for t in one)
        return one.expand(len(images), -1).clone()

    branch.clip.encode_images = stubbed

    def restore() -> None:
        branch.clip.encode_images = encode

    return restore


def decode_bound(args, videos: list[Path], manifest: Path, work: Path) -> list[dict]:
    branches = build(args.cheap_model, args)
    rows = []
    for n in args.decoders:
        ext = timed(lambda n=n: extract_once(branches, manifest, work, n), args.repeats)
        restore = stub_clip(branches[0])
        try:
            stub = timed(lambda n=n: extract_once(branches, manifest, work, n), args.repeats)
        finally:
            restore()
        dec = timed(lambda n=n: decode_only(videos, branches[0].plan(), n), args.repeats)
        # no schedule on os.cpu_count() cores can beat all the CPU work spread evenly over them
        bound = max(1.0, (ext[4] + ext[5]) / (os.cpu_count() or 1) / dec[0])
        rows.append({"decoders": n, "extract": ext, "stubbed": stub, "decode": dec,
                     "frames": dec[3], "ratio": ext[0] / dec[0], "stub_ratio": stub[0] / dec[0],
                     "bound": bound})
    return rows


def compute_bound(args, manifest: Path, work: Path) -> dict:
    import torch

    (branch,) = build(args.model, args)
    sizes: list[int] = []
    encode = branch.clip.encode_images

    def recording(images):
        sizes.append(len(images))
        return encode(images)

    branch.clip.encode_images = recording
    ext = timed(lambda: extract_once([branch], manifest, work, 1), args.repeats)
    branch.clip.encode_images = encode
    batches = sizes[-len(sizes) // (args.repeats + 1):]  # one run's batches (the last)
    size = branch.clip.image_size
    # the input form extraction sends: a list of (S, S, 3) uint8 window views of HWC frames
    # (copied into the model's reused input buffer, channels-last), not an (N, 3, S, S) batch
    frame = torch.randint(0, 256, (max(batches), size, size, 3), dtype=torch.uint8)
    views = [frame[i] for i in range(max(batches))]

    def bare() -> None:
        for n in batches:
            encode(views[:n])
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    enc = timed(bare, args.repeats)
    return {"extract": ext, "encode": enc, "batches": batches, "windows": sum(batches),
            "ratio": ext[0] / enc[0]}


def long_video_memory(args, videos: list[Path]) -> list[dict]:
    """Peak memory of the main process on one real video concatenated 1, 2, N times."""
    src = max(videos, key=lambda p: p.stat().st_size)
    work = Path(tempfile.mkdtemp(prefix="vqa-bench-long-"))
    rows = []
    try:
        for times in sorted({1, 2, args.long}):
            video = concat_video(src, times, work / f"x{times}.mp4")
            out = subprocess.run(
                [sys.executable, __file__, "--peak-of", str(video), "--model", args.model,
                 "--fps", str(args.fps), "--device", args.device],
                capture_output=True, text=True, check=True,
            ).stdout
            row = json.loads(out.strip().splitlines()[-1])
            row["concatenated"] = times
            rows.append(row)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


def peak_of(args) -> None:
    """One video, no frame cap, in this process: print frames and peak memory as JSON."""
    work = Path(tempfile.mkdtemp(prefix="vqa-bench-peak-"))
    try:
        args.max_frames = 0
        branches = build(args.model, args)
        summary = extract_once(branches, _manifest([args.peak_of], work / "m.csv"), work, 1)
        from vqa_pipe.pipeline.store import FeatureStore

        frames = sum(len(v) for v in FeatureStore.open(work / "s.zarr")
                     .read("semantic", "frame_times").values())
        print(json.dumps({"frames": frames, "done": len(summary.done),
                          "peak_rss_main_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                          / 1024}))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def concat_video(src: Path, times: int, out: Path) -> Path:
    """Re-encode ``src`` ``times`` times in a row into one H.264 file (a long real video)."""
    import av

    with av.open(str(src)) as inp, av.open(str(out), "w") as dst:
        stream_in = inp.streams.video[0]
        rate = stream_in.average_rate or 25
        frames = [f.to_ndarray(format="rgb24") for f in inp.decode(stream_in)]
        h, w = frames[0].shape[:2]
        stream = dst.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = w - w % 2, h - h % 2, "yuv420p"
        stream.options = {"crf": "23", "preset": "ultrafast"}
        for _ in range(times):
            for rgb in frames:
                frame = av.VideoFrame.from_ndarray(rgb[: stream.height, : stream.width],
                                                   format="rgb24")
                for packet in stream.encode(frame):
                    dst.mux(packet)
        for packet in stream.encode():
            dst.mux(packet)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video_files", nargs="*", type=Path)
    parser.add_argument("--videos", type=Path,
                        default=Path(__file__).resolve().parents[2] / "shared/data/videos")
    parser.add_argument("--model", default="ViT-B-32", help="compute-bound model")
    parser.add_argument("--cheap-model", default="vqa-tiny-clip", help="decode-bound model")
    parser.add_argument("--decoders", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fps", type=float, default=2.0)
    parser.add_argument("--max-frames", type=int, default=64)
    parser.add_argument("--compute-max-frames", type=int, default=8,
                        help="frame cap of the compute-bound regime (ViT-B-32 on a CPU is slow)")
    parser.add_argument("--batch", type=int, default=288)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--skip", choices=["decode", "compute"], action="append", default=[])
    parser.add_argument("--long", type=int, default=0)
    parser.add_argument("--peak-of", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    from vqa_pipe.pipeline.device import idle_openmp_threads_sleep

    idle_openmp_threads_sleep()  # as the vqa-pipe command line does, before torch loads
    import torch

    torch.set_num_threads(args.threads)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.peak_of:
        peak_of(args)
        return
    videos = sorted(args.video_files or args.videos.glob("*.mp4"))
    if not videos:
        parser.error(f"no videos given and none in {args.videos}")
    work = Path(tempfile.mkdtemp(prefix="vqa-bench-"))
    try:
        manifest = _manifest(videos, work / "m.csv")
        print(f"# bench_extract: {len(videos)} videos, device {args.device}, "
              f"{torch.get_num_threads()} torch threads, {args.repeats} repeats after a warm-up")
        print(f"before: {load()}")
        if "decode" not in args.skip:
            print(f"\n## decode-bound: {args.cheap_model}, {args.fps} frames/s, "
                  f"cap {args.max_frames}\n")
            print("| decoders | frames | extraction | extraction, CLIP stubbed | decode only | "
                  "ratio | ratio, stubbed | CPU s: model process / decoders (extraction; "
                  "decode only) | CPU lower bound of the ratio |")
            print("|---|---|---|---|---|---|---|---|---|")
            for row in decode_bound(args, videos, manifest, work):
                ext, dec = row["extract"], row["decode"]
                # below its lower bound beyond the spread of the runs: not like with like
                flag = "  (< 1: not like with like!)" if row["stubbed"][2] < dec[1] else ""
                print(f"| {row['decoders']} | {row['frames']} | {spread(ext)} | "
                      f"{spread(row['stubbed'])} | {spread(dec)} | **{row['ratio']:.3f}** | "
                      f"{row['stub_ratio']:.3f}{flag} | {ext[4]:.2f} / {ext[5]:.2f}; "
                      f"{dec[4]:.2f} / {dec[5]:.2f} | {row['bound']:.3f} |")
            print("\nCPU lower bound: (model-process + decoder CPU of extraction) / cores / "
                  "decode-only wall; no schedule can beat it on this machine.")
            print(f"\nafter decode-bound: {load()}")
        if "compute" not in args.skip:
            args.max_frames = args.compute_max_frames
            result = compute_bound(args, manifest, work)
            flag = "  (< 1: not like with like!)" if result["ratio"] < 1 else ""
            print(f"\n## compute-bound: {args.model}, cap {args.max_frames} frames, batches of "
                  f"{sorted(set(result['batches']))} windows ({result['windows']} in all)\n")
            print("| extraction | bare encode_image, same batches | ratio |")
            print("|---|---|---|")
            print(f"| {spread(result['extract'])} | {spread(result['encode'])} | "
                  f"**{result['ratio']:.3f}**{flag} |")
            print(f"\nafter compute-bound: {load()}")
        if args.long:
            print("\npeak memory of the main process against video length (no frame cap):")
            for row in long_video_memory(args, videos):
                print(f"  x{row['concatenated']:<3} frames {row['frames']:>5}  "
                      f"main {row['peak_rss_main_mb']:>8.1f} MB")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
