"""Extraction branches: the protocol they follow, their declarations, and one decoding pass
feeding several of them.

Every branch is declared once, in a module of this package named after it
(``semantic.py``, ``spatial.py``), by a :class:`BranchSpec`: its options (a settings
dataclass whose fields are declared with :func:`vqa_pipe.pipeline.options.option`), the arrays
it writes to the store, and how to build it. ``vqa-pipe extract``'s options, params.yaml's
``extract`` keys and :func:`build_branches` are all made from these declarations, so adding a
branch touches its own module (and its test) only. See CONTRIBUTING.md for a worked example.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from vqa_pipe.pipeline.options import OptionError, feature_options, pick, unknown_keys
from vqa_pipe.pipeline.registry import Registry


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
class BuildContext:
    """What every branch is built with, besides its own options."""

    device: str = "cpu"
    random_weights: bool = False


@dataclass(frozen=True)
class BranchSpec:
    """The declaration of one branch.

    Attributes:
        name: the branch's name, which is also its store group.
        summary: one line for listings and ``--help``.
        options: the settings dataclass of the branch (fields declared with ``option``).
        arrays: each store array it writes, with its per-video shape, dtype and meaning.
        build: ``build(options, context) -> Branch``; imports heavy modules itself.
    """

    name: str
    summary: str
    options: type
    arrays: Mapping[str, str]
    build: Callable[[Any, BuildContext], Branch]


BRANCHES: Registry[BranchSpec] = Registry("branch", package=__name__)


def register_branch(spec: BranchSpec) -> BranchSpec:
    """Add a branch declaration to the registry."""
    return BRANCHES.register(spec.name, spec)


def list_branches() -> list[str]:
    return BRANCHES.names()


def branch_option_classes() -> list[type]:
    """The settings dataclass of every registered branch."""
    return [spec.options for _, spec in BRANCHES.items()]


def build_branches(
    names: Sequence[str],
    /,
    *,
    device: str = "cpu",
    random_weights: bool = False,
    **options: Any,
) -> list[Branch]:
    """Build the named branches with their models loaded.

    ``options`` are branch options by name (``grid="3x3"``, ``clip_model=...``,
    ``spatial_clips=4``); each branch takes its own and ignores the others'. A name that is
    no branch's option is refused.
    """
    if not names:
        raise OptionError("no extraction branch selected")
    specs = [BRANCHES.get(name) for name in dict.fromkeys(names)]
    unknown = unknown_keys(options, *branch_option_classes())
    if unknown:
        raise OptionError(f"unknown branch option(s) {', '.join(unknown)}")
    context = BuildContext(device=device, random_weights=random_weights)
    built = []
    for spec in specs:
        settings = spec.options(**pick(spec.options, options))
        branch = spec.build(settings, context)
        branch.build_options = feature_options(settings)
        built.append(branch)
    return built


def recorded_config(branch: Branch) -> dict:
    """What a store records for a branch: its configuration plus, when it was built from
    declared options, those that define its features (``options``), so that the same branch
    can be built again (``vqa-pipe score`` does, from a model bundle)."""
    config = dict(branch.config())
    options = getattr(branch, "build_options", None)
    if options is not None:
        config["options"] = dict(options)
    return config


@dataclass(frozen=True)
class UnionPlan:
    """Every frame any of several plans asks for (picklable, so a decode worker can use it)."""

    plans: tuple

    def indices(self, info: Any) -> list[int]:
        wanted: set[int] = set()
        for plan in self.plans:
            wanted.update(int(i) for i in plan.indices(info))
        return sorted(wanted)


class VideoFeed:
    """One video in flight: hands each decoded frame to the branches that asked for it.

    Several feeds may be open at once (one per decoder of a pool): branches keep per-video
    state in the object ``start_video`` returns, never in themselves.
    """

    def __init__(self, info: Any, branches: Sequence[Branch], key: str) -> None:
        self.branches = list(branches)
        self.wanted = [set(int(i) for i in b.plan().indices(info)) for b in self.branches]
        self.states = [b.start_video(key, info) for b in self.branches]

    def add(self, frame: Any) -> None:
        for branch, want, state in zip(self.branches, self.wanted, self.states):
            if frame.index in want:
                branch.add_frame(state, frame)

    def finish(self) -> dict[str, dict[str, np.ndarray]]:
        """Each branch's arrays for the video (exceptions propagate: the video failed)."""
        return {b.name: b.finish_video(s) for b, s in zip(self.branches, self.states)}


def run_branches(
    info: Any, frames: Any, branches: Sequence[Branch], key: str
) -> dict[str, dict[str, np.ndarray]]:
    """Feed one video's frames to each branch that asked for them; return each branch's arrays.

    Exceptions from decoding or from a branch propagate: the caller records the video as failed.
    """
    feed = VideoFeed(info, branches, key)
    for frame in frames:
        feed.add(frame)
    return feed.finish()


def check_arrays(branch: str, arrays: Mapping[str, np.ndarray]) -> None:
    """Refuse results with NaN or infinite values, naming the array."""
    for name, value in arrays.items():
        value = np.asarray(value)
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise ValueError(f"{branch}/{name} has non-finite values")
