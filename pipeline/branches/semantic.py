"""The ``semantic`` branch's declaration: CLIP over an m×n grid of windows of each sampled
frame, scored against text descriptions (CLiF-VQA eqs. 1-7). The implementation is
:class:`vqa_pipe.pipeline.semantic_branch.SemanticBranch`."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from vqa_pipe.pipeline.branches import BranchSpec, BuildContext, register_branch
from vqa_pipe.pipeline.options import OptionError, check_fields, option
from vqa_pipe.pipeline.prompts import SOFTMAX_MODES


def parse_grid(value: object) -> tuple[int, int]:
    """``3x3`` (or ``(3, 3)``) -> ``(rows, cols)``, each 1..9."""
    if isinstance(value, (tuple, list)) and len(value) == 2:
        rows, cols = value
    else:
        match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", str(value))
        if not match:
            raise OptionError(f"grid: expected ROWSxCOLS such as 3x3, got {value!r}")
        rows, cols = match.groups()
    rows, cols = int(rows), int(cols)
    if not (1 <= rows <= 9 and 1 <= cols <= 9):
        raise OptionError(f"grid: rows and columns must be 1..9, got {rows}x{cols}")
    return rows, cols


def parse_fps(value: object) -> float | None:
    """Frames per second as a positive number, or ``all`` (every frame) -> None."""
    if value is None or str(value).strip().lower() == "all":
        return None
    try:
        fps = float(value)
    except (TypeError, ValueError):
        raise OptionError(f"fps: expected frames per second or 'all', got {value!r}") from None
    if not (fps > 0 and math.isfinite(fps)):
        raise OptionError(f"fps: must be a positive number or 'all', got {value!r}")
    return fps


@dataclass(frozen=True)
class SemanticOptions:
    """Options of the semantic branch."""

    clip_model: str = option("ViT-B-32", "open_clip model name (see `vqa-pipe weights list`).")
    clip_pretrained: str | None = option(
        None, "CLIP checkpoint: a file, or an open_clip tag found in the local cache."
    )
    grid: tuple[int, int] = option(
        (3, 3), "Windows per frame, ROWSxCOLS.", parse=parse_grid, show="3x3"
    )
    window_fit: str = option(
        "native",
        "native: windows at native resolution; cover: shrink big frames until covered.",
        choices=("native", "cover"),
    )
    softmax: str = option(
        "per_set",
        "Normalise over all prompts, per prompt set, or per antonym pair.",
        choices=SOFTMAX_MODES,
    )
    prompts: str = option("default", "'default' or a prompt JSON file.")
    fps: float | None = option(2.0, "Frames sampled per second, or 'all'.", parse=parse_fps,
                               show="2")
    max_frames: int = option(64, "Cap on sampled frames per video (0: none).", min=0)
    batch_windows: int = option(288, "Windows per CLIP batch.", min=1)

    def __post_init__(self) -> None:
        check_fields(self)


def build(options: SemanticOptions, context: BuildContext):
    from vqa_pipe.pipeline.clip_model import load_clip
    from vqa_pipe.pipeline.decode import FrameSampling
    from vqa_pipe.pipeline.prompts import load_prompts
    from vqa_pipe.pipeline.semantic_branch import SemanticBranch

    clip = load_clip(
        options.clip_model,
        options.clip_pretrained,
        random_weights=context.random_weights,
        device=context.device,
    )
    return SemanticBranch(
        clip,
        load_prompts(options.prompts),
        FrameSampling(fps=options.fps, max_frames=options.max_frames or None),
        grid=options.grid,
        window_fit=options.window_fit,
        softmax=options.softmax,
        batch_windows=options.batch_windows,
    )


SPEC = register_branch(
    BranchSpec(
        name="semantic",
        summary="CLIP over an m×n grid of windows per frame, scored against descriptions",
        options=SemanticOptions,
        arrays={
            "frame_scores": "(F, 2r) float32: mean over windows of the r probabilities, then max",
            "window_embeddings": "(F, m·n, D) float16: L2-normalised window embeddings",
            "frame_times": "(F,) float32: each sampled frame's time in seconds",
        },
        build=build,
    )
)
