"""Stage-two feature-table loads on synthetic LSVQ-size stores: time and peak memory.

Builds (once, in ``--workdir``) for each N in ``--sizes``:

* a *flat* store: N videos x 68 features (``--width``) imported with ``features import``
  (part size 32 unless ``--part-size``), loaded as the ``flat`` role (what ``ridge`` and
  ``svr`` read);
* a *frames* store: N videos x F frames x 68 ``semantic/frame_scores`` (F uniform in
  28..36, float32), loaded as the ``sequence`` role (what ``mlp`` and ``gru`` read).

Each load runs in a fresh process (``--repeats`` times) that reports its wall time, CPU
time and peak RSS; the script prints the median and the range. With ``--train`` it also
times ``vqa-pipe train --regressor ridge --splits 1`` end to end on each flat store. The
machine's load average is printed before and after: on a shared machine, wall time grows
with it while CPU time does not.

    python benchmarks/bench_table.py                       # N = 1k, 5k, 20k, 35k
    python benchmarks/bench_table.py --sizes 1000 --repeats 3 --train
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's code, never an installed copy

N_FEATURES = 68

_LOAD = r"""
import json, resource, sys, time
sys.path.insert(0, {repo!r})
t0, c0 = time.perf_counter(), time.process_time()
from vqa_pipe.pipeline.feature_table import FLAT, SEQUENCE, TableSpec, load_table
table = load_table({store!r}, {manifest!r}, [{role}], TableSpec(n_frames=16))
print(json.dumps({{"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "shape": list(table.inputs[{role}].shape)}}))
"""


def _manifest(folder: Path, n: int, seed: int):
    import numpy as np
    from vqa_pipe.pipeline.manifest import ManifestRow, write_manifest

    rng = np.random.default_rng(seed)
    mos = rng.uniform(1, 5, n)
    ids = [f"v{i:06d}" for i in range(n)]
    write_manifest([ManifestRow(video_id=v, path=Path(f"{v}.mp4"), mos=float(m),
                                mos_scale="1-5") for v, m in zip(ids, mos)], folder / "m.csv")
    return ids


def build_flat(folder: Path, n: int, part_size: int, width: int = N_FEATURES) -> Path:
    """N x ``width`` features through `features import` (the issue's setup: 68 to 800)."""
    import numpy as np
    from vqa_pipe.pipeline.feature_import import import_features

    if (folder / "done").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    _manifest(folder, n, seed=0)
    np.save(folder / "x.npy", np.random.default_rng(1).standard_normal((n, width)))
    import_features(folder / "x.npy", folder / "m.csv", folder / "s.zarr", name="feat",
                    part_size=part_size)
    (folder / "done").write_text("")
    return folder


def build_frames(folder: Path, n: int, part_size: int) -> Path:
    """N videos x 28..36 frames x 68 frame scores, written part by part like extraction."""
    import numpy as np
    from vqa_pipe.pipeline.store import FeatureStore

    if (folder / "done").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    ids = _manifest(folder, n, seed=0)
    store = FeatureStore.create_or_open(folder / "s.zarr", ids, part_size=part_size)
    store.ensure_branch("semantic", {"model": "synthetic", "random_weights": True})
    rng = np.random.default_rng(2)
    for part in range(store.n_parts):
        results = {}
        for vid in store.part_ids(part):
            f = int(rng.integers(28, 37))
            results[vid] = {
                "frame_scores": rng.random((f, N_FEATURES), dtype=np.float32),
                "frame_times": np.arange(f, dtype=np.float32) * 0.5,
            }
        store.write_part("semantic", part, results)
    (folder / "done").write_text("")
    return folder


def _run(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


_TRAIN = r"""
import json, resource, sys, time
sys.path.insert(0, {repo!r})
t0, c0 = time.perf_counter(), time.process_time()
from vqa_pipe.cli import main
main({args!r}, standalone_mode=False)
print(json.dumps({{"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def _train(folder: Path, regressor: str) -> dict:
    """``vqa-pipe train --splits 1`` end to end in a fresh process: wall, CPU, peak RSS."""
    args = ["train", "--store", str(folder / "s.zarr"), "--manifest", str(folder / "m.csv"),
            "--regressor", regressor, "--splits", "1", "--out", str(folder / f"run-{regressor}"),
            "--no-progress", "--no-save-models"]
    return _run(_TRAIN.format(repo=str(REPO), args=args))


def exponent(sizes: list[int], seconds: list[float]) -> float:
    """The growth exponent k of time ~ N^k (least squares on log-log)."""
    import numpy as np

    return float(np.polyfit(np.log(sizes), np.log(seconds), 1)[0])


def _fmt(values: list[float], unit: str, digits: int = 2) -> str:
    med = statistics.median(values)
    return f"{med:.{digits}f} {unit} [{min(values):.{digits}f}-{max(values):.{digits}f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 20000, 35000])
    parser.add_argument("--part-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/vqa-pipe-bench-table"))
    parser.add_argument("--width", type=int, default=N_FEATURES,
                        help="features per video of the flat store (the issue: 68 to 800)")
    parser.add_argument("--kinds", nargs="+", default=["flat", "frames"],
                        choices=["flat", "frames"])
    parser.add_argument("--train", nargs="*", metavar="REGRESSOR",
                        choices=["ridge", "svr", "mlp", "gru", "vsfa"],
                        help="also time `vqa-pipe train --regressor R --splits 1` end to end "
                             "(ridge, svr on the flat store; mlp, gru, vsfa on the frames "
                             "store); no name: ridge")
    args = parser.parse_args()
    if args.repeats < 3:
        parser.error("--repeats must be at least 3 (median and spread)")

    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()} (before)")
    print(f"part size {args.part_size}, {args.repeats} repeats, each load in a fresh process;"
          " median [min-max]")
    if args.train is not None and not args.train:
        args.train = ["ridge"]
    timings: dict[str, list[tuple[int, float]]] = {}
    for kind in args.kinds:
        role = "FLAT" if kind == "flat" else "SEQUENCE"
        for n in args.sizes:
            width = f"-w{args.width}" if kind == "flat" and args.width != N_FEATURES else ""
            folder = args.workdir / f"{kind}-{n}-p{args.part_size}{width}"
            t0 = time.perf_counter()
            if kind == "flat":
                build_flat(folder, n, args.part_size, args.width)
            else:
                build_frames(folder, n, args.part_size)
            built = time.perf_counter() - t0
            store_mb = sum(p.stat().st_size for p in (folder / "s.zarr").rglob("*")
                           if p.is_file()) / 2**20
            code = _LOAD.format(repo=str(REPO), store=str(folder / "s.zarr"),
                                manifest=str(folder / "m.csv"), role=role)
            runs = [_run(code) for _ in range(args.repeats)]
            line = (f"{kind:6s} N={n:6d} ({store_mb:7.1f} MB on disk, parts "
                    f"{-(-n // args.part_size)}, built/reused in {built:.0f} s) "
                    f"table {runs[0]['shape']}: wall {_fmt([r['wall'] for r in runs], 's')}, "
                    f"cpu {_fmt([r['cpu'] for r in runs], 's')}, "
                    f"peak RSS {_fmt([r['rss_mb'] for r in runs], 'MB', 0)}")
            print(line, flush=True)
            for regressor in args.train or ():
                if (regressor in ("ridge", "svr")) != (kind == "flat"):
                    continue
                trains = [_train(folder, regressor) for _ in range(args.repeats)]
                timings.setdefault(regressor, []).append(
                    (n, statistics.median(t["wall"] for t in trains)))
                print(f"       {regressor} train --splits 1 end to end: wall "
                      f"{_fmt([t['wall'] for t in trains], 's')}, cpu "
                      f"{_fmt([t['cpu'] for t in trains], 's')}, peak RSS "
                      f"{_fmt([t['rss_mb'] for t in trains], 'MB', 0)}", flush=True)
    for regressor, points in timings.items():
        if len(points) > 1:
            sizes, seconds = zip(*points)
            print(f"{regressor}: time grows as N^{exponent(list(sizes), list(seconds)):.2f} "
                  f"over N = {', '.join(map(str, sizes))}")
    print(f"load average {os.getloadavg()} (after)")


if __name__ == "__main__":
    main()
