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

import csv
import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from vqa_pipe.pipeline.errors import VqaPipeError
from vqa_pipe.pipeline.feature_table import IMPORTED_ARRAY
from vqa_pipe.pipeline.splits import SplitError, match_ids

FORMATS = (".mat", ".npy", ".csv")
RESERVED_BRANCHES = ("semantic", "spatial")


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


def _as_matrix(value: np.ndarray, where: str) -> np.ndarray:
    arr = np.asarray(value)
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


def _read_mat(path: Path, key: str | None) -> tuple[np.ndarray, str]:
    import scipy.io

    try:
        data = scipy.io.loadmat(str(path))
        variables = {k: v for k, v in data.items() if not k.startswith("__")}
        h5 = None
    except NotImplementedError:  # MATLAB v7.3 is HDF5
        import h5py

        h5 = h5py.File(path, "r")
        variables = {k: h5[k] for k in h5.keys() if not k.startswith("#")}
    except (ValueError, OSError) as err:
        raise FeatureImportError(f"{path} is not a readable MATLAB file: {err}") from None
    try:
        def numeric_2d(v) -> bool:
            shape = getattr(v, "shape", ())
            dtype = getattr(v, "dtype", None)
            return (len(shape) in (1, 2) and dtype is not None
                    and np.issubdtype(dtype, np.number))

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
        value = np.asarray(variables[key][()])
        if h5 is not None:
            value = value.T  # MATLAB stores column-major; h5py shows it transposed
        return _as_matrix(value, f"'{key}' in {path}"), key
    finally:
        if h5 is not None:
            h5.close()


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
    path: str | Path, *, key: str | None = None, id_column: str | None = None
) -> tuple[np.ndarray, list[str] | None, dict]:
    """Read a feature matrix: ``(matrix (n, d) float64, row ids or None, source info)``."""
    path = Path(path)
    if not path.is_file():
        raise FeatureImportError(f"feature file {path} does not exist")
    suffix = path.suffix.lower()
    info: dict = {"source": path.name, "format": suffix.lstrip(".")}
    if suffix == ".mat":
        if id_column:
            raise FeatureImportError("--id-column applies to CSV files only")
        matrix, used = _read_mat(path, key)
        info["key"] = used
        return matrix, None, info
    if suffix == ".npy":
        if id_column or key:
            raise FeatureImportError("--key and --id-column do not apply to .npy files")
        try:
            value = np.load(path, allow_pickle=False)
        except ValueError as err:
            raise FeatureImportError(
                f"{path} is not a plain numeric .npy file (object arrays are refused): {err}"
            ) from None
        return _as_matrix(value, str(path)), None, info
    if suffix == ".csv":
        if key:
            raise FeatureImportError("--key applies to .mat files only")
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
) -> ImportReport:
    """Write the rows of a feature matrix into branch ``name`` of a store.

    The store is created from the manifest's video ids when it does not exist (``part_size``
    videos per part, default 32); an existing store (e.g. one made by ``vqa-pipe extract``
    from the same manifest) gets a new branch and keeps its part size.

    Raises:
        FeatureImportError: unreadable files, row naming that does not fit the matrix,
            duplicate rows for one video, a branch name reserved for extraction, or a store
            already holding this branch from another file.
    """
    from vqa_pipe.pipeline.manifest import read_manifest
    from vqa_pipe.pipeline.store import FeatureStore, StoreError

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
    matrix, ids, info = read_matrix(matrix_path, key=key, id_column=id_column)
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

    config = {
        "kind": "imported",
        "name": name,
        "n_features": d,
        "sha256": _sha256(matrix_path),
        **info,
        "id_pattern": id_pattern,
        "random_weights": False,
    }
    try:
        if part_size is None:
            existing = Path(store_path) / "zarr.json"
            part_size = FeatureStore.open(store_path).part_size if existing.is_file() else 32
        store = FeatureStore.create_or_open(store_path, video_ids, part_size=part_size)
        store.ensure_branch(name, config)
    except StoreError as err:
        raise FeatureImportError(str(err)) from None
    report = ImportReport(branch=name, store=Path(store_path), source=matrix_path, n_rows=n,
                          n_features=d)
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
