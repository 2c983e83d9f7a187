"""Manifest stage: a dataset's label file (+ its video folder) → a manifest CSV.

Reads the ``manifest`` params section::

    manifest:
      dataset: konvid          # one of vqa_pipe.pipeline.datasets.list_datasets()
      root: data/KoNViD        # folder the label paths are relative to
      labels: null             # label file; default: the dataset's usual file under root
      out: manifests/konvid.csv
      allow_missing: false     # drop rows whose video is missing instead of failing
      drop_nan: false          # drop rows whose MOS is NaN instead of failing
      check_files: true        # false: do not look at the video files at all
      mos_scale: null          # only for dataset "csv": 1-5 or 0-100 (inferred when null)
      allow_outside_root: false  # accept label paths that lead outside root (.., absolute)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from vqa_pipe.pipeline.datasets import get_dataset, read_labels
from vqa_pipe.pipeline.manifest import (
    ManifestError,
    ManifestRow,
    MissingVideosError,
    find_missing,
    write_manifest,
)

_MAX_LISTED = 20


@dataclass(frozen=True)
class ManifestParams:
    """The ``manifest`` params section."""

    dataset: str
    root: Path
    out: Path
    labels: Path | None = None
    allow_missing: bool = False
    drop_nan: bool = False
    check_files: bool = True
    mos_scale: str | None = None
    allow_outside_root: bool = False

    def __post_init__(self) -> None:
        get_dataset(self.dataset)  # unknown names fail here, listing the valid ones
        object.__setattr__(self, "root", Path(self.root))
        object.__setattr__(self, "out", Path(self.out))
        if self.labels is not None:
            object.__setattr__(self, "labels", Path(self.labels))

    @classmethod
    def from_dict(cls, section: Mapping[str, Any]) -> ManifestParams:
        """Build from a params mapping; unknown keys are refused by name."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(section) - known)
        if unknown:
            raise ManifestError(
                f"unknown manifest param(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}"
            )
        return cls(**dict(section))


@dataclass(frozen=True)
class ManifestReport:
    """What the stage did."""

    out: Path
    labels: Path
    dataset: str
    mos_scale: str | None
    n_rows: int
    missing: tuple[str, ...] = ()
    nan_lines: tuple[int, ...] = ()

    def summary(self) -> str:
        """A few human lines for the CLI."""
        lines = [
            f"wrote {self.n_rows} videos of {self.dataset} to {self.out}"
            + (f" (MOS scale {self.mos_scale})" if self.mos_scale else " (no MOS)"),
            f"labels read from {self.labels}",
        ]
        if self.missing:
            lines.append(f"dropped {len(self.missing)} video(s) whose file is missing")
        if self.nan_lines:
            lines.append(f"dropped {len(self.nan_lines)} row(s) with a NaN MOS")
        return "\n".join(lines)


def missing_message(missing: list[ManifestRow], root: Path, total: int) -> str:
    """One message listing missing video files (the first few when there are many)."""
    head = f"{len(missing)} of {total} video file(s) are missing under {root}"
    if len(missing) == total:
        head += " (none was found: is --root the dataset folder?)"
    listed = [f"{row.video_id}: {row.path}" for row in missing[:_MAX_LISTED]]
    if len(missing) > _MAX_LISTED:
        listed.append(f"... and {len(missing) - _MAX_LISTED} more")
    tail = "use --allow-missing (allow_missing) to keep the videos that are present"
    return "\n  ".join([head + ":", *listed]) + "\n" + tail


def run(params: ManifestParams) -> ManifestReport:
    """Read the labels, check the video files, write the manifest.

    Raises:
        ManifestError: the label file is bad, or a video path leaves the root without
            ``allow_outside_root`` (message names file and lines).
        MissingVideosError: videos are missing and ``allow_missing`` is off.
    """
    table = read_labels(
        params.dataset,
        params.root,
        params.labels,
        drop_nan=params.drop_nan,
        mos_scale=params.mos_scale,
        allow_outside_root=params.allow_outside_root,
    )
    rows = table.rows
    missing: list[ManifestRow] = []
    if params.check_files:
        missing = find_missing(rows)
        if missing and (not params.allow_missing or len(missing) == len(rows)):
            raise MissingVideosError(missing_message(missing, params.root, len(rows)), missing)
        if missing:
            gone = {row.video_id for row in missing}
            rows = [row for row in rows if row.video_id not in gone]
    if not rows:
        raise ManifestError(f"{table.source}: no videos left to write")
    out = write_manifest(rows, params.out)
    return ManifestReport(
        out=out,
        labels=Path(os.path.normpath(table.source)),
        dataset=params.dataset,
        mos_scale=table.mos_scale,
        n_rows=len(rows),
        missing=tuple(row.video_id for row in missing),
        nan_lines=tuple(table.nan_lines),
    )
