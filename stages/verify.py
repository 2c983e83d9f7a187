"""``vqa-pipe verify STORE``: read a whole feature store, check every invariant, name the damage.

What is checked (see :mod:`vqa_pipe.pipeline.store` for what the store guarantees):

* the root metadata: valid JSON, a readable store format, a positive part size, unique
  video ids, a configuration per branch; consolidated metadata, when present, agrees with
  the files (plain zarr readers trust it);
* per branch and part: the status is well formed and written for the part's videos;
  ``offsets`` is an integer array of V+1 values equal to ``[0, cumsum(rows)]``; every array
  the status lists exists, has ``offsets[-1]`` rows, the dtype it is written with and the row
  shape of the branch's other parts; no array is there that the status does not list;
* every chunk of every array: present in its shard (format 2 writes all of them), shard
  indexes pass their crc32c, chunk payloads their checksum; values are finite in extracted
  branches (an imported set may hold NaN rows: they are counted, not damage);
* the branch-wide arrays under ``meta/`` (the prompts' text embeddings): readable, finite.

A damaged part array makes the videos whose rows it holds damaged (chunk by chunk, so one
flipped bit costs the videos of one chunk, not the whole part); a part whose status or
offsets cannot be trusted makes all of its videos damaged. ``mark=True`` records them as
failed (:meth:`FeatureStore.mark_damaged`) so that ``vqa-pipe extract --retry-failed`` (or a
re-import with ``--replace``) redoes exactly them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from vqa_pipe.pipeline.store import (
    DAMAGED_PREFIX,
    FeatureStore,
    PartStatus,
    StoreError,
    parse_root,
    read_rows,
    redo_hint,
)
from vqa_pipe.pipeline.store_files import META_FILE, ArrayInfo, read_node

EXIT_CLEAN = 0
EXIT_DAMAGED = 3
EXIT_UNREADABLE = 4

__all__ = ["EXIT_CLEAN", "EXIT_DAMAGED", "EXIT_UNREADABLE", "Problem", "VerifyReport",
           "verify_store"]


@dataclass
class Problem:
    """One thing wrong: where (a file or folder), what, and which videos it makes unusable.

    ``level``: ``"videos"`` (fixed by redoing ``videos``), ``"metadata"`` (store metadata
    that a fix rewrites: stale consolidated metadata, a damaged branch-wide array) or
    ``"store"`` (the root metadata: nothing can be read or redone until it is restored).
    """

    where: str
    what: str
    level: str = "videos"
    branch: str | None = None
    part: int | None = None
    videos: list[str] = field(default_factory=list)

    def line(self) -> str:
        scope = f"[{self.branch}" + (f" part {self.part}" if self.part is not None else "") + "] "
        videos = f" ({len(self.videos)} videos)" if self.videos else ""
        text = self.what if self.what.startswith(self.where) else f"{self.where}: {self.what}"
        return f"{scope if self.branch else ''}{text}{videos}"


@dataclass
class VerifyReport:
    """What :func:`verify_store` found. ``exit_code``: 0 clean, 3 damage, 4 unreadable root."""

    store: Path
    format: int | None = None
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    parts_checked: int = 0
    arrays_checked: int = 0
    chunks_checked: int = 0
    bytes_checked: int = 0
    marked: dict[str, list[str]] = field(default_factory=dict)
    reset_consolidated: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def exit_code(self) -> int:
        if any(p.level == "store" for p in self.problems):
            return EXIT_UNREADABLE
        return EXIT_DAMAGED if self.problems else EXIT_CLEAN

    def damaged(self) -> dict[str, list[str]]:
        """Branch -> ids of the videos whose features are damaged, in store order."""
        out: dict[str, list[str]] = {}
        for p in self.problems:
            if p.branch is not None and p.videos:
                out.setdefault(p.branch, []).extend(p.videos)
        return {b: list(dict.fromkeys(ids)) for b, ids in out.items()}

    def summary(self) -> str:
        lines = [f"store: {self.store} (format {self.format if self.format else '?'})"]
        for branch, c in self.counts.items():
            lines.append(f"[{branch}] done {c.get('done', 0)}, failed {c.get('failed', 0)}, "
                         f"pending {c.get('pending', 0)}")
        lines.append(
            f"checked {self.parts_checked} parts, {self.arrays_checked} arrays, "
            f"{self.chunks_checked} chunks, {self.bytes_checked:,} bytes"
        )
        lines.extend(f"note: {n}" for n in self.notes)
        for p in self.problems:
            lines.append("DAMAGED " + p.line())
        damaged = self.damaged()
        for branch, ids in damaged.items():
            lines.append(f"[{branch}] {len(ids)} damaged videos: {', '.join(ids[:10])}"
                         + (" …" if len(ids) > 10 else ""))
        if self.marked:
            total = sum(len(v) for v in self.marked.values())
            lines.append(f"marked {total} videos as failed for redo: rerun the extraction with "
                         "--retry-failed (or the import with --replace)")
        if self.reset_consolidated:
            lines.append("dropped the stale consolidated metadata (the next extraction writes "
                         "it again)")
        if self.exit_code == EXIT_UNREADABLE:
            lines.append("the store's root metadata is damaged: restore it from a backup or "
                         "re-create the store")
        elif self.problems and not self.marked:
            lines.append(f"to repair: {redo_hint(self.store)}")
        elif self.ok:
            lines.append("OK: no damage found")
        return "\n".join(lines)


def _video_rows_hit(status: PartStatus, offsets: np.ndarray, bad: list[tuple[int, int]]
                    ) -> list[str]:
    """Done videos whose rows intersect any of the ``bad`` row ranges."""
    hit = []
    for i in status.done():
        lo, hi = int(offsets[i]), int(offsets[i + 1])
        if any(a < hi and lo < b for a, b in bad):
            hit.append(status.video_ids[i])
    return hit


def _check_chunks(info: ArrayInfo, complete: bool, finite: bool, fix: str,
                  report: VerifyReport) -> tuple[list[tuple[int, int]], list[str], int]:
    """Read an array chunk by chunk: bad row ranges, their reasons, and non-finite rows."""
    bad: list[tuple[int, int]] = []
    reasons: list[str] = []
    nonfinite = 0
    rows = info.rows
    for shard in info.shard_files():
        if shard.is_file():
            report.bytes_checked += shard.stat().st_size
    step = info.chunk_shape[0] if info.chunk_shape else max(rows, 1)
    for a in range(0, rows, step):
        b = min(a + step, rows)
        report.chunks_checked += 1
        try:
            data = read_rows(info, a, b, complete=complete, fix=fix)
        except StoreError as err:
            bad.append((a, b))
            reasons.append(str(err).split("; run `vqa-pipe verify")[0])
            continue
        if data.dtype.kind == "f":
            ok = np.isfinite(data.reshape(len(data), -1)).all(axis=1)
            if not ok.all():
                nonfinite += int((~ok).sum())
                if finite:
                    for r in np.flatnonzero(~ok):
                        bad.append((a + int(r), a + int(r) + 1))
                    reasons.append(f"{info.folder}: {int((~ok).sum())} rows hold NaN or inf")
    return bad, reasons, nonfinite


def _check_consolidated(path: Path, node: dict, report: VerifyReport) -> None:
    consolidated = node.get("consolidated_metadata")
    if not isinstance(consolidated, dict):
        return
    listed = consolidated.get("metadata")
    if not isinstance(listed, dict):
        report.problems.append(Problem(str(path / META_FILE), "consolidated metadata is not a "
                                       "mapping of nodes", level="metadata"))
        return
    stale = []
    for key, meta in listed.items():
        try:
            actual = read_node(path / key, "")
        except StoreError:
            actual = None
        if actual is None or not isinstance(meta, dict) or any(
            meta.get(k) != actual.get(k) for k in ("attributes", "shape", "data_type")
        ):
            stale.append(key)
    if stale:
        report.problems.append(Problem(
            str(path / META_FILE),
            f"consolidated metadata disagrees with {len(stale)} nodes (e.g. {stale[:3]}): plain "
            "zarr readers would see old statuses or shapes; `--mark` drops it",
            level="metadata",
        ))


def _reference_rows(store: FeatureStore, branch: str, parts: list[PartStatus]) -> dict:
    """The row shape and dtype most parts agree on, per array (a tampered part stands out)."""
    votes: dict[str, Counter] = {}
    where: dict[tuple, Path] = {}
    for status in parts:
        for name in status.arrays:
            try:
                info = store.part_array_info(branch, status.part, name)
            except StoreError:
                continue
            key = (tuple(info.shape[1:]), info.dtype)
            votes.setdefault(name, Counter())[key] += 1
            where.setdefault((name, key), info.folder)
    return {name: (c.most_common(1)[0][0], where[(name, c.most_common(1)[0][0])])
            for name, c in votes.items()}


def _verify_branch(store: FeatureStore, branch: str, report: VerifyReport) -> None:
    fix = redo_hint(store.path)
    config = store.branch_config(branch)
    extracted = config.get("kind") != "imported"
    counts: Counter = Counter()
    statuses: list[PartStatus] = []
    for part in range(store.n_parts):
        ids = store.part_ids(part)
        try:
            status = store.part_status(branch, part)
        except StoreError as err:
            report.problems.append(Problem(
                str(store.part_folder(branch, part) / META_FILE), _what(err), branch=branch,
                part=part, videos=ids))
            counts["unreadable"] += len(ids)
            continue
        if status is None:
            counts["pending"] += len(ids)
            continue
        counts.update(status.state)
        statuses.append(status)
    report.counts[branch] = dict(counts)
    seen = _reference_rows(store, branch, statuses)
    nan_rows = 0
    formats: Counter = Counter()
    for status in statuses:
        report.parts_checked += 1
        formats[status.format] += 1
        done = [status.video_ids[i] for i in status.done()]
        folder = store.part_folder(branch, status.part)
        listed = set(status.arrays) | {"offsets"}
        extra = sorted(p.name for p in folder.iterdir()
                       if (p / META_FILE).is_file() and p.name not in listed)
        if extra:
            report.problems.append(Problem(
                str(folder / extra[0]), f"arrays {extra} are not in the part status (written "
                "by something else); redoing the part removes them", branch=branch,
                part=status.part, videos=done))
            continue
        try:
            offsets = store.part_offsets(branch, status)
        except StoreError as err:
            report.problems.append(Problem(str(folder / "offsets"), _what(err), branch=branch,
                                           part=status.part, videos=done))
            continue
        report.arrays_checked += 1
        hit: dict[str, None] = {}
        for name in status.arrays:
            try:
                info = store.checked_array(branch, status, name, offsets, seen)
            except StoreError as err:
                report.problems.append(Problem(str(folder / name), _what(err), branch=branch,
                                               part=status.part, videos=done))
                hit.update(dict.fromkeys(done))
                continue
            report.arrays_checked += 1
            if status.format >= 2 and info.rows and not info.checksummed:
                report.problems.append(Problem(
                    str(info.folder / META_FILE), "its codecs carry no checksum, but format-2 "
                    "parts are always written with one (the metadata was rewritten)",
                    branch=branch, part=status.part, videos=done))
                hit.update(dict.fromkeys(done))
                continue
            bad, reasons, nonfinite = _check_chunks(
                info, status.format >= 2, extracted, fix, report)
            nan_rows += 0 if extracted else nonfinite
            if bad:
                if not _video_rows_hit(status, offsets, bad):
                    # only rows of videos already recorded as failed (marked damaged): unused
                    report.notes.append(
                        f"{info.folder}: unreadable rows belong only to videos recorded as "
                        "failed (unused; `extract --retry-failed` rewrites the part)")
                    continue
                videos = [v for v in _video_rows_hit(status, offsets, bad) if v not in hit]
                hit.update(dict.fromkeys(videos))
                report.problems.append(Problem(
                    str(info.folder), "; ".join(dict.fromkeys(reasons)), branch=branch,
                    part=status.part, videos=videos))
    if formats.get(1):
        report.notes.append(
            f"'{branch}': {formats[1]} parts were written by store format 1: their chunks carry "
            "no checksum (a flipped bit there cannot be seen) and all-zero chunks were not "
            "written (a missing one is reported as damage)"
        )
    if nan_rows:
        report.notes.append(f"'{branch}': {nan_rows} imported rows hold NaN or inf (kept as "
                            "imported; training drops or imputes them per --nan-policy)")
    _verify_branch_arrays(store, branch, report)


def _verify_branch_arrays(store: FeatureStore, branch: str, report: VerifyReport) -> None:
    folder = store.path / "meta" / branch
    if not folder.is_dir():
        return
    for sub in sorted(folder.iterdir()):
        if not (sub / META_FILE).is_file():
            continue
        report.arrays_checked += 1
        try:
            values = store.branch_array(branch, sub.name)
        except StoreError as err:
            report.problems.append(Problem(str(sub), _what(err), level="metadata",
                                           branch=branch))
            continue
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            report.problems.append(Problem(str(sub), "holds NaN or inf values",
                                           level="metadata", branch=branch))


def _what(err: Exception) -> str:
    """An error message without the leading path (the problem names it) and repair hint."""
    text = str(err).split("; run `vqa-pipe verify")[0]
    return text


def verify_store(path: str | Path, *, mark: bool = False) -> VerifyReport:
    """See :func:`_verify`; with ``mark`` the store's writer lock is held (never beside an
    extraction writing it)."""
    if not mark:
        return _verify(path, mark=False)
    from vqa_pipe.pipeline.store_lock import writer_lock

    with writer_lock(path):
        return _verify(path, mark=True)


def _verify(path: str | Path, *, mark: bool = False) -> VerifyReport:
    """Read everything in a feature store and check every invariant; optionally mark damage.

    Args:
        path: the store.
        mark: record every damaged video as failed (reason ``"damaged: …"``) so that a retry
            redoes it, reset parts whose status is unreadable, and drop stale consolidated
            metadata. Nothing else is written, and nothing at all without ``mark``.

    Returns:
        A :class:`VerifyReport`; its ``exit_code`` is 0 (clean), 3 (damage found, listed
        with the videos it affects) or 4 (the root metadata is unreadable: restore it).

    Raises:
        StoreError: ``path`` holds no store at all.
    """
    path = Path(path)
    report = VerifyReport(store=path)
    if not (path / META_FILE).is_file():
        raise StoreError(f"no feature store at {path} (nothing to verify)")
    try:
        node = read_node(path, "restore it from a backup or re-create the store")
        meta = parse_root(path, node)
    except StoreError as err:
        report.problems.append(Problem(str(path / META_FILE), str(err), level="store"))
        return report
    report.format = int(meta["format"])
    _check_consolidated(path, node, report)
    store = FeatureStore.open(path, writable=mark)
    for branch in store.branches():
        _verify_branch(store, branch, report)
    parts_dir = path / "parts"
    if parts_dir.is_dir():
        known = set(store.branches())
        orphans = sorted({b.name for p in parts_dir.iterdir() if p.is_dir()
                          for b in p.iterdir() if b.is_dir() and b.name not in known})
        if orphans:
            report.notes.append(f"part folders hold groups of unconfigured branches {orphans} "
                                "(left over from a removed branch; ignored by readers)")
    if mark:
        for branch, ids in report.damaged().items():
            store.mark_damaged(branch, ids, "found by vqa-pipe verify")
            report.marked[branch] = ids
        if any(p.level == "metadata" and "consolidated" in p.what for p in report.problems):
            store.drop_consolidated()
            report.reset_consolidated = True
    return report


__all__ += ["DAMAGED_PREFIX"]
