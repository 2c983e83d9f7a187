from __future__ import annotations

import pytest
from click.testing import CliRunner
from vqa_pipe.pipeline.branches import branch_option_classes
from vqa_pipe.pipeline.presets import PresetError, list_presets, load_preset
from vqa_pipe.pipeline.store import FeatureStore
from vqa_pipe.stages.extract import ExtractOptions

from vqa_pipe.cli import main


def test_shipped_presets_name_only_declared_options_with_valid_values():
    from vqa_pipe.pipeline.options import pick

    classes = [ExtractOptions, *branch_option_classes()]
    valid = {k for cls in classes for k in cls.__dataclass_fields__}
    assert {"clif-vqa", "clipvqa"} <= set(list_presets())
    for name in list_presets():
        settings = load_preset(name, valid_keys=valid)
        for cls in classes:  # every value passes the options' own checks
            cls(**pick(cls, settings))
    clif = load_preset("clif-vqa")
    assert clif["softmax"] == "all" and clif["views"] == ["windows"]
    clipvqa = load_preset("clipvqa")
    assert clipvqa["views"] == ["frame"] and clipvqa["tsn_segments"] == 32


def test_unknown_preset_and_unknown_keys_are_refused():
    with pytest.raises(PresetError, match="unknown preset 'nope'; valid: .*clif-vqa"):
        load_preset("nope")
    with pytest.raises(PresetError, match="unknown options"):
        load_preset("clipvqa", valid_keys={"branches"})


def test_preset_through_the_cli_and_explicit_options_win(tmp_path, tiny_video):
    from vqa_pipe.pipeline.manifest import ManifestRow, write_manifest

    manifest = write_manifest([ManifestRow("tiny", tiny_video, None, None)], tmp_path / "m.csv")
    params = tmp_path / "p.yaml"  # a params file is explicit too: no checkpoint, tiny CLIP
    params.write_text("extract:\n  clip_pretrained: null\n  clip_model: vqa-tiny-clip\n")
    result = CliRunner().invoke(main, [
        "--params", str(params), "extract", "--manifest", str(manifest), "--store",
        str(tmp_path / "s.zarr"), "--preset", "clipvqa", "--random-weights",
        "--tsn-segments", "4", "--no-progress"])
    assert result.exit_code == 0, result.output
    config = FeatureStore.open(tmp_path / "s.zarr").branch_config("semantic")
    assert config["views"] == ["frame"]  # from the preset
    assert config["sampling"] == {"kind": "tsn", "segments": 4}  # the command line won
    assert config["model"] == "vqa-tiny-clip"  # the params file won
    assert config["frame_view"]["tokens"] is True  # clip_tokens from the preset
