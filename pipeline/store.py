"""The feature store: one Zarr v3 group per dataset and feature configuration.

Layout::

    store.zarr/
      zarr.json                         attrs["vqa_pipe"] = {format, package_version, part_size,
                                                             video_ids, branches: {name: config}}
      parts/p000012/<branch>/           attrs["status"] = {video_ids, state, reason, rows,
                                                           arrays, format}
      parts/p000012/<branch>/offsets    (V+1,) int64: row offsets of the part's videos
      parts/p000012/<branch>/<array>    rows of the part's videos, concatenated on axis 0
      meta/<branch>/<name>              branch-wide arrays (e.g. the prompts' text embeddings)

Videos are grouped into fixed *parts* (manifest order, ``part_size`` videos each). A part's
arrays are written whole by one writer, each as exactly one shard, so parallel writers never
share a shard. The branch group's ``status`` attribute is written last and marks the part
complete: a crash loses at most the parts in flight, which are redone on the next run.

What a reader can rely on (store format 2), checked on every read path (:meth:`read`,
:meth:`iter_rows`, :meth:`to_dask`) and, all of it, by ``vqa-pipe verify``:

* ``status.rows[i]`` is the number of rows video *i* occupies; ``offsets`` equals
  ``[0, cumsum(rows)]`` and every array of the part has ``offsets[-1]`` rows. A part whose
  offsets, shapes or status disagree is refused, never read misaligned.
* Every chunk is written, even an all-zero one, so a missing chunk file is damage, never
  zeros. Chunks are zstd frames with a content checksum and each shard index carries a
  crc32c: a flipped bit or a truncated file fails the read.
* Every error names the file and says how to fix it. A damaged video can be marked for redo
  (:meth:`mark_damaged`), after which ``vqa-pipe extract --retry-failed`` redoes it.

Format-1 stores (written before these guarantees) are read with the same layout checks; their
chunks carry no checksum and all-zero chunks were not written, which ``verify`` reports.

Plain zarr reads it (``zarr.open_group(path)["parts/p000000/semantic/frame_scores"]``);
:meth:`FeatureStore.to_dask` gives one lazy array over all parts.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import shutil
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from vqa_pipe.pipeline.store_files import (
    META_FILE,
    ArrayInfo,
    StoreError,
    array_info,
    read_direct,
    read_node,
    shard_chunks_present,
)

FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)
_ROOT_KEY = "vqa_pipe"
_STATUS_KEY = "status"
_OFFSETS = "offsets"
_STATES = ("done", "failed")
_TARGET_CHUNK_BYTES = 4 << 20
DAMAGED_PREFIX = "damaged: "

# The dtype each extracted or imported array is written with; others need only agree
# across parts.
EXPECTED_DTYPES: dict[str, str] = {
    "frame_scores": "float32",
    "window_embeddings": "float16",
    "frame_embeddings": "float32",
    "frame_tokens": "float16",
    "frame_times": "float32",
    "clip_maps": "float16",
    "clip_pooled": "float32",
    "features": "float32",
}

__all__ = [
    "DAMAGED_PREFIX",
    "FORMAT_VERSION",
    "FeatureStore",
    "PartStatus",
    "StoreError",
    "VideoStatus",
]


@dataclass(frozen=True)
class VideoStatus:
    """One video's state in one branch: ``done``, ``failed`` (with reason) or ``pending``."""

    state: str
    reason: str = ""


@dataclass(frozen=True)
class PartStatus:
    """The checked ``status`` of one part of one branch.

    ``rows[i]`` is the number of rows video *i* occupies in the part's arrays (0 for a video
    that failed when the part was written; a video marked damaged keeps its rows, unused).
    """

    part: int
    video_ids: list[str]
    state: list[str]
    reason: list[str]
    rows: list[int]
    arrays: list[str]
    format: int

    @property
    def offsets(self) -> np.ndarray:
        """The offsets the part's ``offsets`` array must hold."""
        return np.concatenate([[0], np.cumsum(self.rows, dtype=np.int64)]).astype(np.int64)

    def done(self) -> list[int]:
        return [i for i, s in enumerate(self.state) if s == "done"]

    def to_json(self) -> dict:
        return {
            "video_ids": list(self.video_ids),
            "state": list(self.state),
            "reason": list(self.reason),
            "rows": [int(r) for r in self.rows],
            "arrays": list(self.arrays),
            "format": self.format,
        }


