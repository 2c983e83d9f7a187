"""Stage one: decode every video of a manifest once and feed the extraction branches.

Resumable and failure-tolerant: videos are processed part by part (see ``pipeline.store``);
a part already complete for every branch is skipped; a video that fails (bad file, decoder
timeout, a model error) is recorded as failed with its reason and the run goes on; a part is
written whole when its last video is through, so a crash loses at most the part in flight.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vqa_pipe.pipeline.branches import Branch, UnionPlan, check_arrays, run_branches
from vqa_pipe.pipeline.manifest import read_manifest
from vqa_pipe.pipeline.store import FeatureStore, StoreError

RANDOM_WEIGHTS_BANNER = (
    "WARNING: RANDOM WEIGHTS. These features come from untrained models: "
    "they exercise the pipeline but say nothing about video quality."
)


@dataclass
class ExtractSummary:
    """What one extraction run did."""

    store: Path
    total: int = 0
    done: list[str] = field(default_factory=list)
    skipped: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    failed_before: dict[str, str] = field(default_factory=dict)  # recorded by earlier runs, skipped
    seconds: float = 0.0
    random_weights: bool = False

    @property
    def ok(self) -> bool:
        """True unless there was work to do and none of it succeeded."""
        return bool(self.done) or (not self.failed)

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


@dataclass
class _PartWork:
    part: int
    branches: list[str]  # branches this part still needs
    keep: dict[str, dict[str, dict]]  # branch -> video id -> arrays already in the store
    todo: list[str]  # videos to decode
    results: dict[str, dict[str, dict | str]] = field(default_factory=dict)


def _plan_parts(
    store: FeatureStore,
    branches: Sequence[str],
    retry_failed: bool,
    parts: Sequence[int] | None = None,
) -> list[_PartWork]:
    """Which parts still need which branches, and which videos must be decoded for them."""
    work = []
    for part in range(store.n_parts) if parts is None else parts:
        ids = store.part_ids(part)
        need, keep = [], {}
        for branch in branches:
            if not store.part_complete(branch, part):
                need.append(branch)
                keep[branch] = {}
            elif retry_failed and store.part_failed_ids(branch, part):
                need.append(branch)
                failed = set(store.part_failed_ids(branch, part))
                done = [v for v in ids if v not in failed]
                arrays = list(store.arrays(branch))
                per_array = {a: store.read(branch, a, done) for a in arrays}
                keep[branch] = {v: {a: per_array[a][v] for a in arrays} for v in done}
        if not need:
            continue
        todo = [v for v in ids if any(v not in keep[b] for b in need)]
        work.append(_PartWork(part, need, keep, todo, {b: dict(keep[b]) for b in need}))
    return work


def _process(
    store: FeatureStore,
    work: list[_PartWork],
    branches: Sequence[Branch],
    paths: dict[str, str],
    timeout_s: float,
    on_video: Callable[[str, str | None], None],
) -> None:
    """Decode the work's videos once, feed the branches, write each part when it is whole.

    ``on_video(video_id, failure_reason_or_None)`` is called after every video.
    """
    from vqa_pipe.pipeline.decode import decode_in_background

    by_name = {b.name: b for b in branches}
    plan = UnionPlan(tuple(b.plan() for b in branches))
    owner = {vid: w for w in work for vid in w.todo}
    stream = decode_in_background(
        [(vid, paths[vid]) for w in work for vid in w.todo], plan, timeout_s=timeout_s
    )
    try:
        for video in stream:
            w = owner[video.key]
            need = [by_name[b] for b in w.branches if video.key not in w.keep[b]]
            reason = None
            try:
                if video.info is None:
                    raise video.error or RuntimeError(f"{video.path}: could not open the video")
                arrays = run_branches(video.info, video.frames, need, video.key)
                for name, result in arrays.items():
                    check_arrays(name, result)
            except Exception as err:  # noqa: BLE001 - one bad video must not stop the run
                reason = f"{type(err).__name__}: {err}"
                arrays = {b.name: reason for b in need}
            for name, result in arrays.items():
                w.results[name][video.key] = result
            on_video(video.key, reason)
            ids = store.part_ids(w.part)
            if all(v in w.results[b] for b in w.branches for v in ids):
                for branch in w.branches:
                    store.write_part(branch, w.part, w.results[branch])
                w.results.clear()  # free the part's arrays
    finally:
        stream.close()


def build_branches(
    names: Sequence[str],
    *,
    clip_model: str = "ViT-B-32",
    clip_pretrained: str | None = None,
    random_weights: bool = False,
    grid: tuple[int, int] = (3, 3),
    window_fit: str = "native",
    softmax: str = "per_set",
    prompts: str = "default",
    fps: float | None = 2.0,
    max_frames: int | None = 64,
    batch_windows: int = 288,
    swin_weights: str | Path | None = None,
    spatial_clips: int = 4,
    spatial_maps: bool = True,
    spatial_backbone: str = "auto",
    spatial_samplings: int = 1,
    spatial_seed: int = 0,
    device: str = "cpu",
) -> list[Branch]:
    """Build the named branches (``semantic``, ``spatial``) with their models loaded."""
    branches: list[Branch] = []
    for name in names:
        if name == "semantic":
            from vqa_pipe.pipeline.clip_model import load_clip
            from vqa_pipe.pipeline.decode import FrameSampling
            from vqa_pipe.pipeline.prompts import load_prompts
            from vqa_pipe.pipeline.semantic_branch import SemanticBranch

            clip = load_clip(
                clip_model, clip_pretrained, random_weights=random_weights, device=device
            )
            branches.append(
                SemanticBranch(
                    clip,
                    load_prompts(prompts),
                    FrameSampling(fps=fps, max_frames=max_frames),
                    grid=grid,
                    window_fit=window_fit,
                    softmax=softmax,
                    batch_windows=batch_windows,
                )
            )
        elif name == "spatial":
            from vqa_pipe.pipeline.spatial_branch import SpatialBranch

            branches.append(
                SpatialBranch(
                    backbone_name=(
                        "swin3d_t"
                        if spatial_backbone == "auto" and not swin_weights
                        else spatial_backbone
                    ),
                    weights=swin_weights,
                    random_weights=random_weights,
                    n_clips=spatial_clips,
                    n_samplings=spatial_samplings,
                    seed=spatial_seed,
                    store_maps=spatial_maps,
                    device=device,
                )
            )
        else:
            raise ValueError(f"unknown branch '{name}'; choose from semantic, spatial")
    return branches


def configure_store(
    store_path: str | Path,
    video_ids: list[str],
    branches: Sequence[Branch],
    part_size: int,
    on_config_change: str = "error",
) -> FeatureStore:
    """Create or open the store and record every branch's configuration.

    A store made with another configuration (or video list, or part size) is refused, or with
    ``on_config_change="replace"`` deleted and started afresh (what a DVC stage whose params
    changed wants; only a folder that is a vqa-pipe store is ever deleted).
    """
    if on_config_change not in ("error", "replace"):
        raise ValueError(f"on_config_change must be 'error' or 'replace', got {on_config_change!r}")
    if on_config_change == "replace" and Path(store_path, "zarr.json").is_file():
        try:
            _check_store(store_path, video_ids, branches, part_size)
        except StoreError as err:
            FeatureStore.open(store_path)  # raises unless it really is a vqa-pipe store
            print(f"replacing {store_path}: {str(err).splitlines()[0]}", file=sys.stderr)
            shutil.rmtree(store_path)
    store = FeatureStore.create_or_open(store_path, video_ids, part_size=part_size)
    for branch in branches:
        store.ensure_branch(branch.name, branch.config())
        text = getattr(branch, "text_embeddings", None)
        if text is not None:
            store.put_branch_array(branch.name, "text_embeddings", text)
    return store


def _check_store(
    store_path: str | Path, video_ids: list[str], branches: Sequence[Branch], part_size: int
) -> None:
    """Raise StoreError when the existing store does not fit this run (changes nothing)."""
    store = FeatureStore.open(store_path)
    if store.part_size != part_size or video_ids[: len(store.video_ids)] != store.video_ids:
        raise StoreError(f"{store_path} was made with another video list or part size")
    for branch in branches:
        if branch.name in store.branches():
            old = json.loads(json.dumps(store.branch_config(branch.name)))
            if old != json.loads(json.dumps(branch.config())):
                raise StoreError(f"{store_path} holds '{branch.name}' with another configuration")


def run_extract(
    manifest: str | Path,
    store_path: str | Path,
    branches: Sequence[Branch],
    *,
    part_size: int = 32,
    timeout_s: float = 120.0,
    retry_failed: bool = False,
    limit: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    on_config_change: str = "error",
) -> ExtractSummary:
    """Extract every branch's features for the videos of a manifest into a feature store.

    Args:
        manifest: manifest CSV (see ``pipeline.manifest``).
        store_path: the Zarr store to create or resume.
        branches: extraction branches (semantic, spatial); decoded once for all of them.
        part_size: videos per store part (the unit of writing and of resuming).
        timeout_s: a video whose decoder gives no frame for this long fails with a timeout.
        retry_failed: redo videos recorded as failed (done videos of their parts are kept).
        limit: only the first ``limit`` videos of the manifest (a quick look).
        on_config_change: ``error`` (default) or ``replace`` an existing store made differently.
    """
    paths, store, summary, work = prepare_run(
        manifest,
        store_path,
        branches,
        part_size=part_size,
        retry_failed=retry_failed,
        limit=limit,
        log=log,
        on_config_change=on_config_change,
    )
    n_todo = sum(len(w.todo) for w in work)
    start = time.perf_counter()
    if n_todo:
        bar = _progress_bar(n_todo, progress)

        def on_video(video_id: str, reason: str | None) -> None:
            _record(summary, bar, video_id, reason)

        try:
            _process(store, work, branches, paths, timeout_s, on_video)
        finally:
            bar.close()
        store.consolidate()
    summary.seconds = time.perf_counter() - start
    return summary


def prepare_run(
    manifest: str | Path,
    store_path: str | Path,
    branches: Sequence[Branch],
    *,
    part_size: int,
    retry_failed: bool,
    limit: int | None,
    log: Callable[[str], None] | None,
    on_config_change: str,
) -> tuple[dict[str, str], FeatureStore, ExtractSummary, list[_PartWork]]:
    """Read the manifest, configure the store, plan the parts still to do (serial or dask)."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    if not branches:
        raise ValueError("no extraction branch selected")
    rows = read_manifest(manifest)
    if limit is not None:
        rows = rows[:limit]
    paths = {row.video_id: str(row.path) for row in rows}
    store = configure_store(store_path, list(paths), branches, part_size, on_config_change)
    summary = ExtractSummary(
        store=Path(store_path),
        total=len(paths),
        random_weights=any(b.random_weights for b in branches),
    )
    if summary.random_weights:
        log(RANDOM_WEIGHTS_BANNER)
    names = [b.name for b in branches]
    work = _plan_parts(store, names, retry_failed)
    _count_skipped(summary, store, names, work)
    return paths, store, summary, work


def _count_skipped(
    summary: ExtractSummary, store: FeatureStore, branches: Sequence[str], work: list[_PartWork]
) -> None:
    todo_ids = {vid for w in work for vid in w.todo}
    summary.skipped = summary.total - len(todo_ids)
    for branch in branches:
        for vid, st in store.status(branch).items():
            if st.state == "failed" and vid not in todo_ids:
                summary.failed_before.setdefault(vid, st.reason)


def _record(summary: ExtractSummary, bar, video_id: str, reason: str | None) -> None:
    if reason is None:
        summary.done.append(video_id)
    else:
        summary.failed[video_id] = reason
        bar.set_postfix_str(f"{len(summary.failed)} failed", refresh=False)
    bar.update(1)


def _progress_bar(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="video", desc="extract", disable=not enabled, dynamic_ncols=True)
