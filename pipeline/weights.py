"""Local checkpoint files: identity, safe loading, clear errors when they are missing.

Nothing here downloads anything. Checkpoints load from safetensors or with
``torch.load(weights_only=True)``; pickled code is never executed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from vqa_pipe.pipeline.errors import VqaPipeError

RANDOM = "random"
RANDOM_WEIGHTS_BANNER = (
    "WARNING: RANDOM WEIGHTS. These features come from untrained models: "
    "they exercise the pipeline but say nothing about video quality."
)


class WeightsError(VqaPipeError):
    """A checkpoint is missing, unreadable, or does not fit the model."""


def file_identity(path: str | Path) -> dict:
    """Name, size and sha256 of a checkpoint file: what a store records as the weights' identity."""
    path = Path(path)
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return {"file": path.name, "bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def load_state_dict(path: str | Path, *, what: str = "checkpoint") -> dict[str, Any]:
    """Read a state dict from safetensors or a torch file (weights only), unwrapping common nesting.

    Unwraps ``{"state_dict": ...}`` / ``{"model": ...}`` / ``{"module": ...}`` wrappers and a
    ``module.`` prefix left by DataParallel.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{what} file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any reader failure means the same to the user
        raise WeightsError(
            f"cannot read {what} {path}: {type(err).__name__}: {str(err).splitlines()[0][:300]}. "
            "Expected a safetensors file or a torch state dict saved with torch.save "
            "(files that need arbitrary pickled code are refused)"
        ) from None
    for key in ("state_dict", "model", "module"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict) or not state:
        raise WeightsError(f"{what} {path} holds no state dict (got {type(state).__name__})")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def describe_mismatch(missing: list[str], unexpected: list[str], limit: int = 8) -> str:
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys (e.g. {missing[:limit]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[:limit]})")
    return "; ".join(parts)
