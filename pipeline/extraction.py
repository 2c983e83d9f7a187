"""Extraction building blocks shared by every runner (serial, dask, decoder pool).

- :func:`configure_store`: create or open the store and record each branch's configuration;
- :func:`plan_parts`: which parts still need which branches, and which videos to decode;
- :func:`process_parts`: decode the planned videos once, feed the branches, write each part
  whole when its last video is through (status last), report every video's outcome.

A runner decides only *where* :func:`process_parts` runs (this process, dask workers, ...);
resume and failure semantics live here, once.
"""

from __future__ import annotations

import json
import queue
import shutil
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vqa_pipe.pipeline.branches import (
    Branch,
    UnionPlan,
    VideoFeed,
    check_arrays,
    recorded_config,
)
from vqa_pipe.pipeline.store import FeatureStore, StoreError

OnVideo = Callable[[str, "str | None"], None]
"""Called after every video with its id and its failure reason (None when it succeeded)."""


@dataclass
class PartWork:
    """What one part still needs."""

    part: int
    branches: list[str]  # branches this part still needs
    keep: dict[str, dict[str, object]]  # branch -> video id -> KEPT (done) or failure reason
    todo: list[str]  # videos to decode
    results: dict[str, dict[str, object]] = field(default_factory=dict)
    fingerprints: dict[str, dict] = field(default_factory=dict)  # taken as each video starts


PENDING = {"pending": True}  # the source record of a video whose part is being rewritten
KEPT = "<kept: arrays already in the store>"  # read back only when the part is rewritten


def plan_parts(
    store: FeatureStore,
    branches: Sequence[str],
    retry_failed: bool,
    parts: Sequence[int] | None = None,
    redo: Sequence[str] = (),
) -> list[PartWork]:
    """Which parts still need which branches, and which videos must be decoded for them.

    A complete part is redone for the videos that failed (``retry_failed``) and for those in
    ``redo``; its other videos keep their arrays (or their failure) as they are. Their arrays
    are read back only when the part is written (:data:`KEPT`), so planning holds no arrays.
    """
    redo_set = set(redo)
    unknown = sorted(redo_set - set(store.video_ids))
    if unknown:
        raise StoreError(f"--redo names videos that are not in {store.path}: {unknown[:5]}")
    work = []
    for part in range(store.n_parts) if parts is None else parts:
        ids = store.part_ids(part)
        need, keep = [], {}
        for branch in branches:
            if not store.part_complete(branch, part):
                need.append(branch)
                keep[branch] = {}
                continue
            failed = set(store.part_failed_ids(branch, part))
            again = (failed if retry_failed else set()) | (redo_set & set(ids))
            if not again:
                continue
            need.append(branch)
            status = store.part_status(branch, part)
            reasons = dict(zip(status.video_ids, status.reason)) if status else {}
            done = [v for v in ids if v not in again and v not in failed]
            kept: dict[str, object] = dict.fromkeys(done, KEPT)
            kept.update({v: reasons.get(v, "failed") for v in failed - again})
            keep[branch] = kept
        if not need:
            continue
        todo = [v for v in ids if any(v not in keep[b] for b in need)]
        work.append(PartWork(part, need, keep, todo, {b: dict(keep[b]) for b in need}))
    return work


