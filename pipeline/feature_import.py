"""Import an external feature matrix (VIDEVAL, RAPIQUE, TLVQM, ...) into a feature store.

The matrix comes from a ``.mat`` (MATLAB v5 or v7.3), ``.npy`` or ``.csv`` file, one row
per video. Rows are named by

* an id column of the CSV (``id_column``), or
* the row order of a metadata file (``order_file`` + ``order_column``), e.g. VIDEVAL's
  ``KONVID_1K_metadata.csv`` column ``flickr_id``, or
* the manifest's own order when neither is given (the row count must then match).

Names are matched to manifest video ids exactly, without extension, or by file name / stem
(see :func:`vqa_pipe.pipeline.splits.match_ids`), or through ``id_pattern``, a regular
expression whose first group (or whole match) is the key on both sides.

The result is a store branch named after the feature set (e.g. ``videval``) with one array
``features`` of shape (1, d) per video. Manifest videos without a row are recorded as
failed (with the reason); rows of videos not in the manifest are counted and ignored; rows
with NaN are kept as they are and counted: the training stage drops or imputes them, as
its NaN policy says, and reports how many.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import math
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from vqa_pipe.pipeline.errors import VqaPipeError
from vqa_pipe.pipeline.feature_table import IMPORTED_ARRAY
from vqa_pipe.pipeline.splits import SplitError, match_ids

FORMATS = (".mat", ".npy", ".csv")
RESERVED_BRANCHES = ("semantic", "spatial")
DEFAULT_MAX_BYTES = 4 << 30
"""The largest matrix an import holds in memory (as float64), unless told otherwise: a
header or dataset that declares more is refused before anything is allocated."""


class FeatureImportError(VqaPipeError):
    """A feature file, metadata file or store that cannot be imported as asked."""


@dataclass
class ImportReport:
    """What an import did; :meth:`summary` says it in a few lines."""

    branch: str
    store: Path
    source: Path
    n_rows: int
    n_features: int
    imported: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unmatched_rows: list[str] = field(default_factory=list)
    nan_rows: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [
            f"imported {len(self.imported)} videos x {self.n_features} features from "
            f"{self.source.name} into branch '{self.branch}' of {self.store}",
        ]
        if self.missing:
            lines.append(
                f"{len(self.missing)} manifest videos have no row (recorded as failed), "
                f"e.g. {self.missing[:3]}"
            )
        if self.unmatched_rows:
            lines.append(
                f"{len(self.unmatched_rows)} rows match no manifest video and were ignored, "
                f"e.g. {self.unmatched_rows[:3]}"
            )
        if self.nan_rows:
            lines.append(
                f"{len(self.nan_rows)} imported videos have NaN features (kept; training drops "
                f"or imputes them per --nan-policy), e.g. {self.nan_rows[:3]}"
            )
        return "\n".join(lines)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _gib(n: float) -> str:
    return f"{n / (1 << 30):.3g} GiB"


def _check_declared(shape: tuple[int, ...], where: str, max_bytes: int, *,
                    stored: int | None = None, itemsize: int = 8,
                    what: str = "file") -> None:
    """Refuse a matrix whose declared size exceeds ``max_bytes`` (as float64) or what the
    file can hold (``stored`` bytes of data), before anything is allocated."""
    n = 1
    for s in shape:
        n *= int(s)
    if stored is not None and n * itemsize > stored:
        raise FeatureImportError(
            f"{where} declares shape {tuple(shape)} ({n * itemsize:,} bytes) but the {what} "
            f"holds {stored:,} bytes of data: it is truncated or its header is wrong"
        )
    if n * 8 > max_bytes:
        raise FeatureImportError(
            f"{where} declares shape {tuple(shape)}, {_gib(n * 8)} as a float64 matrix, over "
            f"the import limit of {_gib(max_bytes)}; raise the limit if the matrix is real"
        )


def _refuse_dtype(dtype: np.dtype, where: str) -> None:
    if dtype.kind == "c":
        raise FeatureImportError(
            f"{where} holds complex numbers ({dtype}); importing would keep only their real "
            "part. Save the real features you mean (e.g. np.abs or np.real) and import those"
        )
    if dtype.fields is not None or dtype.kind not in "biuf":
        raise FeatureImportError(f"{where} is not a numeric matrix (dtype {dtype})")


def _as_matrix(value: np.ndarray, where: str) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.kind == "c":
        _refuse_dtype(arr.dtype, where)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number)
                                   or arr.dtype == np.bool_):
        raise FeatureImportError(f"{where} is not a numeric matrix (dtype {arr.dtype})")
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise FeatureImportError(f"{where} has shape {arr.shape}; expected (videos, features)")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise FeatureImportError(f"{where} is empty (shape {arr.shape})")
    return arr.astype(np.float64)


_MAT_NUMERIC = ("double", "single", "int8", "uint8", "int16", "uint16", "int32", "uint32",
                "int64", "uint64", "logical")


def _mat_v5_variables(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """A MATLAB v5 file's variables from their headers: name -> (shape, class).

    Raises NotImplementedError for a v7.3 (HDF5) file, as scipy does."""
    import scipy.io

    try:
        listed = scipy.io.whosmat(str(path))
    except NotImplementedError:
        raise
    except (ValueError, OSError, TypeError) as err:
        raise FeatureImportError(f"{path} is not a readable MATLAB file: {err}") from None
    return {name: (tuple(int(s) for s in shape), cls) for name, shape, cls in listed}


def _read_mat(path: Path, key: str | None,
              max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[np.ndarray, str]:
    import scipy.io

    h5 = None
    try:
        listed = _mat_v5_variables(path)
    except NotImplementedError:  # MATLAB v7.3 is HDF5
        import h5py

        try:
            h5 = h5py.File(path, "r")
        except OSError as err:
            raise FeatureImportError(f"{path} is not a readable MATLAB file: {err}") from None
        variables = {k: h5[k] for k in h5.keys() if not k.startswith("#")}
    else:
        variables = {k: v for k, v in listed.items() if not k.startswith("__")}
    try:
        def numeric_2d(v) -> bool:
            if isinstance(v, tuple):  # v5 header: (shape, class)
                return len(v[0]) in (1, 2) and v[1] in _MAT_NUMERIC
            shape = getattr(v, "shape", ())
            dtype = getattr(v, "dtype", None)
            return (len(shape) in (1, 2) and dtype is not None
                    and (np.issubdtype(dtype, np.number) or _is_h5_complex(dtype)))

        candidates = sorted(k for k, v in variables.items() if numeric_2d(v))
        if key is None:
            if len(candidates) != 1:
                raise FeatureImportError(
                    f"{path} holds {len(candidates)} numeric matrices "
                    f"({', '.join(candidates) or 'none'}); say which with --key"
                )
            key = candidates[0]
        if key not in variables:
            raise FeatureImportError(
                f"{path} has no variable '{key}'; it has: {', '.join(sorted(variables))}"
            )
        where = f"'{key}' in {path}"
        if h5 is None:
            shape, cls = variables[key]
            # v5 data may be compressed: the file size bounds nothing, the limit does
            _check_declared(shape, where, max_bytes)
            try:
                data = scipy.io.loadmat(str(path), variable_names=[key])
            except (ValueError, OSError, TypeError) as err:
                raise FeatureImportError(f"{path} is not a readable MATLAB file: {err}") from None
            if key not in data:
                raise FeatureImportError(f"{where} could not be read (class {cls})")
            value = np.asarray(data[key])
        else:
            dataset = variables[key]
            if not hasattr(dataset, "shape"):
                raise FeatureImportError(f"{where} is an HDF5 group, not a matrix")
            if _is_h5_complex(dataset.dtype):
                _refuse_dtype(np.dtype(np.complex128), where)
            _refuse_dtype(np.dtype(dataset.dtype), where)
            stored = None
            if dataset.chunks is None and dataset.compression is None:
                stored = int(dataset.id.get_storage_size())  # contiguous: all bytes on disk
            _check_declared(tuple(dataset.shape), where, max_bytes, stored=stored,
                            itemsize=dataset.dtype.itemsize, what="HDF5 dataset")
            value = np.asarray(dataset[()]).T  # MATLAB is column-major; h5py shows it transposed
        return _as_matrix(value, where), key
    finally:
        if h5 is not None:
            h5.close()


def _is_h5_complex(dtype) -> bool:
    """MATLAB v7.3 writes complex matrices as an HDF5 compound of 'real' and 'imag'."""
    names = getattr(dtype, "names", None) or ()
    return set(names) == {"real", "imag"}


def _read_npy(path: Path, max_bytes: int) -> np.ndarray:
    """A .npy matrix, its header checked against the file size and the limit first."""
    from numpy.lib import format as npy_format

    try:
        with open(path, "rb") as fh:
            version = npy_format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = npy_format.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, fortran, dtype = npy_format.read_array_header_2_0(fh)
            else:
                raise FeatureImportError(
                    f"{path}: .npy format version {version} is not supported (numeric "
                    "matrices are written as 1.0 or 2.0)"
                )
            data_start = fh.tell()
            fh.seek(0, 2)
            stored = fh.tell() - data_start
    except FeatureImportError:
        raise
    except (ValueError, OSError, SyntaxError, TypeError) as err:
        raise FeatureImportError(f"{path} is not a readable .npy file: {err}") from None
    dtype = np.dtype(dtype)
    if dtype.hasobject:
        raise FeatureImportError(
            f"{path} is not a plain numeric .npy file (object arrays are refused)"
        )
    _refuse_dtype(dtype, str(path))
    if len(shape) not in (1, 2):
        raise FeatureImportError(f"{path} has shape {shape}; expected (videos, features)")
    _check_declared(shape, str(path), max_bytes, stored=stored, itemsize=dtype.itemsize)
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise FeatureImportError(f"{path} is not a readable .npy file: {err}") from None


def _read_csv(path: Path, id_column: str | None) -> tuple[np.ndarray, list[str] | None]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise FeatureImportError(f"{path} is empty") from None
        if id_column is not None and id_column not in header:
            raise FeatureImportError(
                f"{path}:1: no id column '{id_column}'; columns: {', '.join(header)}"
            )
        id_at = header.index(id_column) if id_column is not None else None
        ids, rows = [], []
        for line_no, record in enumerate(reader, 2):
            if not any(c.strip() for c in record):
                continue
            if len(record) != len(header):
                raise FeatureImportError(
                    f"{path}:{line_no}: {len(record)} cells for {len(header)} columns"
                )
            values = []
            for i, cell in enumerate(record):
                if i == id_at:
                    ids.append(cell.strip())
                    continue
                text = cell.strip()
                if text == "" or text.lower() in ("nan", "na", "n/a"):
                    values.append(math.nan)
                    continue
                try:
                    values.append(float(text))
                except ValueError:
                    raise FeatureImportError(
                        f"{path}:{line_no}: column '{header[i]}' holds {text!r}, not a number"
                        + ("" if id_column else " (pass --id-column if it names the videos)")
                    ) from None
            rows.append(values)
    if not rows:
        raise FeatureImportError(f"{path} has a header but no rows")
    return _as_matrix(np.array(rows), str(path)), (ids if id_at is not None else None)


def read_matrix(
    path: str | Path, *, key: str | None = None, id_column: str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> tuple[np.ndarray, list[str] | None, dict]:
    """Read a feature matrix: ``(matrix (n, d) float64, row ids or None, source info)``.

    Sizes are checked before anything is allocated: a ``.npy`` header or an HDF5 dataset
    must fit in the file, and no matrix may need more than ``max_bytes`` as float64 (a
    .csv file may be at most that big). Complex matrices are refused, never cut to their
    real part.
    """
    path = Path(path)
    if not path.is_file():
        raise FeatureImportError(f"feature file {path} does not exist")
    if max_bytes < 1:
        raise FeatureImportError(f"the import size limit must be positive, got {max_bytes}")
    suffix = path.suffix.lower()
    info: dict = {"source": path.name, "format": suffix.lstrip(".")}
    if suffix == ".mat":
        if id_column:
            raise FeatureImportError("--id-column applies to CSV files only")
        matrix, used = _read_mat(path, key, max_bytes)
        info["key"] = used
        return matrix, None, info
    if suffix == ".npy":
        if id_column or key:
            raise FeatureImportError("--key and --id-column do not apply to .npy files")
        return _as_matrix(_read_npy(path, max_bytes), str(path)), None, info
    if suffix == ".csv":
        if key:
            raise FeatureImportError("--key applies to .mat files only")
        size = path.stat().st_size
        if size > max_bytes:
            raise FeatureImportError(
                f"{path} is {_gib(size)}, over the import limit of {_gib(max_bytes)}; raise "
                "the limit if the file is real"
            )
        matrix, ids = _read_csv(path, id_column)
        if id_column:
            info["id_column"] = id_column
        return matrix, ids, info
    raise FeatureImportError(
        f"{path}: unknown feature file type '{suffix}'; use one of {', '.join(FORMATS)}"
    )


def read_order(path: str | Path, column: str) -> list[str]:
    """The values of ``column`` in a metadata CSV, in row order (names of the matrix rows)."""
    path = Path(path)
    if not path.is_file():
        raise FeatureImportError(f"metadata file {path} does not exist")
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        if column not in (reader.fieldnames or []):
            raise FeatureImportError(
                f"{path}:1: no column '{column}'; columns: {', '.join(reader.fieldnames or [])}"
            )
        names = []
        for rec in reader:
            value = (rec[column] or "").strip()
            if not value:
                raise FeatureImportError(f"{path}:{reader.line_num}: empty '{column}'")
            names.append(value)
    return names


def _match(names: Sequence[str], video_ids: Sequence[str], pattern: str | None,
           what: str) -> dict[str, str]:
    if pattern is None:
        try:
            return match_ids(names, video_ids, what=what)
        except SplitError as err:
            raise FeatureImportError(str(err)) from None
    try:
        regex = re.compile(pattern)
    except re.error as err:
        raise FeatureImportError(f"bad --id-pattern {pattern!r}: {err}") from None

    def key(text: str) -> str | None:
        m = regex.search(text)
        if not m:
            return None
        return m.group(1) if m.groups() else m.group(0)

    by_key: dict[str, str] = {}
    for vid in video_ids:
        k = key(vid)
        if k is None:
            continue
        if k in by_key:
            raise FeatureImportError(
                f"--id-pattern gives the same key '{k}' to videos '{by_key[k]}' and '{vid}'"
            )
        by_key[k] = vid
    out = {}
    for name in names:
        k = key(name)
        if k is not None and k in by_key:
            out[name] = by_key[k]
    return out


@contextlib.contextmanager
def _import_branch(store_path: Path, video_ids: list[str], name: str, config: dict,
                   part_size: int | None, replace: bool):
    """The store, with branch ``name`` configured for this import; undone if the import fails.

    A store this import created is deleted again on failure, a branch it configured is
    removed: a failed import never leaves a branch that refuses the corrected retry.
    """
    from vqa_pipe.pipeline.store import FeatureStore, StoreError

    existed = (store_path / "zarr.json").is_file()
    folder_existed = store_path.exists()
    if folder_existed and not existed and (
        not store_path.is_dir() or any(store_path.iterdir())
    ):
        raise FeatureImportError(
            f"{store_path} exists and is not a feature store; choose another --out"
        )
    created_branch = False
    store = None
    try:
        try:
            if part_size is None:
                part_size = FeatureStore.open(store_path).part_size if existed else 32
            store = FeatureStore.create_or_open(store_path, video_ids, part_size=part_size)
            if name in store.branches() and replace:
                store.remove_branch(name)
            created_branch = name not in store.branches()
            store.ensure_branch(name, config)
        except StoreError as err:
            hint = "" if replace or "another configuration" not in str(err) else (
                "\nOr replace the branch with this import (--replace)."
            )
            raise FeatureImportError(f"{err}{hint}") from None
        try:
            yield store
        except StoreError as err:
            raise FeatureImportError(str(err)) from None
    except BaseException:
        if not existed:  # this import made the store: take it away again
            if folder_existed:
                for child in list(store_path.iterdir()) if store_path.is_dir() else []:
                    if child.is_dir():
                        shutil.rmtree(child, ignore_errors=True)
                    else:
                        child.unlink(missing_ok=True)
            else:
                shutil.rmtree(store_path, ignore_errors=True)
        elif created_branch and store is not None:
            with contextlib.suppress(Exception):
                store.remove_branch(name)
        raise


def import_features(
    matrix_path: str | Path,
    manifest: str | Path,
    store_path: str | Path,
    *,
    name: str,
    key: str | None = None,
    id_column: str | None = None,
    order_file: str | Path | None = None,
    order_column: str | None = None,
    id_pattern: str | None = None,
    part_size: int | None = None,
    replace: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> ImportReport:
    """Write the rows of a feature matrix into branch ``name`` of a store.

    The store is created from the manifest's video ids when it does not exist (``part_size``
    videos per part, default 32); an existing store (e.g. one made by ``vqa-pipe extract``
    from the same manifest) gets a new branch and keeps its part size. ``replace`` deletes
    a branch of that name first (whatever it was imported from). Nothing is written when no
    row matches a manifest video, and a failed import leaves no branch behind (nor the store,
    when this import created it). ``max_bytes``: see :func:`read_matrix`.

    Raises:
        FeatureImportError: unreadable or oversized files, row naming that does not fit the
            matrix or matches no video, duplicate rows for one video, a branch name reserved
            for extraction, a store already holding this branch from another file (without
            ``replace``), or a store that cannot be written.
    """
    from vqa_pipe.pipeline.manifest import read_manifest

    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", name or ""):
        raise FeatureImportError(
            f"feature set name {name!r} must start with a letter and hold only letters, "
            "digits, '-' and '_'"
        )
    if name in RESERVED_BRANCHES:
        raise FeatureImportError(f"'{name}' is the name of an extracted branch; pick another")
    if (order_file is None) != (order_column is None):
        raise FeatureImportError("give both --order-file and --order-column, or neither")
    if id_column and order_file:
        raise FeatureImportError("rows are named by --id-column or by --order-file, not both")
    matrix_path, manifest = Path(matrix_path), Path(manifest)
    matrix, ids, info = read_matrix(matrix_path, key=key, id_column=id_column,
                                    max_bytes=max_bytes)
    video_ids = [row.video_id for row in read_manifest(manifest)]
    n, d = matrix.shape

    if ids is not None:
        names, naming = ids, f"column '{id_column}'"
    elif order_file is not None:
        names = read_order(order_file, order_column)
        naming = f"{Path(order_file).name}:{order_column}"
        info["order"] = {"file": Path(order_file).name, "column": order_column}
    else:
        names, naming = list(video_ids), "manifest order"
        info["order"] = "manifest"
    if len(names) != n:
        raise FeatureImportError(
            f"{matrix_path} has {n} rows but {naming} names {len(names)} videos; "
            "the row order must match"
        )
    duplicates = sorted({x for x in names if names.count(x) > 1}) if len(set(names)) < n else []
    if duplicates:
        raise FeatureImportError(f"{naming} names some rows twice: {duplicates[:5]}")
    found = _match(names, video_ids, id_pattern, str(matrix_path))
    row_of = {vid: i for i, nm in enumerate(names) if (vid := found.get(nm)) is not None}
    if not row_of:
        raise FeatureImportError(
            f"no row of {matrix_path} matches a video of {manifest} (rows named by {naming}, "
            f"e.g. {names[:3]}; videos e.g. {video_ids[:3]}): check --order-file/--order-column,"
            " --id-column or --id-pattern. Nothing was written"
        )

    config = {
        "kind": "imported",
        "name": name,
        "n_features": d,
        "sha256": _sha256(matrix_path),
        **info,
        "id_pattern": id_pattern,
        "random_weights": False,
    }
    report = ImportReport(branch=name, store=Path(store_path), source=matrix_path, n_rows=n,
                          n_features=d)
    with _import_branch(Path(store_path), video_ids, name, config, part_size,
                        replace) as store:
        for part in range(store.n_parts):
            results: dict[str, dict[str, np.ndarray] | str] = {}
            for vid in store.part_ids(part):
                i = row_of.get(vid)
                if i is None:
                    results[vid] = f"no row for this video in {matrix_path.name} ({naming})"
                    report.missing.append(vid)
                    continue
                row = matrix[i].astype(np.float32)
                results[vid] = {IMPORTED_ARRAY: row[None, :]}
                report.imported.append(vid)
                if not np.all(np.isfinite(row)):
                    report.nan_rows.append(vid)
            store.write_part(name, part, results)
    matched_names = set(found)
    report.unmatched_rows = [nm for nm in names if nm not in matched_names]
    return report
