from __future__ import annotations

import pytest
from vqa_pipe.pipeline.frame_sampling import FrameSampling, TSNSampling, make_sampling
from vqa_pipe.pipeline.presets import PresetError, list_presets, load_preset


def test_shipped_presets_load_and_describe_valid_settings():
    assert {"clif-vqa", "clipvqa"} <= set(list_presets())
    clif = load_preset("clif-vqa")
    assert clif["softmax"] == "all" and clif["views"] == ["windows"]
    assert make_sampling(clif["sampling"]) == FrameSampling(2.0, 64)
    clipvqa = load_preset("clipvqa")
    assert clipvqa["views"] == ["frame"] and clipvqa["clip_model"] == "ViT-B-16"
    assert make_sampling(clipvqa["sampling"]) == TSNSampling(32)


def test_unknown_preset_lists_the_choices():
    with pytest.raises(PresetError, match="Available presets: .*clif-vqa"):
        load_preset("nope")


def test_make_sampling_refuses_bad_specs():
    with pytest.raises(ValueError, match="kind"):
        make_sampling({"kind": "random"})
    with pytest.raises(ValueError, match="bad frame sampling"):
        make_sampling({"kind": "tsn", "frames": 3})
    assert make_sampling({"kind": "fps", "fps": "all", "max_frames": None}) == FrameSampling(
        None, None)