def redo_hint(path: Path | str) -> str:
    """The sentence that tells a user how to repair damaged parts of a store."""
    return (
        f"run `vqa-pipe verify {path} --mark` to mark what is damaged for redo, then rerun the "
        "extraction with --retry-failed (or the import with --replace)"
    )


def _package_version() -> str:
    from vqa_pipe import __version__

    return __version__


def _jsonable(value: Any) -> Any:
    """Round-trip through JSON so configs compare the way they are stored."""
    return json.loads(json.dumps(value))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def config_differences(
    old: Mapping, new: Mapping, prefix: str = "", ignore: Sequence[str] = ()
) -> list[str]:
    """``key: old -> new`` for every key that differs between two JSON-like configurations
    (nested keys dotted; ``ignore``: top-level keys left out)."""
    diffs = []
    for key in sorted(set(old) | set(new), key=str):
        if not prefix and key in ignore:
            continue
        name = f"{prefix}{key}"
        if key not in old:
            diffs.append(f"{name}: (absent) -> {_short(new[key])}")
        elif key not in new:
            diffs.append(f"{name}: {_short(old[key])} -> (absent)")
        elif isinstance(old[key], Mapping) and isinstance(new[key], Mapping):
            diffs.extend(config_differences(old[key], new[key], prefix=f"{name}."))
        elif old[key] != new[key]:
            diffs.append(f"{name}: {_short(old[key])} -> {_short(new[key])}")
    return diffs


def store_identity(config: Mapping) -> dict:
    """What must agree for a store to be resumed or written to with a branch: its whole
    configuration, with the weights reduced to their identity (sha256, or the random seed:
    the checkpoint's file name and folder may differ) and informational keys dropped."""
    config = dict(config)
    config.pop("rescored_from", None)
    weights = config.get("weights")
    if isinstance(weights, Mapping):
        keep = ("source", "seed") if weights.get("source") == "random" else ("sha256",)
        config["weights"] = {k: weights.get(k) for k in keep}
    return config


