"""The built-in demo: render the demo clips, build their manifest, run stage one. No downloads.

Paths follow ``pipeline.layout``: clips in ``demo/<name>/data``, the manifest in
``manifests/<name>.csv``, features in ``features/<name>.zarr``, so ``vqa-pipe train
--dataset demo`` works right after ``vqa-pipe demo``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from vqa_pipe.pipeline.demo_clips import make_demo_dataset
from vqa_pipe.pipeline.layout import Layout, check_name
from vqa_pipe.stages.extract import ExtractOptions, ExtractSummary, extract
from vqa_pipe.stages.manifest import ManifestParams
from vqa_pipe.stages.manifest import run as build_manifest


def make_demo_data(
    name: str = "demo", *, scenes: int = 3, first_scene: int = 0, layout: Layout | None = None
) -> Path:
    """Render (or reuse) the demo clips and labels of dataset ``name``; return the folder."""
    layout = layout or Layout()
    data = layout.demo_data(check_name(name))
    make_demo_dataset(data, n_scenes=scenes, first_scene=first_scene)
    return data


def run_demo(
    name: str = "demo",
    *,
    scenes: int = 3,
    first_scene: int = 0,
    options: ExtractOptions | None = None,
    branch_options: Mapping[str, Any] | None = None,
    layout: Layout | None = None,
    log: Callable[[str], None] = print,
) -> tuple[Path, Path, ExtractSummary]:
    """Demo clips, manifest and features of dataset ``name``.

    Returns ``(manifest, store, summary)``. A missing checkpoint fails before any clip is
    rendered.
    """
    from vqa_pipe.pipeline.branches import build_branches

    layout = layout or Layout()
    options = options or ExtractOptions()
    branch_options = dict(branch_options or {})
    from vqa_pipe.pipeline.device import resolve_device

    branches = build_branches(  # first: a missing checkpoint fails before any clip is rendered
        options.branches,
        device=resolve_device(options.device),
        random_weights=options.random_weights,
        **branch_options,
    )
    data = make_demo_data(name, scenes=scenes, first_scene=first_scene, layout=layout)
    log(f"demo dataset {name}: {data} ({scenes} scenes x 16 distortion levels)")
    manifest = build_manifest(
        ManifestParams(dataset="demo", root=data, out=layout.manifest(name))
    ).out
    store = layout.store(name)
    summary = extract(manifest, store, options, branch_options, branches=branches, log=log)
    return manifest, store, summary
