"""The feature store: one Zarr v3 group per dataset and feature configuration.

Layout::

    store.zarr/
      zarr.json                         attrs["vqa_pipe"] = {format, package_version, part_size,
                                                             video_ids, branches: {name: config}}
      parts/p000012/<branch>/           attrs["status"] = {video_ids, state, reason, rows}
      parts/p000012/<branch>/offsets    (V+1,) int64: row offsets of the part's videos
      parts/p000012/<branch>/<array>    rows of all done videos of the part, concatenated on axis 0

Videos are grouped into fixed *parts* (manifest order, ``part_size`` videos each). A part's
arrays are written whole by one writer, each as exactly one shard, so parallel writers never
share a shard. The branch group's ``status`` attribute is written last and marks the part
complete: a crash loses at most the parts in flight, which are redone on the next run.

Plain zarr reads it (``zarr.open_group(path)["parts/p000000/semantic/frame_scores"]``);
:meth:`FeatureStore.to_dask` gives one lazy array over all parts.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from vqa_pipe.pipeline.errors import VqaPipeError

FORMAT_VERSION = 1
_ROOT_KEY = "vqa_pipe"
_STATUS_KEY = "status"
_OFFSETS = "offsets"
_TARGET_CHUNK_BYTES = 4 << 20


class StoreError(VqaPipeError):
    """A feature store is missing, malformed, or does not match what was asked of it."""


@dataclass(frozen=True)
class VideoStatus:
    """One video's state in one branch: ``done``, ``failed`` (with reason) or ``pending``."""

    state: str
    reason: str = ""


def _package_version() -> str:
    from vqa_pipe import __version__

    return __version__


def _jsonable(value: Any) -> Any:
    """Round-trip through JSON so configs compare the way they are stored."""
    return json.loads(json.dumps(value))


def _config_diff(old: Mapping, new: Mapping, prefix: str = "") -> list[str]:
    """Human-readable differences between two JSON-like configs."""
    diffs = []
    for key in sorted(set(old) | set(new), key=str):
        name = f"{prefix}{key}"
        if key not in old:
            diffs.append(f"{name}: (absent) -> {new[key]!r}")
        elif key not in new:
            diffs.append(f"{name}: {old[key]!r} -> (absent)")
        elif isinstance(old[key], Mapping) and isinstance(new[key], Mapping):
            diffs.extend(_config_diff(old[key], new[key], prefix=f"{name}."))
        elif old[key] != new[key]:
            old_s, new_s = repr(old[key]), repr(new[key])
            if len(old_s) > 80 or len(new_s) > 80:
                diffs.append(f"{name}: differs")
            else:
                diffs.append(f"{name}: {old_s} -> {new_s}")
    return diffs


