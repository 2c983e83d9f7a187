"""The feature table's notes: nothing is left out of training without saying so."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from vqa_pipe.pipeline.feature_table import FLAT, load_table
from vqa_pipe.pipeline.manifest import ManifestRow, write_manifest
from vqa_pipe.pipeline.store import FeatureStore


def test_videos_appended_to_the_manifest_after_extraction_are_named(tmp_path):
    ids = [f"v{i}" for i in range(6)]
    store = FeatureStore.create_or_open(tmp_path / "s.zarr", ids[:4], part_size=2)
    store.ensure_branch("feat", {"kind": "imported"})
    for part in range(2):
        store.write_part("feat", part, {v: {"features": np.full((1, 2), i, np.float32)}
                                        for i, v in enumerate(store.part_ids(part))})
    rows = [ManifestRow(v, Path(f"{v}.mp4"), 1.0 + i / 2, "1-5") for i, v in enumerate(ids)]
    manifest = write_manifest(rows, tmp_path / "m.csv")  # v4, v5 appended after extraction
    table = load_table(store, manifest, [FLAT])
    assert table.video_ids == ids[:4]
    assert any("2 labelled videos of" in n and "not in store" in n and "v4" in n
               and "vqa-pipe extract" in n for n in table.notes), table.notes


def _store(folder: Path, config: dict, n: int = 12) -> tuple[Path, Path]:
    rng = np.random.default_rng(len(str(folder)))
    ids = [f"{folder.name}{i}" for i in range(n)]
    store = FeatureStore.create_or_open(folder / "s.zarr", ids, part_size=4)
    store.ensure_branch("semantic", config)
    for part in range(store.n_parts):
        store.write_part("semantic", part, {
            v: {"frame_scores": rng.random((3, 4), dtype=np.float32)}
            for v in store.part_ids(part)})
    rows = [ManifestRow(v, Path(f"{v}.mp4"), float(rng.uniform(1, 5)), "1-5") for v in ids]
    return folder / "s.zarr", write_manifest(rows, folder / "m.csv")


def test_cross_dataset_evaluation_refuses_other_feature_configurations(tmp_path):
    """Same shapes, other grid: refused with the differing keys, before any training; allowed
    only on request, and then every output says so."""
    import json

    import pytest
    from vqa_pipe.pipeline.feature_table import FeatureError
    from vqa_pipe.stages.evaluate import EvaluateError, run_evaluate
    from vqa_pipe.stages.train import DatasetRef, TrainOptions, run_train

    weights = {"source": "file", "file": "a.safetensors", "sha256": "aa"}
    base = {"model": "m", "grid": [3, 3], "weights": weights, "random_weights": False}
    for name in ("a", "same", "other"):
        (tmp_path / name).mkdir()
    train = DatasetRef(*_store(tmp_path / "a", base), name="a")
    # the same weights under another file name is the same configuration
    same = DatasetRef(*_store(tmp_path / "same", {**base, "weights": {**weights,
                                                                      "file": "b.pt"}}),
                      name="same")
    other = DatasetRef(*_store(tmp_path / "other", {**base, "grid": [2, 2]}), name="other")
    opts = dict(regressor="ridge", splits=1, test_ratio=0.34)
    run_train(train, tmp_path / "run0", TrainOptions(**opts), [same])
    with pytest.raises(FeatureError, match=r"semantic\.grid: \[3, 3\] -> \[2, 2\]"):
        run_train(train, tmp_path / "run1", TrainOptions(**opts), [other])
    assert not (tmp_path / "run1" / "models").exists()  # refused before any training
    result = run_train(train, tmp_path / "run2",
                       TrainOptions(**opts, allow_config_mismatch=True), [other])
    assert any("CONFIGURATION MISMATCH ALLOWED" in n and "grid" in n for n in result.notes)
    assert "CONFIGURATION MISMATCH ALLOWED" in (tmp_path / "run2" / "summary.txt").read_text()
    config = json.loads((tmp_path / "run0" / "config.json").read_text())
    assert config["features"]["semantic"]["grid"] == [3, 3]
    with pytest.raises(EvaluateError, match="grid"):
        run_evaluate(tmp_path / "run0", other.store, other.manifest, tmp_path / "ev")
    evaluated = run_evaluate(tmp_path / "run0", other.store, other.manifest, tmp_path / "ev",
                             allow_config_mismatch=True)
    assert any("CONFIGURATION MISMATCH ALLOWED" in n for n in evaluated.notes)
    run_evaluate(tmp_path / "run0", same.store, same.manifest, tmp_path / "ev2")
