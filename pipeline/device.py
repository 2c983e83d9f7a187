"""Which torch device a run uses."""

from __future__ import annotations

from vqa_pipe.pipeline.errors import VqaPipeError


class DeviceError(VqaPipeError):
    """A device that this machine does not have."""


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; a CUDA device must exist."""
    import torch

    name = str(name).strip()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(f"device '{name}' asked for, but torch sees no CUDA device")
    if name != "cpu" and not name.startswith(("cuda", "mps")):
        raise DeviceError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N")
    return name
