"""Benchmark stage one (semantic branch) on the real sample videos.

Measures, on the same videos and settings:

- full extraction (decode in the background + windows + CLIP + scoring + store writes);
- decode only (the same background decoder and frame plan, frames dropped);
- bare ``encode_image`` on the same number of windows at the same batch size;

and prints videos/s, frames/s, windows/s, peak memory and the ratios the targets are stated in
(CPU: extraction within 1.25x of bare encoding; GPU: within 1.3x of decode only). With
``--long`` it also extracts one real video and the same video concatenated N times, each in its
own process, and prints peak memory for both (it must stay flat as the video grows).

Random weights cost the same time as real ones, so the default is ViT-B-32 with random weights.

    python benchmarks/bench_extract.py --videos ../shared/data/videos --long 6
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _rss_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024.0


def _manifest(videos: list[Path], out: Path) -> Path:
    from vqa_pipe.pipeline.manifest import ManifestRow, write_manifest

    rows = [ManifestRow(v.stem, v.resolve(), None, None) for v in videos]
    return write_manifest(rows, out)


def measure(args: argparse.Namespace) -> dict:
    import torch
    from vqa_pipe.pipeline.decode import FrameSampling, decode_in_background
    from vqa_pipe.stages.extract import build_branches, run_extract

    videos = sorted(Path(p) for p in args.video_files)
    work = Path(tempfile.mkdtemp(prefix="vqa-bench-"))
    try:
        manifest = _manifest(videos, work / "m.csv")
        sampling = FrameSampling(fps=args.fps, max_frames=args.max_frames or None)
        device = args.device
        (branch,) = build_branches(
            ["semantic"],
            clip_model=args.model,
            random_weights=True,
            fps=args.fps,
            max_frames=args.max_frames or None,
            batch_windows=args.batch,
            device=device,
        )

        # decode only
        t = time.perf_counter()
        n_frames = 0
        for video in decode_in_background([(v.stem, str(v)) for v in videos], sampling):
            for _ in video.frames:
                n_frames += 1
        decode_s = time.perf_counter() - t

        # full extraction
        t = time.perf_counter()
        summary = run_extract(
            manifest, work / "s.zarr", [branch], progress=False, log=lambda m: None
        )
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        extract_s = time.perf_counter() - t
        if summary.failed:
            print("failed:", summary.failed, file=sys.stderr)

        # bare encode_image on the same number of windows, same batch size
        n_windows = n_frames * branch.grid.n_windows
        size = branch.clip.image_size
        batch = torch.randint(0, 256, (args.batch, 3, size, size), dtype=torch.uint8)
        branch.clip.encode_images(batch[:8])  # warm-up
        t = time.perf_counter()
        left = n_windows
        while left > 0:
            branch.clip.encode_images(batch[: min(args.batch, left)])
            left -= args.batch
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        encode_s = time.perf_counter() - t
        return {
            "model": args.model,
            "device": device,
            "torch_threads": torch.get_num_threads(),
            "videos": len(videos),
            "frames": n_frames,
            "windows": n_windows,
            "batch_windows": args.batch,
            "extract_s": round(extract_s, 2),
            "decode_only_s": round(decode_s, 2),
            "bare_encode_s": round(encode_s, 2),
            "videos_per_s": round(len(videos) / extract_s, 3),
            "frames_per_s": round(n_frames / extract_s, 2),
            "windows_per_s": round(n_windows / extract_s, 1),
            "extract_over_encode": round(extract_s / encode_s, 3),
            "extract_over_decode": round(extract_s / decode_s, 3),
            "peak_rss_main_mb": round(_rss_mb(resource.RUSAGE_SELF), 1),
            "peak_rss_decoder_mb": round(_rss_mb(resource.RUSAGE_CHILDREN), 1),
        }
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
                frame = av.VideoFrame.from_ndarray(
                    rgb[: stream.height, : stream.width], format="rgb24"
                )
                for packet in stream.encode(frame):
                    dst.mux(packet)
        for packet in stream.encode():
            dst.mux(packet)
    return out


def long_video_memory(args: argparse.Namespace, videos: list[Path]) -> list[dict]:
    src = max(videos, key=lambda p: p.stat().st_size)
    work = Path(tempfile.mkdtemp(prefix="vqa-bench-long-"))
    rows = []
    try:
        for times in sorted({1, 2, args.long}):
            video = concat_video(src, times, work / f"x{times}.mp4")
            cmd = [
                sys.executable,
                __file__,
                "--model",
                args.model,
                "--fps",
                str(args.fps),
                "--max-frames",
                "0",
                "--batch",
                str(args.batch),
                "--device",
                args.device,
                "--json",
                str(video),
            ]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            result = json.loads(out.strip().splitlines()[-1])
            result["concatenated"] = times
            rows.append(result)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "video_files", nargs="*", type=Path, help="videos (default: --videos folder)"
    )
    parser.add_argument(
        "--videos", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/videos"
    )
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--fps", type=float, default=2.0)
    parser.add_argument("--max-frames", type=int, default=64)
    parser.add_argument("--batch", type=int, default=288)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument(
        "--long", type=int, default=0, help="also check memory on a video concatenated N times"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON line only")
    args = parser.parse_args()
    if args.device == "auto":
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if not args.video_files:
        args.video_files = sorted(args.videos.glob("*.mp4"))
    if not args.video_files:
        parser.error(f"no videos given and none in {args.videos}")
    result = measure(args)
    if args.json:
        print(json.dumps(result))
        return
    for key, value in result.items():
        print(f"{key:>22}: {value}")
    if args.long:
        print("\npeak memory against video length (each in its own process, no frame cap):")
        for row in long_video_memory(args, list(args.video_files)):
            print(
                f"  x{row['concatenated']:<3} frames {row['frames']:>5}"
                f"  main {row['peak_rss_main_mb']:>8.1f} MB"
                f"  decoder {row['peak_rss_decoder_mb']:>8.1f} MB  extract {row['extract_s']} s"
            )


if __name__ == "__main__":
    main()
