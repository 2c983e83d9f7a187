"""Named extraction presets: a paper's stage-one settings as data (``data/presets/*.json``).

A preset holds an ``extract`` mapping whose keys are extraction settings (the names of
``stages.extract.build_branches`` parameters, plus the semantic branch's ``views``,
``clip_tokens``, ``frame_norm`` and a ``sampling`` mapping for
:func:`~vqa_pipe.pipeline.frame_sampling.make_sampling`). Options given explicitly on the
command line override it.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from vqa_pipe.pipeline.errors import VqaPipeError
from vqa_pipe.pipeline.frame_sampling import make_sampling

EXTRACT_KEYS = frozenset({
    "branches", "clip_model", "clip_pretrained", "views", "grid", "window_fit", "softmax",
    "prompts", "sampling", "clip_tokens", "frame_norm", "spatial_clips", "spatial_output",
    "spatial_backbone", "spatial_samplings", "spatial_seed", "batch_windows",
})


class PresetError(VqaPipeError):
    """An unknown or malformed preset."""


def _folder():
    return resources.files("vqa_pipe.pipeline").joinpath("data/presets")


def list_presets() -> list[str]:
    """Names of the shipped presets."""
    return sorted(p.name[: -len(".json")] for p in _folder().iterdir() if p.name.endswith(".json"))


def load_preset(name: str) -> dict[str, Any]:
    """The ``extract`` settings of a shipped preset, checked."""
    names = list_presets()
    if name not in names:
        raise PresetError(f"unknown preset '{name}'. Available presets: {', '.join(names)}")
    spec = json.loads(_folder().joinpath(f"{name}.json").read_text())
    settings = spec.get("extract")
    if not isinstance(settings, dict):
        raise PresetError(f"preset {name} has no \"extract\" mapping")
    unknown = sorted(set(settings) - EXTRACT_KEYS)
    if unknown:
        raise PresetError(
            f"preset {name} has unknown keys {unknown}; valid: {', '.join(sorted(EXTRACT_KEYS))}"
        )
    if "sampling" in settings:
        try:
            make_sampling(settings["sampling"])
        except ValueError as err:
            raise PresetError(f"preset {name}: {err}") from None
    return dict(settings)
