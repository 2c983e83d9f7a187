"""The feature store's files, read directly: node metadata, shard indexes and chunks.

A store of 35,000 videos in parts of 32 has over a thousand part groups; going through
zarr's asynchronous machinery costs a few milliseconds per array (more on a busy machine),
which is most of the time of a table load. This module reads what the store writes, by the
Zarr v3 specification: node metadata (``zarr.json``), the ``sharding_indexed`` codec with its
index at the end of the shard (little-endian ``uint64`` offset/length pairs, ``2**64-1`` for an
absent chunk, then a ``crc32c``), inner chunks encoded ``bytes`` (little-endian) then ``zstd``.
Each chunk is read with one ``pread``-style call and decoded in the calling thread. An array
written any other way (:attr:`ArrayInfo.direct` is False) is read by zarr instead; the tests
compare both readers on the same arrays.

Every error is a :class:`StoreError` naming the file that is wrong.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from vqa_pipe.pipeline.errors import VqaPipeError

META_FILE = "zarr.json"
_EMPTY = np.uint64(2**64 - 1)


class StoreError(VqaPipeError):
    """A feature store is missing, malformed, or does not match what was asked of it."""


def read_node(folder: Path, fix: str) -> dict | None:
    """The metadata of the node in ``folder``; None when it has none (never written).

    Unreadable JSON or JSON that is not a Zarr v3 node is a :class:`StoreError` naming the
    file and ending with ``fix``.
    """
    path = Path(folder) / META_FILE
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise StoreError(f"{path}: cannot read it ({err.strerror or err}); {fix}") from None
    try:
        node = json.loads(text)
    except (ValueError, UnicodeDecodeError) as err:
        raise StoreError(f"{path} is not valid JSON ({err}); {fix}") from None
    if not isinstance(node, dict) or node.get("zarr_format") != 3:
        raise StoreError(f"{path} is not Zarr v3 node metadata; {fix}")
    if node.get("node_type") not in ("group", "array"):
        raise StoreError(f"{path} has node_type {node.get('node_type')!r}; {fix}")
    if not isinstance(node.get("attributes", {}), dict):
        raise StoreError(f"{path}: 'attributes' is not a mapping; {fix}")
    return node


@dataclass(frozen=True)
class ArrayInfo:
    """What a part array's ``zarr.json`` says, checked for the things readers rely on."""

    folder: Path
    shape: tuple[int, ...]
    dtype: np.dtype
    shard_shape: tuple[int, ...] | None  # None: not sharded
    chunk_shape: tuple[int, ...]  # inner chunks (the unit of reading)
    checksummed: bool  # chunk payloads carry a checksum zarr verifies on read
    index_layout: bool  # the shard index is at the end, as bytes + crc32c: we can read it
    direct: bool = False  # read_direct can decode it (our layout: rows-only chunks, zstd)
    fill_value: float | int = 0

    @property
    def rows(self) -> int:
        return self.shape[0] if self.shape else 0

    def shard_files(self) -> list[Path]:
        """The files of all shards (or chunks, when not sharded), default key encoding."""
        outer = self.shard_shape or self.chunk_shape
        grid = [max(1, math.ceil(s / c)) if s else 0 for s, c in zip(self.shape, outer)]
        if not self.shape:
            return [self.folder / "c"]
        if 0 in grid:
            return []
        coords = np.indices(grid).reshape(len(grid), -1).T
        return [self.folder.joinpath("c", *map(str, c)) for c in coords]

    @property
    def inner_per_shard(self) -> int:
        outer = self.shard_shape or self.chunk_shape
        return int(np.prod([o // c for o, c in zip(outer, self.chunk_shape)], dtype=np.int64))


def _codec_named(codecs: Any, name: str) -> dict | None:
    if isinstance(codecs, list):
        for codec in codecs:
            if isinstance(codec, dict) and codec.get("name") == name:
                return codec
    return None


def array_info(folder: Path, fix: str) -> ArrayInfo:
    """Read and check an array's metadata: shape, a plain numeric dtype, regular chunks."""
    folder = Path(folder)
    node = read_node(folder, fix)
    where = folder / META_FILE
    if node is None:
        raise StoreError(f"{where} is missing; {fix}")
    if node["node_type"] != "array":
        raise StoreError(f"{where} is a group where an array belongs; {fix}")
    shape = node.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape
    ):
        raise StoreError(f"{where}: shape {shape!r} is not a list of sizes; {fix}")
    data_type = node.get("data_type")
    try:
        if not isinstance(data_type, str):
            raise TypeError(data_type)
        dtype = np.dtype(data_type)
        if dtype.kind not in "biuf" or dtype.fields is not None:
            raise TypeError(data_type)
    except TypeError:
        raise StoreError(
            f"{where}: data_type {data_type!r} is not a plain numeric type; {fix}"
        ) from None
    grid = node.get("chunk_grid", {})
    outer = grid.get("configuration", {}).get("chunk_shape") if isinstance(grid, dict) else None
    if not isinstance(outer, list) or len(outer) != len(shape) or not all(
        isinstance(c, int) and c > 0 for c in outer
    ):
        raise StoreError(f"{where}: chunk_grid {grid!r} does not fit shape {shape}; {fix}")
    encoding = node.get("chunk_key_encoding", {})
    if not (isinstance(encoding, dict) and encoding.get("name") == "default"
            and encoding.get("configuration", {}).get("separator", "/") == "/"):
        raise StoreError(f"{where}: unexpected chunk_key_encoding {encoding!r}; {fix}")
    codecs = node.get("codecs")
    sharding = _codec_named(codecs, "sharding_indexed")
    if sharding is not None:
        conf = sharding.get("configuration", {})
        inner = conf.get("chunk_shape")
        if not isinstance(inner, list) or len(inner) != len(shape) or not all(
            isinstance(c, int) and c > 0 and o % c == 0 for c, o in zip(inner, outer)
        ):
            raise StoreError(f"{where}: shard chunk_shape {inner!r} does not divide "
                             f"the shard shape {outer}; {fix}")
        inner_codecs = conf.get("codecs")
        index_codecs = conf.get("index_codecs")
        index_layout = (
            conf.get("index_location", "end") == "end"
            and isinstance(index_codecs, list) and len(index_codecs) == 2
            and _codec_named(index_codecs[:1], "bytes") is not None
            and index_codecs[0].get("configuration", {}).get("endian", "little") == "little"
            and _codec_named(index_codecs[1:], "crc32c") is not None
        )
        shard_shape: tuple[int, ...] | None = tuple(outer)
        chunk_shape = tuple(inner)
    else:
        inner_codecs, index_layout = codecs, False
        shard_shape, chunk_shape = None, tuple(outer)
    zstd = _codec_named(inner_codecs, "zstd")
    checksummed = bool(
        _codec_named(inner_codecs, "crc32c") is not None
        or (zstd is not None and zstd.get("configuration", {}).get("checksum") is True)
    )
    fill = _fill_value(node.get("fill_value"), dtype)
    direct = bool(
        index_layout and fill is not None and len(shape) >= 1
        and isinstance(inner_codecs, list) and len(inner_codecs) == 2
        and _codec_named(inner_codecs[:1], "bytes") is not None
        and (inner_codecs[0].get("configuration", {}).get("endian", "little") == "little"
             or dtype.itemsize == 1)
        and zstd is inner_codecs[1]
        and tuple(chunk_shape[1:]) == tuple(shape[1:])
        and shard_shape is not None and tuple(shard_shape[1:]) == tuple(shape[1:])
    )
    return ArrayInfo(folder, tuple(shape), dtype, shard_shape, chunk_shape, checksummed,
                     index_layout, direct, fill if fill is not None else 0)


def _fill_value(value: Any, dtype: np.dtype) -> float | int | None:
    """A JSON fill value as a number (None when it is not a plain one)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float):
        return value
    if dtype.kind == "f" and value in ("NaN", "Infinity", "-Infinity"):
        return float(value.replace("Infinity", "inf"))
    return None


def shard_index(info: ArrayInfo, shard: Path, fh: Any = None) -> np.ndarray | None:
    """A shard's chunk index, ``(n, 2)`` offset/length pairs in C order; None if unreadable
    by us (not sharded, or another index layout). ``fh``: the shard, already open.

    Raises :class:`StoreError` when the file is shorter than its index, the index fails its
    crc32c, or it points past the data (a truncated or overwritten shard).
    """
    if info.shard_shape is None or not info.index_layout:
        return None
    if fh is None:
        try:
            with open(shard, "rb") as own:
                return shard_index(info, shard, own)
        except OSError as err:
            raise StoreError(f"{shard}: cannot read it ({err.strerror or err})") from None
    n = info.inner_per_shard
    size = 16 * n + 4
    total = fh.seek(0, 2)
    if total < size:
        raise StoreError(
            f"{shard} is truncated ({total} bytes, shorter than its {size}-byte index)"
        )
    fh.seek(total - size)
    tail = fh.read(size)
    import google_crc32c  # a dependency of zarr (its crc32c codec)

    crc = np.frombuffer(tail[-4:], dtype="<u4")[0]
    if np.uint32(google_crc32c.value(tail[:-4])) != crc:
        raise StoreError(f"{shard}: its chunk index fails its checksum (truncated or overwritten)")
    index = np.frombuffer(tail[:-4], dtype="<u8").reshape(n, 2)
    present = index[:, 0] != _EMPTY
    if present.any():
        ends = index[present, 0] + index[present, 1]
        if int(ends.max()) > total - size:
            raise StoreError(f"{shard}: its index points past the end of the data (truncated)")
    return index


def shard_chunks_present(info: ArrayInfo, shard: Path) -> np.ndarray | None:
    """Which inner chunks a shard's index lists (C order); None if we cannot read the index."""
    index = shard_index(info, shard)
    return None if index is None else index[:, 0] != _EMPTY


def read_direct(info: ArrayInfo, start: int, stop: int, *, complete: bool) -> np.ndarray:
    """Rows ``start:stop`` of an array that :attr:`ArrayInfo.direct` says we can decode.

    Only the chunks holding those rows are read. A missing shard file is a
    :class:`StoreError`; a chunk absent from its shard's index is one too when ``complete``
    (store format 2 writes every chunk), else it reads as the fill value, as zarr would.
    """
    from numcodecs.zstd import Zstd

    rows, c0, s0 = info.shape[0], info.chunk_shape[0], (info.shard_shape or info.chunk_shape)[0]
    if not 0 <= start <= stop <= rows:
        raise ValueError(f"rows {start}:{stop} outside {info.folder} ({rows} rows)")
    row_shape = info.shape[1:]
    dtype = info.dtype.newbyteorder("<")
    chunk_items = c0 * int(np.prod(row_shape, dtype=np.int64))
    out = np.empty((stop - start,) + row_shape, dtype=info.dtype)
    codec = Zstd()
    for shard_no in range(start // s0, (stop - 1) // s0 + 1) if stop > start else ():
        shard = info.folder.joinpath("c", str(shard_no), *("0" for _ in row_shape))
        base = shard_no * s0
        lo, hi = max(start, base), min(stop, base + s0, rows)  # rows wanted from this shard
        try:
            fh = open(shard, "rb")
        except FileNotFoundError:
            raise StoreError(f"{shard} is missing: the rows it held would read as zeros") from None
        except OSError as err:
            raise StoreError(f"{shard}: cannot read it ({err.strerror or err})") from None
        with fh:
            index = shard_index(info, shard, fh)
            for c in range((lo - base) // c0, (hi - 1 - base) // c0 + 1):
                c_lo = base + c * c0  # first row of the chunk
                a, b = max(lo, c_lo), min(hi, c_lo + c0)
                dst = out[a - start : b - start]
                offset, nbytes = (int(x) for x in index[c])
                if offset == int(_EMPTY):
                    if complete:
                        raise StoreError(
                            f"{shard}: chunk {c} is missing from its index (it would read as "
                            "zeros)"
                        )
                    dst[...] = info.fill_value
                    continue
                fh.seek(offset)
                raw = fh.read(nbytes)
                if len(raw) != nbytes:
                    raise StoreError(f"{shard}: chunk {c} is cut short (truncated file)")
                try:
                    decoded = codec.decode(raw)
                except Exception as err:  # noqa: BLE001 - any decoder failure is damage
                    raise StoreError(
                        f"{shard}: chunk {c} fails to decode ({err}): bit rot or an "
                        "overwritten file"
                    ) from None
                values = np.frombuffer(decoded, dtype=dtype)
                if values.size != chunk_items:
                    raise StoreError(
                        f"{shard}: chunk {c} decodes to {values.size} values, expected "
                        f"{chunk_items}"
                    )
                dst[...] = values.reshape((c0,) + row_shape)[a - c_lo : b - c_lo]
    return out
