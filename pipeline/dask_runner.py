"""Extraction on a dask cluster: one task per store part, each written whole by one worker.

Parts are the unit of writing (see ``pipeline.store``), so workers never share a shard. Each
worker builds the branches once from a plain-data spec (models are not shipped over the wire)
and keeps them for every later part. A worker that dies mid-part leaves the part without its
status; dask gives the task to another worker, which writes the part again, whole.

Workers decode in a child process, so they must not be daemonic: the local cluster is started
that way here; for ``dask worker`` processes of your own set
``DASK_DISTRIBUTED__WORKER__DAEMON=False``. On a multi-GPU machine start one worker per GPU,
each with its own ``CUDA_VISIBLE_DEVICES``, and pass the scheduler address.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vqa_pipe.pipeline.errors import VqaPipeError
from vqa_pipe.pipeline.extraction import (
    OnVideo,
    PartWork,
    branch_differences,
    plan_parts,
    process_parts,
)
from vqa_pipe.pipeline.store import FeatureStore

_WORKER_BRANCHES: dict[str, list] = {}


def _worker_branches(spec: str) -> list:
    from vqa_pipe.pipeline.device import idle_openmp_threads_sleep

    idle_openmp_threads_sleep()  # a worker started by `dask worker` may not have torch yet
    from vqa_pipe.pipeline.branches import build_branches
    from vqa_pipe.pipeline.device import resolve_device

    if spec not in _WORKER_BRANCHES:
        _WORKER_BRANCHES.clear()  # one configuration per worker at a time: free the old models
        data = json.loads(spec)
        data["device"] = resolve_device(data.get("device", "auto"))  # this worker's device
        _WORKER_BRANCHES[spec] = build_branches(data.pop("names"), **data)
    return _WORKER_BRANCHES[spec]


def extract_part(
    store_path: str,
    part: int,
    spec: str,
    paths: dict[str, str],
    timeout: float,
    todo: list[str],
    decoders: int = 1,
) -> dict[str, str | None]:
    """Run on a worker: extract the ``todo`` videos of one part (the client planned them; the
    part's other videos keep what the store holds); return each video's failure reason (None
    when done). The worker's branches must be configured as the store records (another
    open_clip, another file behind the same path: refused before anything is written)."""
    from vqa_pipe.pipeline.store import StoreError

    branches = _worker_branches(spec)
    store = FeatureStore.open(store_path, writable=True)
    for branch in branches:
        diffs = branch_differences(store, branch)
        if diffs:
            raise StoreError(
                f"dask worker: its '{branch.name}' branch is not configured as {store_path} "
                f"records ({'; '.join(diffs[:5])}): give every worker the same software and "
                "weights"
            )
    work = plan_parts(store, [b.name for b in branches], False, parts=[part], redo=todo)
    outcomes: dict[str, str | None] = {}
    process_parts(store, work, branches, paths, timeout, outcomes.__setitem__, decoders)
    return outcomes


def _client(address: Any) -> Any:
    """A dask client, or a one-line error naming the scheduler that cannot be reached."""
    from dask.distributed import Client

    try:
        return Client(address, timeout="30s")
    except (OSError, TimeoutError) as err:
        raise DaskError(f"cannot reach the dask scheduler {address}: {err}") from None


class DaskError(VqaPipeError):
    """A dask cluster that cannot be used."""


class DaskRunner:
    """Runs each part of the plan as one task on a local or remote dask cluster.

    Args:
        branch_spec: ``{"names": [...], "device": ..., "random_weights": ..., **options}``,
            what :func:`~vqa_pipe.pipeline.branches.build_branches` takes; every worker builds
            its branches from it.
        workers: size of a local cluster (ignored with ``scheduler``).
        scheduler: address of a running dask scheduler (``tcp://host:8786``).
    """

    def __init__(
        self,
        branch_spec: Mapping[str, Any],
        *,
        timeout: float,
        workers: int = 2,
        scheduler: str | None = None,
        decoders: int = 1,
    ) -> None:
        self.spec = json.dumps(dict(branch_spec), sort_keys=True, default=list)
        self.timeout = timeout
        self.decoders = decoders
        self.workers = workers
        self.scheduler = scheduler

    def run(
        self, store: FeatureStore, work: list[PartWork], paths: dict[str, str], on_video: OnVideo
    ) -> None:
        import dask
        from dask.distributed import LocalCluster, as_completed

        with dask.config.set({"distributed.worker.daemon": False}):
            cluster = None
            if not self.scheduler:
                cluster = LocalCluster(
                    n_workers=self.workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                )
            try:
                run = uuid.uuid4().hex[:12]  # task keys unique to this run, store and part
                with _client(self.scheduler or cluster) as client:
                    futures = {
                        client.submit(
                            extract_part,
                            str(Path(store.path).resolve()),
                            w.part,
                            self.spec,
                            {v: str(Path(paths[v]).resolve())
                             for v in store.part_ids(w.part) if v in paths},
                            self.timeout,
                            list(w.todo),
                            self.decoders,
                            pure=False,
                            key=f"extract-part-{w.part}-{run}",
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
                            on_video(vid, reason)
            finally:
                if cluster is not None:
                    cluster.close()