def process_parts(
    store: FeatureStore,
    work: list[PartWork],
    branches: Sequence[Branch],
    paths: dict[str, str],
    timeout: float,
    on_video: OnVideo,
    decoders: int = 1,
) -> None:
    """Decode the work's videos once, feed the branches, write each part when it is whole.

    ``decoders`` background decoder processes pull the videos, in order, from one shared
    queue, each with its own bounded frame queue and its own kill-on-timeout; this process
    consumes all of them, one video in flight per decoder, so the models see the frames of
    several videos interleaved. A decoder may not start a video of a part more than
    ``decoders`` parts ahead of the oldest part not yet written (``decoders x (LOOKAHEAD - 1)``
    in general, LOOKAHEAD = 2 videos queued per decoder), so memory stays bounded by that many
    open parts plus one and the queues, whatever the lengths of the videos.
    """
    from vqa_pipe.pipeline.decode import decode_in_background
    from vqa_pipe.pipeline.decode_worker import LOOKAHEAD

    by_name = {b.name: b for b in branches}
    plan = UnionPlan(tuple(b.plan() for b in branches))
    owner = {vid: w for w in work for vid in w.todo}
    items = [(vid, paths[vid]) for w in work for vid in w.todo]
    n = max(1, min(int(decoders), len(items)))
    stop = threading.Event()
    # Each decoder blocked at the gate holds at most LOOKAHEAD - 1 videos it cannot hand on;
    # a window of n * (LOOKAHEAD - 1) parts leaves at least one open part free of them, so the
    # oldest part always completes (no deadlock)
    source = _GatedVideos(items, [owner[v].part for v, _ in items],
                          window=n * max(1, LOOKAHEAD - 1), stop=stop)
    threads = decoder_threads(n)
    streams = [decode_in_background(source, plan, timeout_s=timeout, threads=threads)
               for _ in range(n)]
    events: queue.Queue = queue.Queue(maxsize=2 * len(streams))

    def post(event: tuple) -> bool:
        while not stop.is_set():
            try:
                events.put(event, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def pump(stream) -> None:
        try:
            for video in stream:
                if video.info is None:
                    error = video.error or RuntimeError(f"{video.path}: could not open the video")
                    if not post(("end", video.key, error)):
                        return
                    continue
                if not post(("start", video.key, video.info)):
                    return
                error = None
                try:
                    for frame in video.frames:
                        if not post(("frame", video.key, frame)):
                            return
                except Exception as err:  # noqa: BLE001 - this video's decode failed
                    error = err
                if not post(("end", video.key, error)):
                    return
        except BaseException as err:  # noqa: BLE001 - the stream itself broke: say so
            post(("broken", None, err))
        finally:
            post(("closed", None, None))

    threads = [threading.Thread(target=pump, args=(st,), daemon=True) for st in streams]
    for thread in threads:
        thread.start()
    feeds: dict[str, VideoFeed | None] = {}
    failures: dict[str, str] = {}
    open_streams = len(threads)
    try:
        while open_streams:
            kind, key, payload = events.get()
            if kind == "closed":
                open_streams -= 1
                continue
            if kind == "broken":
                raise payload
            w = owner[key]
            if kind == "start":
                w.fingerprints.update(fingerprints({key: paths[key]}))
                need = [by_name[b] for b in w.branches if key not in w.keep[b]]
                try:
                    feeds[key] = VideoFeed(payload, need, key)
                except Exception as err:  # noqa: BLE001 - one bad video must not stop the run
                    feeds[key] = None
                    failures[key] = f"{type(err).__name__}: {err}"
            elif kind == "frame":
                feed = feeds.get(key)
                if feed is not None:
                    try:
                        feed.add(payload)
                    except Exception as err:  # noqa: BLE001
                        feeds[key] = None
                        failures[key] = f"{type(err).__name__}: {err}"
            elif kind == "end":
                if _finish(store, w, key, feeds.pop(key, None), payload,
                           failures.pop(key, None), on_video):
                    source.written(w.part)
    finally:
        stop.set()
        for stream in streams:
            try:
                stream.close()
            except Exception:  # noqa: BLE001 - never hide the error that got us here
                pass
        for thread in threads:
            thread.join(timeout=30)


def _finish(
    store: FeatureStore,
    w: PartWork,
    key: str,
    feed: VideoFeed | None,
    error: BaseException | None,
    failure: str | None,
    on_video: OnVideo,
) -> bool:
    """Record one video's arrays (or its failure); write its part when the part is whole
    (then True). The part's source fingerprints, taken when each video started, are recorded
    after its arrays and status; a redone part's videos are marked pending meanwhile."""
    need = [b for b in w.branches if key not in w.keep[b]]
    reason = failure
    arrays: dict[str, dict | str] = {}
    if reason is None and error is not None:
        reason = f"{type(error).__name__}: {error}"
    if reason is None:
        try:
            if feed is None:
                raise RuntimeError(f"{key}: no frames were decoded")
            arrays = feed.finish()
            for name, result in arrays.items():
                check_arrays(name, result)
        except Exception as err:  # noqa: BLE001 - one bad video must not stop the run
            reason = f"{type(err).__name__}: {err}"
    if reason is not None:
        arrays = {b: reason for b in need}
    for name, result in arrays.items():
        w.results[name][key] = result
    on_video(key, reason)
    ids = store.part_ids(w.part)
    if not all(v in w.results[b] for b in w.branches for v in ids):
        return False
    recorded = store.part_sources(w.part)
    kept = {v: fp for v, fp in recorded.items() if v not in w.todo}
    if any(v in recorded for v in w.todo):
        # a part written before is being redone: until its new arrays are all written, its
        # redone videos count as changed, so a crash in between redoes them (never stale
        # arrays under a new fingerprint)
        store.set_part_sources(w.part, {**kept, **{v: PENDING for v in w.todo}})
    for branch in w.branches:
        store.write_part(branch, w.part, _with_kept_arrays(store, branch, w.results[branch]))
    store.set_part_sources(w.part, {**kept, **w.fingerprints})
    w.results.clear()  # free the part's arrays
    return True


def _with_kept_arrays(store: FeatureStore, branch: str, results: dict) -> dict:
    """A part's results with the arrays of its kept videos read back from the store."""
    kept = [v for v, r in results.items() if r is KEPT]
    if not kept:
        return results
    arrays = list(store.arrays(branch))
    per_array = {a: store.read(branch, a, kept) for a in arrays}
    return {**results, **{v: {a: per_array[a][v] for a in arrays} for v in kept}}


class _GatedVideos:
    """The videos to decode, pulled in order by several decoders (thread-safe), never more
    than ``window`` parts ahead of the oldest part not yet written."""

    def __init__(self, items: list, parts: list[int], window: int,
                 stop: threading.Event) -> None:
        self._items, self._parts = items, parts
        self._next = 0
        self._open = list(dict.fromkeys(parts))  # parts not yet written, in hand-out order
        self._window = max(1, window)
        self._stop = stop
        self._cond = threading.Condition()

    def __iter__(self):
        return self

    def __next__(self):
        with self._cond:
            while True:
                if self._stop.is_set() or self._next >= len(self._items):
                    raise StopIteration
                # the part is open until written: start it only among the oldest window+1
                if self._parts[self._next] in self._open[: self._window + 1]:
                    item = self._items[self._next]
                    self._next += 1
                    return item
                self._cond.wait(timeout=0.2)

    def written(self, part: int) -> None:
        with self._cond:
            if part in self._open:
                self._open.remove(part)
            self._cond.notify_all()


def configure_store(
    store_path: str | Path,
    video_ids: list[str],
    branches: Sequence[Branch],
    part_size: int,
    on_config_change: str = "error",
    log: Callable[[str], None] | None = None,
) -> FeatureStore:
    """Create or open the store and record every branch's configuration.

    Every branch's configuration is checked before anything is written, so a run refused for
    its configuration leaves the store as it was. A branch recorded with another
    configuration is refused, or with ``on_config_change="replace"`` removed (that branch
    only: imported feature sets and other branches stay); a store made from another video
    list or part size is refused, or with ``replace`` deleted and started afresh. Only a
    folder that is a vqa-pipe store is ever deleted.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr))
    if on_config_change not in ("error", "replace"):
        raise StoreError(
            f"on_config_change must be 'error' or 'replace', got {on_config_change!r}"
        )
    replace = on_config_change == "replace"
    if Path(store_path, "zarr.json").is_file():
        existing = FeatureStore.open(store_path)  # raises unless it is a vqa-pipe store
        if existing.part_size != part_size or \
                list(video_ids)[: len(existing.video_ids)] != list(existing.video_ids):
            if not replace:
                FeatureStore.create_or_open(store_path, video_ids, part_size=part_size)  # says why
                raise StoreError(f"{store_path} was made with another video list or part size; "
                                 "use a new store (--store) or --on-config-change replace")
            log(f"replacing {store_path}: it was made with another video list or part size")
            shutil.rmtree(store_path)
        else:
            changed = {b.name: d for b in branches
                       if (d := branch_differences(existing, b))}
            if changed and not replace:
                name, diffs = next(iter(changed.items()))
                raise StoreError(
                    f"{store_path} holds '{name}' features made with another configuration:\n  "
                    + "\n  ".join(diffs) + "\nUse a new store (--store), or "
                    "--on-config-change replace to extract that branch again"
                )
            if changed:
                writable = FeatureStore.open(store_path, writable=True)
                for name, diffs in changed.items():
                    log(f"replacing '{name}' in {store_path}: {diffs[0]}")
                    writable.remove_branch(name)
    store = FeatureStore.create_or_open(store_path, video_ids, part_size=part_size)
    for branch in branches:
        store.ensure_branch(branch.name, recorded_config(branch))
        for name, value in getattr(branch, "branch_arrays", dict)().items():
            store.put_branch_array(branch.name, name, value)
    return store


def branch_differences(store: FeatureStore, branch: Branch) -> list[str]:
    """How ``branch`` differs from what ``store`` records for it ([] when it records nothing
    or the same)."""
    from vqa_pipe.pipeline.store import config_differences, store_identity

    if branch.name not in store.branches():
        return []
    old = json.loads(json.dumps(store.branch_config(branch.name)))
    new = json.loads(json.dumps(recorded_config(branch)))
    return config_differences(store_identity(old), store_identity(new))


def auto_decoders(device: str, cpus: int | None = None) -> int:
    """Decoder processes for ``--decoders 0``: on a GPU, one per core but one (the model
    process) up to 16, since extraction is bound by decoding there; on the CPU a quarter of
    the cores (at least one), since the models need the cores themselves."""
    import os

    cpus = cpus or os.cpu_count() or 1
    if str(device).startswith("cuda"):
        return max(1, min(16, cpus - 1))
    return max(1, cpus // 4)


def fingerprints(paths: dict[str, str]) -> dict[str, dict]:
    """Each video file's fingerprint (size, mtime, sampled digest); files that cannot be read
    are left out."""
    from vqa_pipe.pipeline.fingerprint import FingerprintError, file_fingerprint

    out = {}
    for vid, path in paths.items():
        try:
            out[vid] = file_fingerprint(path).to_dict()
        except FingerprintError:
            continue
    return out


def changed_videos(
    store: FeatureStore, paths: dict[str, str], parts: Sequence[int] | None = None
) -> list[str]:
    """Videos whose file changed since their part was extracted (a new file under the same id):
    they are extracted again. A touched but identical file, or a part written before
    fingerprints were recorded, counts as unchanged."""
    from vqa_pipe.pipeline.fingerprint import (
        FileFingerprint,
        FingerprintError,
        compare_fingerprint,
    )

    changed = []
    for part in range(store.n_parts) if parts is None else parts:
        for vid, recorded in store.part_sources(part).items():
            if vid not in paths:
                continue
            if recorded == PENDING:  # its part was being rewritten when the run stopped
                changed.append(vid)
                continue
            try:
                change = compare_fingerprint(FileFingerprint.from_dict(recorded), paths[vid])
            except (FingerprintError, TypeError, KeyError, ValueError):
                continue  # unreadable record or file: the decoder will say what is wrong
            if change == "changed":
                changed.append(vid)
    return changed


def decoder_threads(decoders: int, cpus: int | None = None) -> int:
    """FFmpeg threads per decoder of a pool: the cores shared out (0, FFmpeg's own choice,
    for a single decoder)."""
    import os

    if decoders <= 1:
        return 0
    return max(1, (cpus or os.cpu_count() or 1) // decoders)
