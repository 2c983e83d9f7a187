"""Stage one on a dask cluster: one task per store part, each written whole by one worker.

Parts are the unit of writing (see ``pipeline.store``), so workers never share a shard. Each
worker builds the branches once from a plain-data spec (models are not shipped over the wire)
and keeps them for every later part. The client configures the store, plans the parts, and
consolidates the metadata at the end.

Workers decode in a child process, so they must not be daemonic: ``LocalCluster`` is started
that way here; for ``dask worker`` processes of your own set
``DASK_DISTRIBUTED__WORKER__DAEMON=False``. On a multi-GPU machine start one worker per GPU,
each with its own ``CUDA_VISIBLE_DEVICES``, and pass the scheduler address.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vqa_pipe.pipeline.manifest import read_manifest
from vqa_pipe.pipeline.store import FeatureStore
from vqa_pipe.stages.extract import (
    RANDOM_WEIGHTS_BANNER,
    ExtractSummary,
    _count_skipped,
    _plan_parts,
    _process,
    _progress_bar,
    _record,
    build_branches,
    configure_store,
)

_WORKER_BRANCHES: dict[str, list] = {}


def _worker_branches(spec: str) -> list:
    if spec not in _WORKER_BRANCHES:
        _WORKER_BRANCHES.clear()  # one configuration per worker at a time: free the old models
        _WORKER_BRANCHES[spec] = build_branches(**json.loads(spec))
    return _WORKER_BRANCHES[spec]


def extract_part(
    store_path: str,
    part: int,
    spec: str,
    paths: dict[str, str],
    timeout_s: float,
    retry_failed: bool,
) -> dict[str, str | None]:
    """Run on a worker: extract one part; return each video's failure reason (None when done)."""
    branches = _worker_branches(spec)
    store = FeatureStore.open(store_path, writable=True)
    work = _plan_parts(store, [b.name for b in branches], retry_failed, parts=[part])
    outcomes: dict[str, str | None] = {}
    if work:
        _process(store, work, branches, paths, timeout_s, outcomes.__setitem__)
    return outcomes


def run_extract_dask(
    manifest: str | Path,
    store_path: str | Path,
    branch_spec: dict[str, Any],
    *,
    workers: int = 2,
    scheduler: str | None = None,
    part_size: int = 32,
    timeout_s: float = 120.0,
    retry_failed: bool = False,
    limit: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    on_config_change: str = "error",
) -> ExtractSummary:
    """Like ``run_extract``, with parts spread over a dask cluster.

    Args:
        branch_spec: keyword arguments of ``build_branches`` (names, model, weights, …); every
            worker builds its branches from it.
        workers: size of a local cluster (ignored with ``scheduler``).
        scheduler: address of a running dask scheduler (``tcp://host:8786``).
    """
    import dask
    from dask.distributed import Client, LocalCluster, as_completed

    log = log or (lambda msg: print(msg, file=sys.stderr))
    rows = read_manifest(manifest)[:limit] if limit is not None else read_manifest(manifest)
    paths = {row.video_id: str(row.path) for row in rows}
    # The client builds the branches on the CPU only to record their configuration.
    local = build_branches(**{**branch_spec, "device": "cpu"})
    store = configure_store(store_path, list(paths), local, part_size, on_config_change)
    del local
    summary = ExtractSummary(
        store=Path(store_path),
        total=len(paths),
        random_weights=bool(branch_spec.get("random_weights")),
    )
    if summary.random_weights:
        log(RANDOM_WEIGHTS_BANNER)
    names = list(branch_spec["names"])
    work = _plan_parts(store, names, retry_failed)
    _count_skipped(summary, store, names, work)
    spec = json.dumps(branch_spec, sort_keys=True, default=str)
    start = time.perf_counter()
    if work:
        bar = _progress_bar(sum(len(w.todo) for w in work), progress)
        with dask.config.set({"distributed.worker.daemon": False}):
            cluster = (
                None
                if scheduler
                else LocalCluster(
                    n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
                )
            )
            try:
                with Client(scheduler or cluster) as client:
                    futures = {
                        client.submit(
                            extract_part,
                            str(store_path),
                            w.part,
                            spec,
                            {v: paths[v] for v in w.todo},
                            timeout_s,
                            retry_failed,
                            pure=False,
                            key=f"extract-part-{w.part}",
                        ): w
                        for w in work
                    }
                    for future in as_completed(futures):
                        w = futures[future]
                        try:
                            outcomes = future.result()
                        except Exception as err:  # noqa: BLE001 - a lost part is redone next run
                            reason = f"part {w.part} not written ({type(err).__name__}: {err})"
                            outcomes = {v: reason for v in w.todo}
                        for vid, reason in outcomes.items():
                            _record(summary, bar, vid, reason)
            finally:
                bar.close()
                if cluster is not None:
                    cluster.close()
        store.consolidate()
    summary.seconds = time.perf_counter() - start
    return summary
