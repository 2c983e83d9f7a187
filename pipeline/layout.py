"""Where everything goes by default: the one scheme every command and ``dvc.yaml`` follow.

::

    manifests/<dataset>.csv                      vqa-pipe manifest build / demo
    features/<dataset>.zarr                      vqa-pipe extract, features import, demo
    runs/<dataset>/<regressor>/                  vqa-pipe train
    cross/<train>/<regressor>/<test>/            vqa-pipe evaluate, report
    reports/                                     vqa-pipe report
    models/<dataset>/<regressor>/                vqa-pipe export
    scores/<model>/                              vqa-pipe score (scores.csv, feature cache)
    demo/<dataset>/data/                         vqa-pipe demo (the rendered clips)

All paths are relative to the project folder (the current directory, where ``dvc.yaml``
lives). One feature store per dataset holds every branch (semantic, spatial, imported
feature sets); a store made with other settings is refused with the differences listed, so
two configurations never mix silently. To keep two configurations side by side, give one of
them another store with ``--store``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from vqa_pipe.pipeline.errors import VqaPipeError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class LayoutError(VqaPipeError):
    """A dataset or regressor name that cannot be a folder name, or a path that is missing."""


def check_name(name: str, what: str = "dataset") -> str:
    """Names become folder names: letters, digits, ``_ . -``, not starting with a dot."""
    if not _NAME.match(str(name)) or name in (".", ".."):
        raise LayoutError(
            f"{what} name {name!r} cannot be a folder name: use letters, digits, '_', '.', '-'"
        )
    return str(name)


@dataclass(frozen=True)
class Layout:
    """The default paths, under ``root`` (the project folder)."""

    root: Path = Path(".")

    def manifest(self, dataset: str) -> Path:
        return self.root / "manifests" / f"{check_name(dataset)}.csv"

    def store(self, dataset: str) -> Path:
        return self.root / "features" / f"{check_name(dataset)}.zarr"

    def run(self, dataset: str, regressor: str) -> Path:
        return self.root / "runs" / check_name(dataset) / check_name(regressor, "regressor")

    def cross(self, train: str, regressor: str, test: str) -> Path:
        return (
            self.root / "cross" / check_name(train) / check_name(regressor, "regressor")
            / check_name(test)
        )

    def reports(self) -> Path:
        return self.root / "reports"

    def model(self, dataset: str, regressor: str) -> Path:
        return self.root / "models" / check_name(dataset) / check_name(regressor, "regressor")

    def scores(self, name: str) -> Path:
        return self.root / "scores" / check_name(name, "model")

    def demo_data(self, dataset: str) -> Path:
        return self.root / "demo" / check_name(dataset) / "data"


@dataclass(frozen=True)
class DatasetPaths:
    """A dataset as a command sees it: its name, manifest and feature store."""

    name: str
    manifest: Path
    store: Path


def resolve_dataset(
    dataset: str | None = None,
    manifest: str | Path | None = None,
    store: str | Path | None = None,
    *,
    layout: Layout | None = None,
    need_manifest: bool = True,
) -> DatasetPaths:
    """The one way a command finds a dataset's files.

    ``dataset`` alone gives ``manifests/<dataset>.csv`` and ``features/<dataset>.zarr``;
    ``manifest`` and ``store`` override either. Without ``dataset`` the name is the
    manifest's file stem. A manifest that does not exist is an error saying how to build it.
    """
    layout = layout or Layout()
    if not dataset and manifest is None:
        raise LayoutError("give a dataset (--dataset NAME) or a manifest (--manifest CSV)")
    name = check_name(dataset) if dataset else Path(manifest).stem
    manifest_path = Path(manifest) if manifest is not None else layout.manifest(name)
    if need_manifest and not manifest_path.is_file():
        hint = (
            f"; build it first: vqa-pipe manifest build {name} --root DIR"
            if manifest is None
            else ""
        )
        raise LayoutError(f"no manifest at {manifest_path}{hint}")
    store_path = Path(store) if store is not None else layout.store(name)
    return DatasetPaths(name=name, manifest=manifest_path, store=store_path)
