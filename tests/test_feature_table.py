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
