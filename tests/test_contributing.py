"""CONTRIBUTING.md's worked examples run as written."""

from __future__ import annotations

import re
import sys
import types

import numpy as np
import pytest
from conftest import REPO

DOC = (REPO / "CONTRIBUTING.md").read_text(encoding="utf-8")


def example(name: str) -> str:
    """The code of the ```python example=NAME block."""
    found = re.findall(rf"```python example={name}\n(.*?)```", DOC, flags=re.S)
    assert len(found) == 1, f"CONTRIBUTING.md has {len(found)} examples named {name}"
    return found[0]


def run(name: str) -> dict:
    """Run the example as a module would run (dataclasses look their module up)."""
    module = types.ModuleType(f"contributing_{name}")
    sys.modules[module.__name__] = module
    exec(compile(example(name), f"CONTRIBUTING.md:{name}", "exec"), module.__dict__)
    return module.__dict__


def test_dataset_recipe(tmp_path):
    from vqa_pipe.pipeline.datasets import DATASETS
    from vqa_pipe.stages.manifest import ManifestParams
    from vqa_pipe.stages.manifest import run as build_manifest

    run("dataset")
    try:
        (tmp_path / "videos").mkdir()
        for clip in ("a1", "b2"):
            (tmp_path / "videos" / f"{clip}.mp4").write_bytes(b"")
        (tmp_path / "scores.csv").write_text("clip,score\na1,4.5\nb2,1.5\n")
        report = build_manifest(
            ManifestParams(dataset="my_ugc", root=tmp_path, out=tmp_path / "m.csv")
        )
        assert report.n_rows == 2 and report.mos_scale == "1-5"
        from vqa_pipe.pipeline.manifest import read_manifest

        rows = read_manifest(tmp_path / "m.csv")
        assert [(r.video_id, r.mos) for r in rows] == [("a1", 4.5), ("b2", 1.5)]
        assert rows[0].path == tmp_path / "videos" / "a1.mp4"
    finally:
        DATASETS.unregister("my_ugc")


def test_extraction_branch(tmp_path, tiny_video):
    import click
    from vqa_pipe.pipeline.branches import BRANCHES, branch_option_classes, build_branches
    from vqa_pipe.pipeline.manifest import ManifestRow, write_manifest
    from vqa_pipe.pipeline.store import FeatureStore
    from vqa_pipe.stages.extract import ExtractOptions, run_extract

    from vqa_pipe.cli.options import options_from

    run("branch")
    try:
        # the CLI made from the declarations has the new option
        command = options_from(ExtractOptions, *branch_option_classes())(click.command()(
            lambda **kw: None))
        assert "colour_fps" in {p.name for p in command.params}
        branches = build_branches(["semantic", "colour"], random_weights=True,
                                  clip_model="vqa-tiny-clip", max_frames=2, colour_fps=2.0)
        manifest = write_manifest([ManifestRow("tiny", tiny_video, None, None)],
                                  tmp_path / "m.csv")
        summary = run_extract(manifest, tmp_path / "s.zarr", branches, progress=False)
        assert summary.done == ["tiny"], summary.failed
        store = FeatureStore.open(tmp_path / "s.zarr")
        colour = store.read("colour", "colour")["tiny"]
        assert colour.shape[1] == 6 and len(colour) >= 10  # a 10 s clip at 2 frames/s
        assert np.all((colour >= 0) & (colour <= 255)) and colour[:, 3:].max() > 0
        assert store.branch_config("colour") == {"fps": 2.0, "options": {"colour_fps": 2.0}}
        with pytest.raises(Exception, match="colour_fps"):
            build_branches(["colour"], colour_fps=0)
    finally:
        BRANCHES.unregister("colour")
