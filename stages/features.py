"""Stage ``features import``: bring an external feature matrix into a feature store.

Thin stage around :func:`vqa_pipe.pipeline.feature_import.import_features`: it resolves
the default store path and logs the import report.
"""

from __future__ import annotations

import logging
from pathlib import Path

from vqa_pipe.pipeline.feature_import import (
    DEFAULT_MAX_BYTES,
    FeatureImportError,
    ImportReport,
    import_features,
)

log = logging.getLogger(__name__)


def default_import_store(manifest: str | Path, name: str) -> Path:
    """The dataset's store, ``features/<dataset>.zarr`` for a manifest ``.../<dataset>.csv``
    (``pipeline.layout``): imported feature sets sit beside the extracted branches."""
    from vqa_pipe.pipeline.layout import Layout

    return Layout().store(Path(manifest).stem)


def run_import(
    matrix: str | Path,
    manifest: str | Path,
    *,
    name: str,
    store: str | Path | None = None,
    key: str | None = None,
    id_column: str | None = None,
    order_file: str | Path | None = None,
    order_column: str | None = None,
    id_pattern: str | None = None,
    part_size: int | None = None,
    replace: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> ImportReport:
    """Import ``matrix`` as branch ``name`` of ``store`` (default: :func:`default_import_store`).

    ``replace``: delete an existing branch ``name`` first (a corrected re-import).
    ``max_bytes``: the largest matrix (as float64) the import may hold in memory; a file
    declaring more is refused before anything is allocated.
    """
    from vqa_pipe.pipeline.store_lock import writer_lock

    store_path = Path(store) if store is not None else default_import_store(manifest, name)
    with writer_lock(store_path):  # never beside an extraction writing the same store
        report = import_features(
            matrix, manifest, store_path, name=name, key=key, id_column=id_column,
            order_file=order_file, order_column=order_column, id_pattern=id_pattern,
            part_size=part_size, replace=replace, max_bytes=max_bytes,
        )
    for line in report.summary().splitlines():
        log.info(line)
    return report


__all__ = ["DEFAULT_MAX_BYTES", "FeatureImportError", "default_import_store", "run_import"]
