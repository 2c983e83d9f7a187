"""Named extraction presets: a paper's stage-one settings as data (``data/presets/*.json``).

A preset is ``{"name", "about", "extract": {option: value}}``; its keys are ``vqa-pipe
extract`` option names (``branches``, ``clip_model``, ``views``, ``tsn_segments``, ...).
Options given explicitly (command line or params file) override it. The keys are checked
against the options the caller declares, so a preset never names an option that does not
exist.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from importlib import resources
from typing import Any

from vqa_pipe.pipeline.errors import VqaPipeError


class PresetError(VqaPipeError):
    """An unknown or malformed preset."""


def _folder():
    return resources.files("vqa_pipe.pipeline").joinpath("data/presets")


def list_presets() -> list[str]:
    """Names of the shipped presets."""
    return sorted(p.name[: -len(".json")] for p in _folder().iterdir() if p.name.endswith(".json"))


def load_preset(name: str, valid_keys: Iterable[str] | None = None) -> dict[str, Any]:
    """The ``extract`` settings of a shipped preset; keys outside ``valid_keys`` are refused."""
    names = list_presets()
    if name not in names:
        raise PresetError(f"unknown preset '{name}'; valid: {', '.join(names)}")
    spec = json.loads(_folder().joinpath(f"{name}.json").read_text(encoding="utf-8"))
    settings = spec.get("extract")
    if not isinstance(settings, dict):
        raise PresetError(f"preset {name} has no \"extract\" mapping")
    if valid_keys is not None:
        valid = {str(k).replace("-", "_") for k in valid_keys}
        unknown = sorted(k for k in settings if str(k).replace("-", "_") not in valid)
        if unknown:
            raise PresetError(f"preset {name} names unknown options {unknown}")
    return dict(settings)