def _chunk_rows(row_shape: tuple[int, ...], itemsize: int, n_rows: int) -> int:
    row_bytes = max(1, int(np.prod(row_shape, dtype=np.int64)) * itemsize)
    return int(max(1, min(n_rows, _TARGET_CHUNK_BYTES // row_bytes)))


class FeatureStore:
    """A sharded Zarr v3 feature store with per-video status and resumable, part-wise writes."""

    def __init__(self, path: Path, group: Any, writable: bool):
        self.path = path
        self._group = group
        self._writable = writable
        meta = dict(group.attrs).get(_ROOT_KEY)
        if not isinstance(meta, Mapping) or "video_ids" not in meta:
            raise StoreError(f"{path} is a Zarr group but not a vqa-pipe feature store")
        if meta.get("format", FORMAT_VERSION) > FORMAT_VERSION:
            raise StoreError(
                f"{path} was written by a newer vqa-pipe (store format {meta['format']}); "
                f"this version reads format {FORMAT_VERSION}"
            )
        self._meta = dict(meta)
        self.video_ids: list[str] = list(meta["video_ids"])
        self.part_size: int = int(meta["part_size"])
        self._index = {vid: i for i, vid in enumerate(self.video_ids)}

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, path: str | Path, *, writable: bool = False) -> FeatureStore:
        """Open an existing store: for reading, or (``writable``) for writing parts.

        A writable open leaves the root metadata alone, so many processes may open the same
        store to write different parts; configure it with :meth:`create_or_open` first.
        """
        import zarr

        path = Path(path)
        if not (path / "zarr.json").is_file():
            raise StoreError(f"no feature store at {path} (run `vqa-pipe extract` first)")
        mode = "a" if writable else "r"
        group = zarr.open_group(str(path), mode=mode, use_consolidated=False)
        return cls(path, group, writable=writable)

    @classmethod
    def create_or_open(
        cls, path: str | Path, video_ids: Sequence[str], *, part_size: int = 32
    ) -> FeatureStore:
        """Open a store for writing, creating it if needed.

        An existing store must hold the same ``part_size``; its video ids must be a prefix of
        ``video_ids`` (videos appended to a manifest extend the store; the last, partly filled
        part is then redone). Anything else is refused with a message saying what differs.
        """
        import zarr

        path = Path(path)
        video_ids = [str(v) for v in video_ids]
        if len(set(video_ids)) != len(video_ids):
            dup = sorted({v for v in video_ids if video_ids.count(v) > 1})[:5]
            raise StoreError(f"duplicate video ids cannot go into a store: {dup}")
        if part_size < 1:
            raise StoreError(f"part_size must be >= 1, got {part_size}")
        if (path / "zarr.json").is_file():
            group = zarr.open_group(str(path), mode="a", use_consolidated=False)
            meta = dict(group.attrs).get(_ROOT_KEY)
            if not isinstance(meta, Mapping):
                raise StoreError(
                    f"{path} exists but is not a vqa-pipe feature store; refusing to touch it"
                )
            old_ids = list(meta["video_ids"])
            if int(meta["part_size"]) != part_size:
                raise StoreError(
                    f"{path} was made with part_size={meta['part_size']}, not {part_size}; "
                    "use the same part size or a new store"
                )
            if video_ids[: len(old_ids)] != old_ids:
                missing = [v for v in old_ids if v not in set(video_ids)]
                what = (
                    f"{len(missing)} of its videos are not in the manifest (e.g. {missing[:3]})"
                    if missing
                    else "the manifest lists its videos in another order"
                )
                raise StoreError(
                    f"{path} was made from another manifest: {what}. "
                    "Use a new store path for a different video list"
                )
            new_meta = dict(meta, video_ids=video_ids)
        else:
            if path.exists() and any(path.iterdir()):
                raise StoreError(
                    f"{path} exists and is not empty; refusing to create a store there"
                )
            path.parent.mkdir(parents=True, exist_ok=True)
            group = zarr.open_group(str(path), mode="w", zarr_format=3)
            new_meta = {
                "format": FORMAT_VERSION,
                "package_version": _package_version(),
                "part_size": part_size,
                "video_ids": video_ids,
                "branches": {},
            }
        # Rewriting the root attributes also drops stale consolidated metadata.
        group.attrs[_ROOT_KEY] = new_meta
        return cls(path, group, writable=True)

    # ------------------------------------------------------------------ config
    def branches(self) -> list[str]:
        """Names of the branches recorded in this store."""
        return list(self._meta.get("branches", {}))

    def branch_config(self, branch: str) -> dict:
        """The configuration a branch was extracted with."""
        try:
            return dict(self._meta["branches"][branch])
        except KeyError:
            raise StoreError(
                f"{self.path} has no '{branch}' features; it holds: {self.branches() or 'none'}"
            ) from None

    def ensure_branch(self, branch: str, config: Mapping) -> None:
        """Record a branch's configuration, or check it equals the one recorded."""
        self._require_writable()
        config = _jsonable(dict(config))
        branches = dict(self._meta.get("branches", {}))
        if branch in branches:
            diffs = _config_diff(branches[branch], config)
            if diffs:
                raise StoreError(
                    f"{self.path} holds '{branch}' features made with another configuration:\n  "
                    + "\n  ".join(diffs)
                    + "\nUse a new store path for a new configuration."
                )
            return
        branches[branch] = config
        self._meta["branches"] = branches
        self._group.attrs[_ROOT_KEY] = self._meta

    def put_branch_array(self, branch: str, name: str, data: np.ndarray) -> None:
        """Store a branch-wide array (e.g. the prompts' text embeddings) under ``meta/<branch>/``.

        Writing again must give the same values: a store never silently changes meaning.
        """
        self._require_writable()
        data = np.asarray(data)
        key = f"meta/{branch}/{name}"
        try:
            old = np.asarray(self._group[key][...])
        except KeyError:
            old = None
        if old is not None:
            if old.shape != data.shape or not np.allclose(old, data, atol=1e-4):
                raise StoreError(f"{self.path}: '{key}' already holds different values")
            return
        import zarr

        group = zarr.open_group(str(self.path), path=f"meta/{branch}", mode="a", zarr_format=3)
        self._write_array(group, name, data)

    def branch_array(self, branch: str, name: str) -> np.ndarray:
        """A branch-wide array written with :meth:`put_branch_array`."""
        try:
            return np.asarray(self._group[f"meta/{branch}/{name}"][...])
        except KeyError:
            raise StoreError(f"{self.path} has no '{name}' for '{branch}'") from None

    @property
    def random_weights(self) -> bool:
        """True when any branch was extracted with random (untrained) weights."""
        return any(bool(c.get("random_weights")) for c in self._meta.get("branches", {}).values())

    @property
    def meta(self) -> dict:
        """The store's root metadata (format, package version, part size, branches)."""
        return {k: v for k, v in self._meta.items() if k != "video_ids"}

    # ------------------------------------------------------------------ parts
    @property
    def n_parts(self) -> int:
        return math.ceil(len(self.video_ids) / self.part_size)

    def part_ids(self, part: int) -> list[str]:
        """Video ids of one part, in manifest order."""
        if not 0 <= part < self.n_parts:
            raise StoreError(f"part {part} out of range (store has {self.n_parts} parts)")
        return self.video_ids[part * self.part_size : (part + 1) * self.part_size]

    def part_of(self, video_id: str) -> int:
        try:
            return self._index[video_id] // self.part_size
        except KeyError:
            raise StoreError(f"video '{video_id}' is not in store {self.path}") from None

    @staticmethod
    def _part_name(part: int) -> str:
        return f"parts/p{part:06d}"

    def _branch_group(self, branch: str, part: int) -> Any | None:
        key = f"{self._part_name(part)}/{branch}"
        try:
            return self._group[key]
        except KeyError:
            return None

    def _part_status(self, branch: str, part: int) -> dict | None:
        group = self._branch_group(branch, part)
        if group is None:
            return None
        status = dict(group.attrs).get(_STATUS_KEY)
        if not status or list(status["video_ids"]) != self.part_ids(part):
            return None  # never finished, or written for another video list
        return status

    def part_complete(self, branch: str, part: int) -> bool:
        """True when the part was written whole for its current video list."""
        return self._part_status(branch, part) is not None

    def part_failed_ids(self, branch: str, part: int) -> list[str]:
        status = self._part_status(branch, part) or {"video_ids": [], "state": []}
        return [v for v, s in zip(status["video_ids"], status["state"]) if s == "failed"]

    def write_part(
        self, branch: str, part: int, results: Mapping[str, Mapping[str, np.ndarray] | str]
    ) -> None:
        """Write one part whole: arrays first, then the status that marks it complete.

        ``results`` maps every video id of the part to its arrays (axis 0 = rows of that
        video) or to a failure reason string.
        """
        import zarr

        self._require_writable()
        self.branch_config(branch)  # the branch must be registered first
        ids = self.part_ids(part)
        missing = [v for v in ids if v not in results]
        extra = [v for v in results if v not in set(ids)]
        if missing or extra:
            raise StoreError(
                f"part {part} of '{branch}': results missing {missing[:5]} / unexpected {extra[:5]}"
            )
        done = {v: r for v, r in results.items() if not isinstance(r, str)}
        names = sorted({name for arrays in done.values() for name in arrays})
        for vid, arrays in done.items():
            if sorted(arrays) != names:
                raise StoreError(
                    f"video '{vid}' in part {part} of '{branch}' gives arrays {sorted(arrays)}, "
                    f"others give {names}"
                )
            if _OFFSETS in arrays:
                raise StoreError(f"'{_OFFSETS}' is a reserved array name")
        rows, state, reason = [], [], []
        for vid in ids:
            result = results[vid]
            if isinstance(result, str):
                rows.append(0)
                state.append("failed")
                reason.append(result or "failed (no reason given)")
                continue
            counts = {len(np.asarray(a)) for a in result.values()}
            if len(counts) != 1:
                raise StoreError(
                    f"video '{vid}' in '{branch}': arrays disagree on row count {counts}"
                )
            rows.append(counts.pop())
            state.append("done")
            reason.append("")
        offsets = np.concatenate([[0], np.cumsum(rows)]).astype(np.int64)

        group = zarr.open_group(
            str(self.path), path=f"{self._part_name(part)}/{branch}", mode="a", zarr_format=3
        )
        group.attrs.pop(_STATUS_KEY, None)  # not complete until the end of this call
        for name in list(group.array_keys()):
            if name not in names and name != _OFFSETS:
                del group[name]
        self._write_array(group, _OFFSETS, offsets)
        for name in names:
            parts = [np.asarray(done[v][name]) for v in ids if v in done]
            shapes = {p.shape[1:] for p in parts}
            dtypes = {p.dtype for p in parts}
            if len(shapes) != 1 or len(dtypes) != 1:
                raise StoreError(
                    f"'{branch}/{name}' in part {part}: videos disagree on row shape/dtype "
                    f"{sorted(map(str, shapes))} {sorted(map(str, dtypes))}"
                )
            self._write_array(group, name, np.concatenate(parts, axis=0))
        group.attrs[_STATUS_KEY] = {
            "video_ids": ids,
            "state": state,
            "reason": reason,
            "rows": rows,
            "arrays": names,
        }

    @staticmethod
    def _write_array(group: Any, name: str, data: np.ndarray) -> None:
        data = np.ascontiguousarray(data)
        n = max(1, data.shape[0])
        chunk = (_chunk_rows(data.shape[1:], data.itemsize, n),) + tuple(data.shape[1:])
        shard = (math.ceil(n / chunk[0]) * chunk[0],) + tuple(data.shape[1:])
        chunk = tuple(max(1, c) for c in chunk)
        shard = tuple(max(1, s) for s in shard)
        array = group.create_array(
            name, shape=data.shape, dtype=data.dtype, chunks=chunk, shards=shard, overwrite=True
        )
        if data.size:
            array[...] = data

    # ------------------------------------------------------------------ reading
    def status(self, branch: str) -> dict[str, VideoStatus]:
        """Every video's state in a branch, in manifest order."""
        self.branch_config(branch)
        table = {vid: VideoStatus("pending") for vid in self.video_ids}
        for part in range(self.n_parts):
            status = self._part_status(branch, part)
            if status is None:
                continue
            for vid, st, why in zip(status["video_ids"], status["state"], status["reason"]):
                table[vid] = VideoStatus(st, why)
        return table

    def done_ids(self, branch: str) -> list[str]:
        """Ids of the videos with features in a branch, in manifest order."""
        return [v for v, s in self.status(branch).items() if s.state == "done"]

    def arrays(self, branch: str) -> dict[str, tuple[tuple[int, ...], str]]:
        """Array names of a branch with their per-row shape and dtype (from the first part)."""
        for part in range(self.n_parts):
            status = self._part_status(branch, part)
            if status and any(s == "done" for s in status["state"]):
                group = self._branch_group(branch, part)
                return {
                    name: (tuple(group[name].shape[1:]), str(group[name].dtype))
                    for name in status["arrays"]
                }
        return {}

    def _iter_parts(self, branch: str, array: str) -> Iterator[tuple[dict, Any, np.ndarray]]:
        self.branch_config(branch)
        found_any = False
        for part in range(self.n_parts):
            status = self._part_status(branch, part)
            if status is None or not any(s == "done" for s in status["state"]):
                continue
            found_any = True
            if array not in status["arrays"]:
                raise StoreError(
                    f"'{branch}' in {self.path} has no array '{array}'; it has {status['arrays']}"
                )
            group = self._branch_group(branch, part)
            yield status, group[array], np.asarray(group[_OFFSETS][...])
        if not found_any:
            return

    def read(
        self, branch: str, array: str, video_ids: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Rows of one array for each done video (all of them, or those asked for)."""
        wanted = None if video_ids is None else set(video_ids)
        if wanted is not None:
            unknown = [v for v in wanted if v not in self._index]
            if unknown:
                raise StoreError(f"videos not in store {self.path}: {sorted(unknown)[:5]}")
        out: dict[str, np.ndarray] = {}
        for status, arr, offsets in self._iter_parts(branch, array):
            pick = [
                i
                for i, (vid, st) in enumerate(zip(status["video_ids"], status["state"]))
                if st == "done" and (wanted is None or vid in wanted)
            ]
            if not pick:
                continue
            data = arr[int(offsets[pick[0]]) : int(offsets[pick[-1] + 1])]
            base = int(offsets[pick[0]])
            for i in pick:
                out[status["video_ids"][i]] = data[offsets[i] - base : offsets[i + 1] - base]
        order = self.video_ids if wanted is None else [v for v in self.video_ids if v in wanted]
        return {v: out[v] for v in order if v in out}

    def to_dask(self, branch: str, array: str) -> tuple[Any, dict[str, slice]]:
        """All rows of an array as one lazy dask array (a block per part), and each video's rows."""
        import dask.array as da

        blocks, slices, start = [], {}, 0
        for status, arr, offsets in self._iter_parts(branch, array):
            blocks.append(da.from_zarr(arr, chunks=arr.shards or arr.chunks))
            for i, (vid, st) in enumerate(zip(status["video_ids"], status["state"])):
                if st == "done":
                    slices[vid] = slice(start + int(offsets[i]), start + int(offsets[i + 1]))
            start += int(offsets[-1])
        if not blocks:
            raise StoreError(f"'{branch}' in {self.path} has no finished videos yet")
        return da.concatenate(blocks, axis=0), slices

    # ------------------------------------------------------------------ finishing
    def consolidate(self) -> None:
        """Consolidate metadata so plain zarr readers open the store in one read."""
        import zarr

        self._require_writable()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            zarr.consolidate_metadata(str(self.path))

    def _require_writable(self) -> None:
        if not self._writable:
            raise StoreError(f"{self.path} was opened read-only")
