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
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vqa_pipe.pipeline.store import FeatureStore
from vqa_pipe.stages.extract import (
    ExtractSummary,
    _plan_parts,
    _process,
    _progress_bar,
    _record,
    build_branches,
    prepare_run,
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

    # The client builds the branches on the CPU only to record their configuration.
    local = build_branches(**{**branch_spec, "device": "cpu"})
    paths, store, summary, work = prepare_run(
        manifest,
        store_path,
        local,
        part_size=part_size,
        retry_failed=retry_failed,
        limit=limit,
        log=log,
        on_config_change=on_config_change,
    )
    del local
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
