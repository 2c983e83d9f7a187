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


def idle_openmp_threads_sleep() -> bool:
    """Make torch's OpenMP threads sleep while they wait for work instead of spinning
    (``OMP_WAIT_POLICY=PASSIVE``), unless the user chose a policy.

    During extraction on a CPU the model process shares the cores with the decoder processes;
    spinning threads then burn the cores the decoders need. Measured with
    ``benchmarks/bench_extract.py`` on 2 cores, 2 decoders: the model process's CPU fell from
    4.24 s to 1.88 s and extraction from 1.71x to 1.42x of decoding alone. The OpenMP runtime
    reads the variable once, when torch is first imported, so this must run before that: it
    returns False (and changes nothing) when torch is already imported.
    """
    import os
    import sys

    if "torch" in sys.modules:
        return False
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return True
