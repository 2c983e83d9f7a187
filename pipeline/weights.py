"""Local checkpoint files: identity, safe loading, clear errors when they are missing.

Nothing here downloads anything. Checkpoints load from safetensors or with
``torch.load(weights_only=True)``; pickled code is never executed.
"""

from __future__ import annotations

import hashlib
import zipfile
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
    if is_torchscript_archive(path):
        raise WeightsError(
            f"{what} {path} is a TorchScript archive (such as OpenAI's original ViT-B-32.pt). "
            "vqa-pipe does not load TorchScript: loading one runs the code it carries. Convert it "
            "once, on a machine you trust, into a plain state dict: python -c \"import torch; "
            f"m = torch.jit.load('{path.name}', map_location='cpu'); "
            f"torch.save(m.state_dict(), '{path.stem}-state.pt')\" and pass the new file "
            "(OpenAI weights need QuickGELU: use a model name ending in -quickgelu, e.g. "
            "ViT-B-32-quickgelu). Or fetch the same weights as safetensors with "
            "`vqa-pipe weights download ViT-B-32 openai`"
        )
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


def is_torchscript_archive(path: str | Path) -> bool:
    """True for a TorchScript zip archive (it holds ``code/`` or ``constants.pkl``), read safely.

    Only the zip directory is read; nothing in the archive is unpickled or run.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(
        n.endswith("/constants.pkl") or "/code/" in n or n.startswith("code/") for n in names
    )


def describe_mismatch(missing: list[str], unexpected: list[str], limit: int = 8) -> str:
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys (e.g. {missing[:limit]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[:limit]})")
    return "; ".join(parts)
