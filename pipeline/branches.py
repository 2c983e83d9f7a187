"""The protocol every extraction branch follows, and one decoding pass feeding several branches."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


class Branch(Protocol):
    """A feature extractor fed frame by frame.

    The extract stage decodes the union of all branches' frame indices once and hands each
    branch the frames of its own plan, in increasing index order.
    """

    name: str  # the store group the branch writes

    @property
    def random_weights(self) -> bool: ...

    def config(self) -> dict: ...

    def plan(self) -> Any: ...  # picklable object with .indices(info) -> list[int]

    def start_video(self, key: str, info: Any) -> Any: ...

    def add_frame(self, state: Any, frame: Any) -> None: ...

    def finish_video(self, state: Any) -> dict[str, np.ndarray]: ...


@dataclass(frozen=True)
class UnionPlan:
    """Every frame any of several plans asks for (picklable, so a decode worker can use it)."""

    plans: tuple

    def indices(self, info: Any) -> list[int]:
        wanted: set[int] = set()
        for plan in self.plans:
            wanted.update(int(i) for i in plan.indices(info))
        return sorted(wanted)


def run_branches(
    info: Any, frames: Any, branches: Sequence[Branch], key: str
) -> dict[str, dict[str, np.ndarray]]:
    """Feed one video's frames to each branch that asked for them; return each branch's arrays.

    Exceptions from decoding or from a branch propagate: the caller records the video as failed.
    """
    wanted = [set(int(i) for i in b.plan().indices(info)) for b in branches]
    states = [b.start_video(key, info) for b in branches]
    for frame in frames:
        for branch, want, state in zip(branches, wanted, states):
            if frame.index in want:
                branch.add_frame(state, frame)
    return {b.name: b.finish_video(s) for b, s in zip(branches, states)}


def check_arrays(branch: str, arrays: Mapping[str, np.ndarray]) -> None:
    """Refuse results with NaN or infinite values, naming the array."""
    for name, value in arrays.items():
        value = np.asarray(value)
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise ValueError(f"{branch}/{name} has non-finite values")
