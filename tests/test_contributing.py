"""CONTRIBUTING.md's worked examples run as written."""

from __future__ import annotations

import re
import sys
import tempfile
import types
from pathlib import Path

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


def test_regressor():
    from vqa_pipe.pipeline.feature_table import FLAT, FeatureTable
    from vqa_pipe.pipeline.regressors import (
        REGRESSORS,
        create_regressor,
        describe_params,
        load_regressor,
    )
    from vqa_pipe.pipeline.splits import random_splits
    from vqa_pipe.stages.train import run_protocol

    run("regressor")
    try:
        rng = np.random.default_rng(0)
        x = rng.normal(size=(120, 4)).astype(np.float32)
        mos = 1 + 4 / (1 + np.exp(-(x[:, 0] + 0.5 * x[:, 1])))
        table = FeatureTable([f"v{i}" for i in range(120)], mos, "1-5", {FLAT: x}, dataset="t")
        result = run_protocol(table, random_splits(table.video_ids, 3, seed=0), "knn", {"k": 7})
        assert result.summary["test"]["srocc"]["median"] > 0.7  # it learns the toy MOS
        assert "k: an integer >= 1 (default 5)." in " ".join(describe_params("knn"))
        with pytest.raises(Exception, match="'k' must be an integer >= 1"):
            create_regressor("knn", k=0)
        model = create_regressor("knn", k=3)
        model.fit(table.take(range(100)))
        test = table.take(range(100, 120))
        folder = model.save(Path(tempfile.mkdtemp()) / "knn")
        np.testing.assert_allclose(load_regressor(folder).predict(test), model.predict(test))
    finally:
        REGRESSORS.unregister("knn")


def test_clip_model(tmp_path):
    import open_clip
    import torch
    from safetensors.torch import save_file
    from vqa_pipe.pipeline.clip_model import load_clip

    namespace: dict = {"CLIP_CONFIGS": str(tmp_path)}
    exec(compile(example("clip_model"), "CONTRIBUTING.md:clip_model", "exec"), namespace)
    open_clip.add_model_config(tmp_path)  # what vqa-pipe does for its clip_configs folder
    random = load_clip("my-clip", random_weights=True)
    weights = tmp_path / "my-clip.safetensors"
    save_file({k: v.contiguous() for k, v in random.model.state_dict().items()}, str(weights))
    clip = load_clip("my-clip", weights)
    assert clip.weights["source"] == "file" and len(clip.weights["sha256"]) == 64
    images = torch.randint(0, 256, (2, 3, 224, 224), dtype=torch.uint8)
    np.testing.assert_allclose(clip.encode_images(images).numpy(),
                               random.encode_images(images).numpy(), atol=1e-5)
