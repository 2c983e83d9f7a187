"""A real dask cluster, started the way a user starts one (`dask scheduler`, `dask worker`),
runs `vqa-pipe extract --scheduler`; a worker killed in the middle of a part loses nothing."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from vqa_pipe.pipeline.manifest import ManifestRow, write_manifest
from vqa_pipe.pipeline.store import FeatureStore

from vqa_pipe.cli import main

pytestmark = pytest.mark.slow

REAL = ["konvid_10053703034.mp4", "lsvq_1724.mp4", "kinetics_FEQ-gdkTN4Q_000008_000018.mp4",
        "konvid_3339962845.mp4"]
OPTIONS = ["--clip-model", "vqa-tiny-clip", "--random-weights", "--fps", "2", "--max-frames",
           "6", "--part-size", "1", "--no-progress"]


def _dask_cli() -> str:
    beside = Path(sys.executable).parent / "dask"
    found = str(beside) if beside.is_file() else shutil.which("dask")
    if found is None:
        pytest.skip("the dask command is not installed (pip install -e . installs it)")
    return found


def _wait_for(predicate, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture()
def cluster(tmp_path):
    """A scheduler and two single-threaded, non-daemonic workers on localhost."""
    dask = _dask_cli()
    env = dict(os.environ, DASK_DISTRIBUTED__WORKER__DAEMON="False")
    scheduler_file = tmp_path / "scheduler.json"
    procs = [subprocess.Popen(
        [dask, "scheduler", "--scheduler-file", str(scheduler_file), "--port", "0",
         "--no-dashboard"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    _wait_for(scheduler_file.is_file, 60, "the scheduler")
    for _ in range(2):
        procs.append(subprocess.Popen(
            [dask, "worker", "--scheduler-file", str(scheduler_file), "--nthreads", "1",
             "--no-nanny", "--no-dashboard"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    address = json.loads(scheduler_file.read_text())["address"]
    from dask.distributed import Client

    with Client(address) as client:
        client.wait_for_workers(2, timeout=120)
    try:
        yield address
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_killed_worker_mid_part_and_the_store_equals_a_serial_run(
    tmp_path, sample_videos, cluster
):
    from dask.distributed import Client

    rows = [ManifestRow(Path(n).stem, sample_videos[n]["path"], None, None) for n in REAL]
    manifest = write_manifest(rows, tmp_path / "m.csv")
    runner = CliRunner()
    serial = runner.invoke(main, ["extract", "--manifest", str(manifest), "--store",
                                  str(tmp_path / "serial.zarr"), *OPTIONS])
    assert serial.exit_code == 0, serial.output

    outcome = {}

    def run():
        outcome["result"] = CliRunner().invoke(main, [
            "extract", "--manifest", str(manifest), "--store", str(tmp_path / "dask.zarr"),
            "--scheduler", cluster, *OPTIONS])

    thread = threading.Thread(target=run)
    with Client(cluster) as client:
        pids = client.run(os.getpid)
        thread.start()

        def busy_worker():
            for worker, keys in client.processing().items():
                if any("extract-part" in str(k) for k in keys):
                    return worker
            return None

        victim = _wait_for(busy_worker, 120, "a worker to start a part")
        os.kill(pids[victim], signal.SIGKILL)  # mid-part: its part has no status yet
        thread.join(timeout=600)
    assert not thread.is_alive()
    result = outcome["result"]
    assert result.exit_code == 0, result.output
    assert "4 extracted" in result.output and "0 failed" in result.output

    a, b = FeatureStore.open(tmp_path / "serial.zarr"), FeatureStore.open(tmp_path / "dask.zarr")
    assert a.done_ids("semantic") == b.done_ids("semantic") == [Path(n).stem for n in REAL]
    for array in ("frame_scores", "window_embeddings", "frame_times"):
        left, right = a.read("semantic", array), b.read("semantic", array)
        for vid in left:
            np.testing.assert_array_equal(left[vid], right[vid], err_msg=f"{array} of {vid}")
