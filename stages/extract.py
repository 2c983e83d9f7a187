"""Stage one: decode every video of a manifest once and feed the extraction branches.

Resumable and failure-tolerant: videos are processed part by part (see ``pipeline.store``);
a part already complete for every branch is skipped; a video that fails (bad file, decoder
timeout, a model error) is recorded as failed with its reason and the run goes on; a part is
written whole when its last video is through, so a crash loses at most the part in flight.

The run skeleton (manifest, store, plan, progress, summary) is :func:`run_extract`; where
the parts are processed is a *runner*: in this process, or on a dask cluster
(:class:`~vqa_pipe.pipeline.dask_runner.DaskRunner`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from vqa_pipe.pipeline.branches import Branch, build_branches, list_branches
from vqa_pipe.pipeline.extraction import (
    OnVideo,
    PartWork,
    auto_decoders,
    changed_videos,
    configure_store,
    plan_parts,
    process_parts,
)
from vqa_pipe.pipeline.manifest import read_manifest
from vqa_pipe.pipeline.options import OptionError, check_fields, normalise_key, option, pick
from vqa_pipe.pipeline.progress import progress_bar
from vqa_pipe.pipeline.store import FeatureStore, StoreError
from vqa_pipe.pipeline.store_lock import writer_lock
from vqa_pipe.pipeline.weights import RANDOM_WEIGHTS_BANNER


def parse_branches(value: object) -> tuple[str, ...]:
    """``semantic,spatial`` (or a list) -> ``("semantic", "spatial")``, each a known branch."""
    items = value if isinstance(value, (list, tuple)) else str(value or "").split(",")
    names = tuple(dict.fromkeys(str(v).strip() for v in items if str(v).strip()))
    valid = list_branches()
    bad = [n for n in names if n not in valid]
    if bad or not names:
        raise OptionError(
            f"branches: choose from {', '.join(valid)} (comma-separated), got {value!r}"
        )
    return names


def parse_ids(value: object) -> tuple[str, ...]:
    """``a,b,c`` (or a list) -> ``("a", "b", "c")``."""
    items = value if isinstance(value, (list, tuple)) else str(value or "").split(",")
    return tuple(dict.fromkeys(str(v).strip() for v in items if str(v).strip()))


@dataclass(frozen=True)
class ExtractOptions:
    """How an extraction runs (each branch's own options are declared with the branch)."""

    branches: tuple[str, ...] = option(
        ("semantic",),
        "Comma-separated branches to extract: semantic (CLIP windows), spatial (Swin fragments).",
        parse=parse_branches,
        show="semantic",
    )
    random_weights: bool = option(
        False, "Use untrained weights (smoke tests only; every output says so)."
    )
    device: str = option("auto", "auto, cpu, cuda, cuda:1 …")
    part_size: int = option(32, "Videos per store part (the unit of writing and resuming).",
                            min=1)
    decoders: int = option(
        0,
        "Decoder processes feeding the models (0: auto, from the CPU count and the device).",
        min=0,
        max=64,
    )
    timeout: float = option(120.0, "Seconds without a decoded frame before a video fails.",
                            min=0.001)
    retry_failed: bool = option(False, "Redo videos recorded as failed (done ones are kept).")
    redo: tuple[str, ...] = option(
        (),
        "Redo these videos (comma-separated ids), e.g. those `vqa-pipe verify` reports damaged.",
        parse=parse_ids,
        show="",
        metavar="ID,ID,...",
    )
    on_config_change: str = option(
        "error",
        "When the store holds features made with other settings: refuse (error), or delete "
        "it and start over (replace).",
        choices=("error", "replace"),
    )
    workers: int = option(
        0, "Extract parts in parallel on a local dask cluster of N worker processes.",
        min=0, max=256,
    )
    scheduler: str | None = option(None, "Address of a running dask scheduler (tcp://host:8786).")
    limit: int | None = option(None, "Only the first N videos of the manifest.", min=1)
    strict: bool = option(
        False, "Exit non-zero when any video failed (in this run or an earlier one)."
    )
    progress: bool = option(True, "Show a progress bar.")

    def __post_init__(self) -> None:
        check_fields(self)

    @classmethod
    def split(cls, values: Mapping[str, Any]) -> tuple[ExtractOptions, dict[str, Any]]:
        """Run options from ``values``, and the rest (the branches' options)."""
        mine = pick(cls, values)
        rest = {k: v for k, v in values.items() if normalise_key(k) not in mine}
        return cls(**mine), rest


@dataclass
class ExtractSummary:
    """What one extraction run did."""

    store: Path
    total: int = 0
    done: list[str] = field(default_factory=list)
    skipped: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    failed_before: dict[str, str] = field(default_factory=dict)  # recorded by earlier runs, skipped
    changed: list[str] = field(default_factory=list)  # files changed since extraction: redone
    seconds: float = 0.0
    random_weights: bool = False

    @property
    def ok(self) -> bool:
        """True unless there was work to do and none of it succeeded."""
        return bool(self.done) or (not self.failed)

    def record(self, video_id: str, reason: str | None) -> None:
        if reason is None:
            self.done.append(video_id)
        else:
            self.failed[video_id] = reason

    def lines(self) -> list[str]:
        rate = len(self.done) / self.seconds if self.seconds > 0 else 0.0
        out = []
        if self.random_weights:
            out.append(RANDOM_WEIGHTS_BANNER)
        out.append(
            f"store {self.store}: {len(self.done)} extracted, "
            f"{self.skipped} already done (skipped), "
            f"{len(self.failed)} failed, of {self.total} videos in {self.seconds:.1f} s "
            f"({rate:.2f} videos/s)"
        )
        for vid, reason in self.failed.items():
            out.append(f"  failed {vid}: {reason}")
        if self.failed_before:
            out.append(
                f"{len(self.failed_before)} videos failed in earlier runs and were skipped "
                "(--retry-failed redoes them; `vqa-pipe inspect` lists the reasons)"
            )
        return out


class Runner(Protocol):
    """Where the planned parts are processed."""

    def run(
        self, store: FeatureStore, work: list[PartWork], paths: dict[str, str], on_video: OnVideo
    ) -> None: ...


@dataclass
class SerialRunner:
    """All parts in this process: the models here, fed by ``decoders`` decoder processes."""

    branches: Sequence[Branch]
    timeout: float = 120.0
    decoders: int = 1

    def run(
        self, store: FeatureStore, work: list[PartWork], paths: dict[str, str], on_video: OnVideo
    ) -> None:
        process_parts(store, work, self.branches, paths, self.timeout, on_video, self.decoders)


def _device_of(branches: Sequence) -> str:
    """The device the branches' models run on (``cuda`` if any of them does)."""
    devices = [str(getattr(b, "device", "") or getattr(getattr(b, "clip", None), "device", ""))
               for b in branches]
    return next((d for d in devices if d.startswith("cuda")), "cpu")


def run_extract(
    manifest: str | Path,
    store_path: str | Path,
    branches: Sequence[Branch],
    *,
    part_size: int = 32,
    timeout: float = 120.0,
    retry_failed: bool = False,
    limit: int | None = None,
    redo: Sequence[str] = (),
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    on_config_change: str = "error",
    runner: Runner | None = None,
) -> ExtractSummary:
    """Extract every branch's features for the videos of a manifest into a feature store.

    Args:
        manifest: manifest CSV (see ``pipeline.manifest``).
        store_path: the Zarr store to create or resume.
        branches: extraction branches (semantic, spatial); decoded once for all of them.
        part_size: videos per store part (the unit of writing and of resuming).
        timeout: a video whose decoder gives no frame for this long fails with a timeout.
        retry_failed: redo videos recorded as failed (done videos of their parts are kept).
        limit: only the first ``limit`` videos of the manifest (a quick look); on a store that
            lists more, the whole parts holding them.
        redo: video ids to extract again (their parts' other videos are kept).
        on_config_change: ``error`` (default) or ``replace`` an existing store made differently.
        runner: where parts are processed (default: this process, :class:`SerialRunner`
            with :func:`auto_decoders` decoders for the branches' device).
    """
    log = log or (lambda msg: print(msg, file=sys.stderr))
    if not branches:
        raise OptionError("no extraction branch selected")
    if limit is not None and limit < 1:
        raise OptionError(f"limit must be >= 1, got {limit}")
    with writer_lock(store_path):
        rows = read_manifest(manifest)
        paths = {row.video_id: str(row.path) for row in rows}
        ids, parts = _limit(list(paths), store_path, limit, part_size, log)
        store = configure_store(store_path, ids, branches, part_size, on_config_change, log)
        summary = ExtractSummary(
            store=Path(store_path),
            total=len(ids) if parts is None else min(len(ids), len(parts) * part_size),
            random_weights=any(b.random_weights for b in branches),
        )
        if summary.random_weights:
            log(RANDOM_WEIGHTS_BANNER)
        names = [b.name for b in branches]
        summary.changed = changed_videos(store, paths, parts)
        if summary.changed:
            log(f"{len(summary.changed)} videos changed on disk since they were extracted "
                f"(e.g. {summary.changed[:3]}): extracting them again")
        redo = list(dict.fromkeys([*redo, *summary.changed]))
        work = plan_parts(store, names, retry_failed, parts=parts, redo=redo)
        _count_skipped(summary, store, names, work, parts)
        runner = runner or SerialRunner(branches, timeout, auto_decoders(_device_of(branches)))
        start = time.perf_counter()
        n_todo = sum(len(w.todo) for w in work)
        if n_todo:
            bar = progress_bar(n_todo, desc="extract", unit="video", enabled=progress)

            def on_video(video_id: str, reason: str | None) -> None:
                summary.record(video_id, reason)
                if reason is not None:
                    bar.set_postfix_str(f"{len(summary.failed)} failed", refresh=False)
                bar.update(1)

            try:
                runner.run(store, work, paths, on_video)
            finally:
                bar.close()
            store.consolidate()
        summary.seconds = time.perf_counter() - start
    return summary


def _limit(
    ids: list[str], store_path: str | Path, limit: int | None, part_size: int, log
) -> tuple[list[str], list[int] | None]:
    """The store's video list and the parts to work on, under ``--limit``.

    A new store (or one listing no more than ``limit`` videos) gets the first ``limit``
    videos. A store that already lists more keeps its list (the manifest still extends it);
    the run then works on the whole parts that hold the first ``limit`` videos, since parts
    are written whole, and says so.
    """
    if limit is None:
        return ids, None
    listed = 0
    if Path(store_path, "zarr.json").is_file():
        try:
            listed = len(FeatureStore.open(store_path).video_ids)
        except StoreError:
            listed = 0  # not a store: configure_store says so
    if listed <= limit:
        return ids[:limit], None
    n_parts = -(-limit // part_size)
    log(
        f"--limit {limit}: {store_path} already lists {listed} videos; working on the first "
        f"{n_parts} part(s) ({min(listed, n_parts * part_size)} videos), as parts are written "
        "whole"
    )
    return ids[: max(listed, limit)], list(range(n_parts))


def _count_skipped(
    summary: ExtractSummary,
    store: FeatureStore,
    branches: Sequence[str],
    work: list[PartWork],
    parts: Sequence[int] | None,
) -> None:
    todo_ids = {vid for w in work for vid in w.todo}
    summary.skipped = summary.total - len(todo_ids)
    in_scope = None if parts is None else {v for p in parts for v in store.part_ids(p)}
    for branch in branches:
        for vid, st in store.status(branch).items():
            if in_scope is not None and vid not in in_scope:
                continue
            if st.state == "failed" and vid not in todo_ids:
                summary.failed_before.setdefault(vid, st.reason)


def extract(
    manifest: str | Path,
    store_path: str | Path,
    options: ExtractOptions,
    branch_options: Mapping[str, Any] | None = None,
    *,
    branches: Sequence[Branch] | None = None,
    log: Callable[[str], None] | None = None,
) -> ExtractSummary:
    """The stage as the CLI and ``dvc.yaml`` run it: build the branches, pick the runner, run.

    Args:
        options: run options.
        branch_options: every branch option by name (``grid``, ``clip_model``, ...).
        branches: the branches, when already built from the same options (serial runs only).
    """
    from vqa_pipe.pipeline.device import resolve_device

    branch_options = dict(branch_options or {})
    device = resolve_device(options.device)
    distributed = bool(options.workers or options.scheduler)
    # On dask the workers load the models; here they are built on the CPU only to record
    # their configuration in the store (and to fail early on a missing checkpoint).
    if branches is None or distributed:
        branches = build_branches(
            options.branches,
            device="cpu" if distributed else device,
            random_weights=options.random_weights,
            **branch_options,
        )
    runner: Runner
    if distributed:
        from vqa_pipe.pipeline.dask_runner import DaskRunner

        spec = {
            "names": list(options.branches),
            # resolved by each worker: 'auto' means that worker's GPU if it has one
            "device": options.device,
            "random_weights": options.random_weights,
            **{k: _portable(v) for k, v in branch_options.items()},
        }
        runner = DaskRunner(
            spec,
            timeout=options.timeout,
            workers=options.workers or 2,
            scheduler=options.scheduler,
            decoders=options.decoders or 1,
        )
    else:
        decoders = options.decoders or auto_decoders(device)
        runner = SerialRunner(branches, options.timeout, decoders)
    return run_extract(
        manifest,
        store_path,
        branches,
        part_size=options.part_size,
        timeout=options.timeout,
        retry_failed=options.retry_failed,
        limit=options.limit,
        redo=options.redo,
        progress=options.progress,
        log=log,
        on_config_change=options.on_config_change,
        runner=runner,
    )


def _portable(value: Any) -> Any:
    """A branch option as a dask worker elsewhere can use it: lists for tuples, absolute
    paths for existing files."""
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, str) and value and Path(value).exists():
        return str(Path(value).resolve())
    return value


__all__ = [
    "ExtractOptions",
    "ExtractSummary",
    "RANDOM_WEIGHTS_BANNER",
    "SerialRunner",
    "extract",
    "run_extract",
]
