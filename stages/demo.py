"""The built-in demo: make the demo clips, then run stage one on them. No downloads."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from vqa_pipe.pipeline.demo_clips import make_demo_dataset
from vqa_pipe.stages.extract import ExtractSummary, build_branches, run_extract


def run_demo(
    out_dir: str | Path = "demo",
    *,
    branches: Sequence[str] = ("semantic",),
    clip_model: str = "vqa-tiny-clip",
    clip_pretrained: str | None = None,
    random_weights: bool = False,
    n_scenes: int = 3,
    first_scene: int = 0,
    device: str = "cpu",
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> tuple[Path, ExtractSummary]:
    """Build (or reuse) the demo dataset under ``out_dir`` and extract its features.

    Returns the manifest path and the extraction summary; the store is ``out_dir/features.zarr``.
    """
    out_dir = Path(out_dir)
    built = build_branches(  # first: a missing checkpoint fails before any clip is rendered
        branches,
        clip_model=clip_model,
        clip_pretrained=clip_pretrained,
        random_weights=random_weights,
        device=device,
    )
    log(f"demo dataset: {out_dir / 'data'} ({n_scenes} scenes x 16 distortion levels)")
    manifest = make_demo_dataset(out_dir / "data", n_scenes=n_scenes, first_scene=first_scene)
    summary = run_extract(manifest, out_dir / "features.zarr", built, progress=progress)
    return manifest, summary