def feature_definition(config: Mapping) -> dict:
    """What must agree for features of one branch, from two datasets' stores, to mean the same
    thing: :func:`store_identity` for extracted branches; for imported feature sets their
    name and width (the file is the data, not the definition)."""
    if config.get("kind") == "imported":
        return {k: config.get(k) for k in ("kind", "name", "n_features")}
    return store_identity(config)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _chunk_rows(row_shape: tuple[int, ...], itemsize: int, n_rows: int) -> int:
    row_bytes = max(1, int(np.prod(row_shape, dtype=np.int64)) * itemsize)
    return int(max(1, min(n_rows, _TARGET_CHUNK_BYTES // row_bytes)))


def parse_root(path: Path, node: Mapping | None) -> dict:
    """Check the store's root metadata (the ``vqa_pipe`` attribute of its ``zarr.json``)."""
    where = Path(path) / META_FILE
    fix = ("restore that file from a backup, or re-create the store (a new path, or "
           "`--on-config-change replace`)")
    if node is None:
        raise StoreError(f"no feature store at {path} (run `vqa-pipe extract` first)")
    if node.get("node_type") != "group":
        raise StoreError(f"{where} describes an array, not a vqa-pipe feature store")
    meta = node.get("attributes", {}).get(_ROOT_KEY)
    if meta is None:
        raise StoreError(f"{path} is a Zarr group but not a vqa-pipe feature store")
    if not isinstance(meta, Mapping):
        raise StoreError(f"{where}: '{_ROOT_KEY}' is not a mapping; {fix}")
    fmt = meta.get("format", 1)
    if not _is_int(fmt) or fmt < 1:
        raise StoreError(f"{where}: store format {fmt!r} is not a format number; {fix}")
    if fmt > FORMAT_VERSION:
        raise StoreError(
            f"{path} was written by a newer vqa-pipe (store format {fmt}); this version reads "
            f"formats {', '.join(map(str, READABLE_FORMATS))}: upgrade vqa-pipe"
        )
    part_size = meta.get("part_size")
    if not _is_int(part_size) or part_size < 1:
        raise StoreError(f"{where}: part_size {part_size!r} is not a positive integer; {fix}")
    ids = meta.get("video_ids")
    if not isinstance(ids, list) or not all(isinstance(v, str) for v in ids):
        raise StoreError(f"{where}: video_ids is not a list of names; {fix}")
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dup = sorted({v for v in ids if v in seen or seen.add(v)})[:5]
        raise StoreError(f"{where}: video_ids lists some videos twice ({dup}); {fix}")
    branches = meta.get("branches", {})
    if not isinstance(branches, Mapping) or not all(
        isinstance(k, str) and isinstance(v, Mapping) for k, v in branches.items()
    ):
        raise StoreError(f"{where}: 'branches' is not a mapping of configurations; {fix}")
    return dict(meta, format=fmt)


def parse_status(raw: Any, where: Path, part: int, part_ids: Sequence[str],
                 fix: str) -> PartStatus | None:
    """Check a part's raw ``status`` attribute; None when it was written for other videos."""
    if not isinstance(raw, Mapping):
        raise StoreError(
            f"{where}: the part status is a {type(raw).__name__}, not a mapping; {fix}"
        )
    fields = {}
    for key in ("video_ids", "state", "reason", "rows", "arrays"):
        value = raw.get(key)
        if not isinstance(value, list):
            raise StoreError(f"{where}: status '{key}' is missing or not a list; {fix}")
        fields[key] = value
    n = len(fields["video_ids"])
    if any(len(fields[k]) != n for k in ("state", "reason", "rows")):
        lengths = {k: len(fields[k]) for k in ("video_ids", "state", "reason", "rows")}
        raise StoreError(f"{where}: status lists disagree in length {lengths}; {fix}")
    if not all(isinstance(v, str) for v in fields["video_ids"] + fields["reason"]):
        raise StoreError(f"{where}: status video_ids/reason must be strings; {fix}")
    bad_state = [s for s in fields["state"] if s not in _STATES]
    if bad_state:
        raise StoreError(f"{where}: unknown video state {bad_state[0]!r} in status; {fix}")
    if not all(_is_int(r) and r >= 0 for r in fields["rows"]):
        raise StoreError(f"{where}: status rows must be non-negative integers; {fix}")
    arrays = fields["arrays"]
    if not all(isinstance(a, str) and a and "/" not in a and a != _OFFSETS for a in arrays) or (
        len(set(arrays)) != len(arrays)
    ):
        raise StoreError(f"{where}: status arrays {arrays!r} are not valid array names; {fix}")
    fmt = raw.get("format", 1)
    if not _is_int(fmt) or fmt not in READABLE_FORMATS:
        raise StoreError(f"{where}: part format {fmt!r} is not one this version reads; {fix}")
    if list(fields["video_ids"]) != list(part_ids):
        return None  # never finished for the current video list: the part is redone
    return PartStatus(part, list(fields["video_ids"]), list(fields["state"]),
                      list(fields["reason"]), [int(r) for r in fields["rows"]], list(arrays),
                      int(fmt))


def _decode_error(err: Exception) -> bool:
    import zarr.errors

    return isinstance(err, ValueError | RuntimeError | OSError | KeyError | TypeError
                      | zarr.errors.BaseZarrError)


def read_rows(info: ArrayInfo, start: int, stop: int, *, complete: bool, fix: str) -> np.ndarray:
    """Rows ``start:stop`` of a part array, refusing what a plain read would turn into data.

    ``complete``: every chunk must be in its shard (store format 2 writes all of them). A
    missing shard file is an error in any format: zarr would read it as zeros.
    """
    import zarr

    if stop <= start:
        return np.zeros((0,) + info.shape[1:], dtype=info.dtype)
    if info.direct:
        try:
            return read_direct(info, start, stop, complete=complete)
        except StoreError as err:
            raise StoreError(f"{err}; {fix}") from None
    for shard in info.shard_files():
        if not shard.is_file():
            raise StoreError(
                f"{shard} is missing: the rows it held would read as zeros; {fix}"
            )
        if complete:
            present = shard_chunks_present(info, shard)
            if present is not None and not present.all():
                raise StoreError(
                    f"{shard}: {int((~present).sum())} of its {present.size} chunks are missing "
                    f"(they would read as zeros); {fix}"
                )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            array = zarr.open_array(str(info.folder), mode="r", zarr_format=3)
            data = np.asarray(array[start:stop])
    except Exception as err:  # noqa: BLE001 - classified right below
        if not _decode_error(err) or isinstance(err, StoreError):
            raise
        what = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise StoreError(f"{info.folder}: its data fail to decode ({what}); {fix}") from None
    if data.shape != (stop - start,) + info.shape[1:]:
        raise StoreError(f"{info.folder}: read {data.shape} rows, expected "
                         f"{(stop - start,) + info.shape[1:]}; {fix}")
    return data


def _read_block(info: ArrayInfo, start: int, stop: int, complete: bool, fix: str) -> np.ndarray:
    """One dask block of :meth:`FeatureStore.to_dask` (module level so that it pickles)."""
    return read_rows(info, start, stop, complete=complete, fix=fix)


class FeatureStore:
    """A sharded Zarr v3 feature store with per-video status and resumable, part-wise writes."""

    def __init__(self, path: Path, group: Any, writable: bool, meta: Mapping | None = None):
        self.path = Path(path)
        self._group = group
        self._writable = writable
        if meta is None:
            meta = parse_root(self.path, {"node_type": "group",
                                          "attributes": dict(group.attrs)})
        self._meta = dict(meta)
        self.video_ids: list[str] = list(meta["video_ids"])
        self.part_size: int = int(meta["part_size"])
        self.format: int = int(meta["format"])
        self._index = {vid: i for i, vid in enumerate(self.video_ids)}

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, path: str | Path, *, writable: bool = False) -> FeatureStore:
        """Open an existing store: for reading, or (``writable``) for writing parts.

        A writable open leaves the root metadata alone, so many processes may open the same
        store to write different parts; configure it with :meth:`create_or_open` first.
        """
        path = Path(path)
        if not (path / META_FILE).is_file():
            raise StoreError(f"no feature store at {path} (run `vqa-pipe extract` first)")
        meta = parse_root(path, read_node(path, "restore it from a backup or re-create the store"))
        # Reading needs no zarr group: metadata and chunks are read from the files.
        group = cls._open_group(path, "a") if writable else None
        return cls(path, group, writable=writable, meta=meta)

    @staticmethod
    def _open_group(path: Path, mode: str) -> Any:
        import zarr

        with _writing(path, "open the store for writing"):
            return zarr.open_group(str(path), mode=mode, use_consolidated=False)

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
        if isinstance(part_size, bool) or not isinstance(part_size, int | np.integer) or (
            part_size < 1
        ):
            raise StoreError(f"part_size must be an integer >= 1, got {part_size!r}")
        part_size = int(part_size)
        if (path / META_FILE).is_file():
            node = read_node(path, "restore it from a backup or use a new store path")
            if node is None or _ROOT_KEY not in node.get("attributes", {}):
                raise StoreError(
                    f"{path} exists but is not a vqa-pipe feature store; refusing to touch it"
                )
            meta = parse_root(path, node)
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
            group = cls._open_group(path, "a")
            new_meta = dict(meta, video_ids=video_ids)
        else:
            if path.exists() and (not path.is_dir() or any(path.iterdir())):
                raise StoreError(
                    f"{path} exists and is not empty; refusing to create a store there"
                )
            with _writing(path, "create the store"):
                path.parent.mkdir(parents=True, exist_ok=True)
                group = zarr.open_group(str(path), mode="w", zarr_format=3)
            new_meta = {
                "format": FORMAT_VERSION,
                "package_version": _package_version(),
                "part_size": part_size,
                "video_ids": video_ids,
                "branches": {},
            }
        store = cls(path, group, writable=True, meta=new_meta)
        # Rewriting the root attributes also drops stale consolidated metadata.
        store._write_root()
        return store

    def _write_root(self) -> None:
        with _writing(self.path / META_FILE, "write the store's root metadata"):
            self._group.attrs[_ROOT_KEY] = self._meta

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
            diffs = config_differences(store_identity(branches[branch]), store_identity(config))
            if diffs:
                raise StoreError(
                    f"{self.path} holds '{branch}' features made with another configuration:\n  "
                    + "\n  ".join(diffs)
                    + "\nUse a new store path for a new configuration."
                )
            return
        branches[branch] = config
        self._meta["branches"] = branches
        self._write_root()

    def remove_branch(self, branch: str) -> None:
        """Delete a branch: its parts, its branch-wide arrays and its configuration.

        The parts go first, so a crash half-way leaves a branch whose remaining parts are
        still consistent, never a configuration that claims parts written for another one.
        """
        self._require_writable()
        self.branch_config(branch)
        with _writing(self.path, f"remove branch '{branch}'"):
            for part in range(self.n_parts):
                folder = self.part_folder(branch, part)
                if folder.exists():
                    shutil.rmtree(folder)
            meta_folder = self.path / "meta" / branch
            if meta_folder.exists():
                shutil.rmtree(meta_folder)
        branches = dict(self._meta.get("branches", {}))
        branches.pop(branch, None)
        self._meta["branches"] = branches
        self._write_root()

    def put_branch_array(self, branch: str, name: str, data: np.ndarray) -> None:
        """Store a branch-wide array (e.g. the prompts' text embeddings) under ``meta/<branch>/``.

        Writing again must give the same values: a store never silently changes meaning.
        """
        import zarr

        self._require_writable()
        data = np.asarray(data)
        key = f"meta/{branch}/{name}"
        if (self.path / key / META_FILE).is_file():
            old = self.branch_array(branch, name)
            if old.shape != data.shape or not np.allclose(old, data, atol=1e-4):
                raise StoreError(f"{self.path}: '{key}' already holds different values")
            return
        with _writing(self.path / key, "write a branch array"):
            group = zarr.open_group(str(self.path), path=f"meta/{branch}", mode="a",
                                    zarr_format=3)
            self._write_array(group, name, data)

    def branch_array(self, branch: str, name: str) -> np.ndarray:
        """A branch-wide array written with :meth:`put_branch_array` (checked like part arrays)."""
        folder = self.path / "meta" / branch / name
        if not (folder / META_FILE).is_file():
            raise StoreError(f"{self.path} has no '{name}' for '{branch}'")
        fix = f"re-create the store's '{branch}' branch (a new store path)"
        info = array_info(folder, fix)
        return read_rows(info, 0, info.rows, complete=self.format >= 2, fix=fix)

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

    def set_part_sources(self, part: int, sources: Mapping[str, Mapping]) -> None:
        """Record the fingerprints of the source files a part was extracted from (advisory:
        an extraction compares them to notice a video that changed under the same id)."""
        import zarr

        self._require_writable()
        group = zarr.open_group(str(self.path), path=self._part_name(part), mode="a",
                                zarr_format=3)
        group.attrs["sources"] = {str(k): dict(v) for k, v in sources.items()}

    def part_sources(self, part: int) -> dict[str, dict]:
        """The fingerprints recorded by :meth:`set_part_sources` ({} when none)."""
        node = read_node(self.path / self._part_name(part), "rerun the extraction")
        sources = (node or {}).get("attributes", {}).get("sources", {})
        return dict(sources) if isinstance(sources, dict) else {}

    def part_folder(self, branch: str, part: int) -> Path:
        """The folder of one part of one branch."""
        return self.path / self._part_name(part) / branch

    def part_status(self, branch: str, part: int) -> PartStatus | None:
        """A part's checked status; None while the part is not complete (it will be redone).

        Raises:
            StoreError: the status exists but is malformed (naming the file and the fix).
        """
        folder = self.part_folder(branch, part)
        node = read_node(folder, redo_hint(self.path))
        if node is None:
            return None
        if node["node_type"] != "group":
            raise StoreError(f"{folder / META_FILE} is an array where a part group belongs; "
                             f"{redo_hint(self.path)}")
        raw = node.get("attributes", {}).get(_STATUS_KEY)
        if raw is None:
            return None
        return parse_status(raw, folder / META_FILE, part, self.part_ids(part),
                            redo_hint(self.path))

    def part_complete(self, branch: str, part: int) -> bool:
        """True when the part was written whole for its current video list."""
        return self.part_status(branch, part) is not None

    def part_failed_ids(self, branch: str, part: int) -> list[str]:
        status = self.part_status(branch, part)
        if status is None:
            return []
        return [v for v, s in zip(status.video_ids, status.state) if s == "failed"]

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
            bad = [a for a in arrays if not a or "/" in a]
            if bad:
                raise StoreError(f"video '{vid}' in '{branch}': bad array names {bad}")
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
        stacked = {}
        for name in names:
            parts = [np.asarray(done[v][name]) for v in ids if v in done]
            shapes = {p.shape[1:] for p in parts}
            dtypes = {p.dtype for p in parts}
            if len(shapes) != 1 or len(dtypes) != 1:
                raise StoreError(
                    f"'{branch}/{name}' in part {part}: videos disagree on row shape/dtype "
                    f"{sorted(map(str, shapes))} {sorted(map(str, dtypes))}"
                )
            stacked[name] = np.concatenate(parts, axis=0)

        folder = self.part_folder(branch, part)
        with _writing(folder, f"write part {part} of '{branch}'"):
            group = zarr.open_group(
                str(self.path), path=f"{self._part_name(part)}/{branch}", mode="a", zarr_format=3
            )
            group.attrs.pop(_STATUS_KEY, None)  # not complete until the end of this call
            for name in list(group.array_keys()):
                if name not in names and name != _OFFSETS:
                    del group[name]
            self._write_array(group, _OFFSETS, offsets)
            for name in names:
                self._write_array(group, name, stacked.pop(name))
            status = PartStatus(part, ids, state, reason, rows, names, FORMAT_VERSION)
            group.attrs[_STATUS_KEY] = status.to_json()

    @staticmethod
    def _write_array(group: Any, name: str, data: np.ndarray) -> None:
        from zarr.codecs import ZstdCodec

        data = np.ascontiguousarray(data)
        n = max(1, data.shape[0]) if data.ndim else 1
        row_shape = tuple(data.shape[1:])
        chunk = (_chunk_rows(row_shape, data.itemsize, n),) + row_shape
        shard = (math.ceil(n / chunk[0]) * chunk[0],) + row_shape
        chunk = tuple(max(1, c) for c in chunk)
        shard = tuple(max(1, s) for s in shard)
        array = group.create_array(
            name, shape=data.shape, dtype=data.dtype, chunks=chunk, shards=shard,
            compressors=ZstdCodec(level=0, checksum=True),
            config={"write_empty_chunks": True}, overwrite=True,
        )
        if data.size:
            array[...] = data

    def mark_damaged(self, branch: str, video_ids: Iterable[str], reason: str) -> list[int]:
        """Mark videos of a branch as failed so that a retry redoes them; returns the parts.

        A video keeps its rows (unused) and gets the reason ``"damaged: <reason>"``: the
        extract stage's ``--retry-failed`` then decodes it again and rewrites its part whole.
        A part whose status cannot be read is reset (all its videos pending, the part redone
        on the next run). Consolidated metadata is dropped, so plain zarr readers see this.
        """
        import zarr

        self._require_writable()
        self.branch_config(branch)
        by_part: dict[int, set[str]] = {}
        for vid in video_ids:
            by_part.setdefault(self.part_of(vid), set()).add(vid)
        touched = []
        for part, ids in sorted(by_part.items()):
            folder = self.part_folder(branch, part)
            try:
                status = self.part_status(branch, part)
            except StoreError:
                self._reset_part(branch, part)
                touched.append(part)
                continue
            if status is None:
                continue  # pending already: the next run writes it
            state, why = list(status.state), list(status.reason)
            for i, vid in enumerate(status.video_ids):
                if vid in ids:
                    state[i] = "failed"
                    why[i] = DAMAGED_PREFIX + reason
            new = replace(status, state=state, reason=why)
            with _writing(folder, f"mark part {part} of '{branch}'"):
                group = zarr.open_group(str(self.path), path=f"{self._part_name(part)}/{branch}",
                                        mode="a", zarr_format=3)
                group.attrs[_STATUS_KEY] = new.to_json()
            touched.append(part)
        if touched:
            self._write_root()  # drops consolidated metadata that still shows the old status
        return touched

    def _reset_part(self, branch: str, part: int) -> None:
        """Make a part with unreadable metadata pending: its group keeps no status."""
        import zarr

        folder = self.part_folder(branch, part)
        with _writing(folder, f"reset part {part} of '{branch}'"):
            meta_file = folder / META_FILE
            try:
                node = read_node(folder, "")
            except StoreError:
                node = None
                meta_file.unlink()
            if node is not None and node.get("node_type") != "group":
                meta_file.unlink()
            group = zarr.open_group(str(self.path), path=f"{self._part_name(part)}/{branch}",
                                    mode="a", zarr_format=3)
            group.attrs.pop(_STATUS_KEY, None)

    # ------------------------------------------------------------------ reading
    def status(self, branch: str) -> dict[str, VideoStatus]:
        """Every video's state in a branch, in manifest order."""
        self.branch_config(branch)
        table = {vid: VideoStatus("pending") for vid in self.video_ids}
        for part in range(self.n_parts):
            status = self.part_status(branch, part)
            if status is None:
                continue
            for vid, st, why in zip(status.video_ids, status.state, status.reason):
                table[vid] = VideoStatus(st, why)
        return table

    def done_ids(self, branch: str) -> list[str]:
        """Ids of the videos with features in a branch, in manifest order."""
        return [v for v, s in self.status(branch).items() if s.state == "done"]

    def arrays(self, branch: str) -> dict[str, tuple[tuple[int, ...], str]]:
        """Array names of a branch with their per-row shape and dtype (from the first part)."""
        self.branch_config(branch)
        for part in range(self.n_parts):
            status = self.part_status(branch, part)
            if status and status.done():
                out = {}
                for name in status.arrays:
                    info = self.part_array_info(branch, part, name)
                    out[name] = (tuple(info.shape[1:]), str(info.dtype))
                return out
        return {}

    def part_array_info(self, branch: str, part: int, name: str) -> ArrayInfo:
        """The checked metadata of one array of one part."""
        folder = self.part_folder(branch, part) / name
        if not (folder / META_FILE).is_file():
            raise StoreError(
                f"{folder} is missing: part {part} of '{branch}' lists array '{name}' in its "
                f"status; {redo_hint(self.path)}"
            )
        return array_info(folder, redo_hint(self.path))

    def part_offsets(self, branch: str, status: PartStatus) -> np.ndarray:
        """A part's offsets, checked against its status (one row count per video)."""
        fix = redo_hint(self.path)
        folder = self.part_folder(branch, status.part) / _OFFSETS
        if not (folder / META_FILE).is_file():
            raise StoreError(f"{folder} is missing; {fix}")
        info = array_info(folder, fix)
        n = len(status.video_ids) + 1
        if info.dtype.kind not in "iu":
            raise StoreError(f"{folder}: offsets have dtype {info.dtype}, not an integer; {fix}")
        if info.shape != (n,):
            raise StoreError(
                f"{folder}: offsets have shape {info.shape}, expected ({n},) for the part's "
                f"{n - 1} videos; {fix}"
            )
        offsets = read_rows(info, 0, n, complete=status.format >= 2, fix=fix).astype(np.int64)
        expected = status.offsets
        if not np.array_equal(offsets, expected):
            bad = int(np.flatnonzero(offsets != expected)[0])
            raise StoreError(
                f"{folder}: offsets {offsets[max(0, bad - 1):bad + 2].tolist()}... disagree "
                f"with the row counts in the part status (expected "
                f"{expected[max(0, bad - 1):bad + 2].tolist()} at {max(0, bad - 1)}); {fix}"
            )
        return offsets

    def checked_array(self, branch: str, status: PartStatus, name: str,
                      offsets: np.ndarray, seen: dict) -> ArrayInfo:
        """An array's metadata, checked against the part's offsets and the row shape and
        dtype in ``seen`` (name -> ((row shape, dtype), folder); the first part read sets it)."""
        fix = redo_hint(self.path)
        if name not in status.arrays:
            raise StoreError(
                f"'{branch}' in {self.path} has no array '{name}'; it has {status.arrays}"
            )
        info = self.part_array_info(branch, status.part, name)
        if not info.shape or info.shape[0] != int(offsets[-1]):
            raise StoreError(
                f"{info.folder}: {info.shape[0] if info.shape else 0} rows, but the part's "
                f"offsets say {int(offsets[-1])}; {fix}"
            )
        expected_dtype = EXPECTED_DTYPES.get(name)
        if expected_dtype is not None and info.dtype != np.dtype(expected_dtype):
            raise StoreError(f"{info.folder}: dtype {info.dtype}, expected {expected_dtype}; {fix}")
        row = (tuple(info.shape[1:]), info.dtype)
        first = seen.setdefault(name, (row, info.folder))
        if first[0] != row:
            raise StoreError(
                f"{info.folder}: rows of shape {row[0]} {row[1]}, but {first[1]} has "
                f"{first[0][0]} {first[0][1]}; {fix}"
            )
        return info

    def _done_runs(self, status: PartStatus, wanted: set[str] | None) -> list[list[int]]:
        """Consecutive wanted done videos of a part (each run is one contiguous read)."""
        runs: list[list[int]] = []
        prev = -2
        for i in status.done():
            if wanted is not None and status.video_ids[i] not in wanted:
                continue
            if i == prev + 1 and runs:
                runs[-1].append(i)
            else:
                runs.append([i])
            prev = i
        return runs

    def _wanted_parts(self, video_ids: Sequence[str] | None) -> tuple[list[int], set | None]:
        if video_ids is None:
            return list(range(self.n_parts)), None
        wanted = set(video_ids)
        unknown = [v for v in wanted if v not in self._index]
        if unknown:
            raise StoreError(f"videos not in store {self.path}: {sorted(unknown)[:5]}")
        return sorted({self._index[v] // self.part_size for v in wanted}), wanted

    def _checked_part_runs(
        self, branch: str, array: str, parts: Iterable[int], wanted: set[str] | None
    ) -> Iterator[tuple[PartStatus, np.ndarray, Any, list[list[int]]]]:
        """For each part with done (and wanted) videos: its status, its offsets and the array's
        info, both checked against the status, and the runs of done videos to read."""
        seen: dict = {}
        for part in parts:
            status = self.part_status(branch, part)
            if status is None:
                continue
            runs = self._done_runs(status, wanted)
            if not runs:
                continue
            offsets = self.part_offsets(branch, status)
            yield status, offsets, self.checked_array(branch, status, array, offsets, seen), runs

    def iter_rows(
        self, branch: str, array: str, video_ids: Sequence[str] | None = None
    ) -> Iterator[tuple[str, np.ndarray]]:
        """Yield ``(video_id, rows)`` for each done video (all, or those asked for).

        One pass in manifest order: each part's offsets are checked against its status and
        the array's shape, then only the rows of the wanted videos are read, one contiguous
        read per run of them. Linear in the number of parts; at most one part is in memory.
        """
        self.branch_config(branch)
        parts, wanted = self._wanted_parts(video_ids)
        fix = redo_hint(self.path)
        for status, offsets, info, runs in self._checked_part_runs(branch, array, parts, wanted):
            for run in runs:
                lo, hi = int(offsets[run[0]]), int(offsets[run[-1] + 1])
                data = read_rows(info, lo, hi, complete=status.format >= 2, fix=fix)
                for i in run:
                    yield status.video_ids[i], data[offsets[i] - lo : offsets[i + 1] - lo]

    def read(
        self, branch: str, array: str, video_ids: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Rows of one array for each done video (all of them, or those asked for)."""
        return dict(self.iter_rows(branch, array, video_ids))

    def to_dask(self, branch: str, array: str) -> tuple[Any, dict[str, slice]]:
        """All rows of an array as one lazy dask array, and each done video's rows in it.

        Building it checks every part's offsets and shapes (small reads); computing a block
        reads one run of done videos of one part with the same checks as :meth:`read`.
        """
        import dask
        import dask.array as da

        self.branch_config(branch)
        fix = redo_hint(self.path)
        blocks, slices, start = [], {}, 0
        parts = range(self.n_parts)
        for status, offsets, info, runs in self._checked_part_runs(branch, array, parts, None):
            complete = status.format >= 2
            for run in runs:
                lo, hi = int(offsets[run[0]]), int(offsets[run[-1] + 1])
                block = dask.delayed(_read_block, pure=True)(info, lo, hi, complete, fix)
                blocks.append(da.from_delayed(block, (hi - lo,) + info.shape[1:], info.dtype))
                for i in run:
                    vid = status.video_ids[i]
                    slices[vid] = slice(start + int(offsets[i]) - lo,
                                        start + int(offsets[i + 1]) - lo)
                start += hi - lo
        if not blocks:
            raise StoreError(f"'{branch}' in {self.path} has no finished videos yet")
        return da.concatenate(blocks, axis=0), slices

    # ------------------------------------------------------------------ finishing
    def drop_consolidated(self) -> None:
        """Remove consolidated metadata (plain zarr readers then read each node's own)."""
        self._require_writable()
        self._write_root()

    def consolidate(self) -> None:
        """Consolidate metadata so plain zarr readers open the store in one read."""
        import zarr

        self._require_writable()
        with _writing(self.path / META_FILE, "consolidate the metadata"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                zarr.consolidate_metadata(str(self.path))

    def _require_writable(self) -> None:
        if not self._writable:
            raise StoreError(f"{self.path} was opened read-only")


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT) if hasattr(errno, "EDQUOT") else (errno.ENOSPC,)
_NO_RIGHTS = (errno.EACCES, errno.EPERM, errno.EROFS)


@contextlib.contextmanager
def _writing(target: Path, what: str) -> Iterator[None]:
    """Turn an OS error while writing into one StoreError naming the path and the fix."""
    try:
        yield
    except StoreError:
        raise
    except OSError as err:
        name = err.filename or target
        if err.errno in _NO_SPACE:
            fix = (f"free space on the disk holding {target} (or write the store elsewhere) and "
                   "rerun: finished parts are kept, the part in flight is redone")
        elif err.errno in _NO_RIGHTS:
            fix = "make it writable or choose another output path"
        else:
            fix = "check the path and rerun"
        raise StoreError(
            f"cannot {what} at {target}: {err.strerror or err} ({name}); {fix}"
        ) from None
