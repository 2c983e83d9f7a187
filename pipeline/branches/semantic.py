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
from vqa_pipe.pipeline.semantic_branch import FRAME_NORMS, VIEWS

ACTIVATIONS = {"auto": None, "gelu": False, "quickgelu": True}


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


def parse_views(value: object) -> tuple[str, ...]:
    """``windows,frame`` (or a list) -> ``("windows", "frame")``."""
    items = value if isinstance(value, (list, tuple)) else str(value or "").split(",")
    views = tuple(dict.fromkeys(str(v).strip() for v in items if str(v).strip()))
    bad = [v for v in views if v not in VIEWS]
    if bad or not views:
        raise OptionError(f"views: choose from {', '.join(VIEWS)} (comma-separated), got {value!r}")
    return views


@dataclass(frozen=True)
class SemanticOptions:
    """Options of the semantic branch."""

    clip_model: str = option(
        "ViT-B-32",
        "open_clip model name (ViT-B-32, ViT-B-32-quickgelu, ...; `vqa-pipe weights list`) or "
        "local-dir:FOLDER.",
    )
    clip_pretrained: str | None = option(
        None,
        "CLIP weights: an open_clip tag in the local cache, a checkpoint file, or a model folder "
        "with open_clip_config.json.",
        feature=False,  # the weights' identity (sha256) is recorded instead of the path
    )
    clip_activation: str = option(
        "auto",
        "Activation the CLIP weights were trained with; auto reads it from the model name, tag "
        "or open_clip_config.json and refuses a bare file it cannot tell.",
        choices=tuple(ACTIVATIONS),
        feature=False,  # the resolved quick_gelu is recorded
    )
    views: tuple[str, ...] = option(
        ("windows",),
        "Semantic views, comma-separated: windows (CLiF-VQA windows and scores), frame "
        "(CLIPVQA's full-frame input).",
        parse=parse_views,
        show="windows",
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
        "all",
        "Softmax over all r descriptions (CLiF-VQA eq. 2), per prompt set (CLiF-VQA+), or per "
        "antonym pair (CLIP-IQA).",
        choices=SOFTMAX_MODES,
    )
    prompts: str = option(
        "default", "'default' or a prompt JSON file.", feature=False  # its texts are recorded
    )
    fps: float | None = option(2.0, "Frames sampled per second, or 'all'.", parse=parse_fps,
                               show="2")
    max_frames: int = option(64, "Cap on sampled frames per video (0: none).", min=0)
    tsn_segments: int = option(
        0,
        "Sample N frames, one per equal segment (CLIPVQA's test sampler); replaces --fps and "
        "--max-frames (0: off).",
        min=0,
    )
    clip_tokens: bool = option(
        False, "Also store the frame view's patch tokens (frame_tokens, float16; large)."
    )
    frame_norm: str = option(
        "clipvqa",
        "Frame-view pixel normalisation: ImageNet mean/std as CLIPVQA's code, or the CLIP "
        "model's own.",
        choices=FRAME_NORMS,
    )
    batch_windows: int = option(288, "Windows per CLIP batch.", min=1, feature=False)

    def __post_init__(self) -> None:
        check_fields(self)


def build(options: SemanticOptions, context: BuildContext):
    from vqa_pipe.pipeline.clip_model import load_clip
    from vqa_pipe.pipeline.frame_sampling import FrameSampling, TSNSampling
    from vqa_pipe.pipeline.prompts import load_prompts
    from vqa_pipe.pipeline.semantic_branch import SemanticBranch

    clip = load_clip(
        options.clip_model,
        options.clip_pretrained,
        random_weights=context.random_weights,
        quick_gelu=ACTIVATIONS[options.clip_activation],
        device=context.device,
    )
    if options.tsn_segments:
        sampling = TSNSampling(options.tsn_segments)
    else:
        sampling = FrameSampling(fps=options.fps, max_frames=options.max_frames or None)
    return SemanticBranch(
        clip,
        load_prompts(options.prompts),
        sampling,
        grid=options.grid,
        window_fit=options.window_fit,
        softmax=options.softmax,
        batch_windows=options.batch_windows,
        views=options.views,
        clip_tokens=options.clip_tokens,
        frame_norm=options.frame_norm,
    )


SPEC = register_branch(
    BranchSpec(
        name="semantic",
        summary="CLIP over an m×n grid of windows per frame, scored against descriptions",
        options=SemanticOptions,
        arrays={
            "frame_times": "(F,) float32: each sampled frame's time in seconds",
            "frame_scores": "(F, 2r) float32: mean over windows of the r probabilities, then "
            "max (windows view)",
            "window_embeddings": "(F, m·n, D) float16: L2-normalised window embeddings "
            "(windows view)",
            "frame_embeddings": "(F, D) float32: CLIP embedding of CLIPVQA's full-frame crop, "
            "not normalised (frame view)",
            "frame_tokens": "(F, N, W) float16: patch tokens after the last block "
            "(frame view with --clip-tokens)",
        },
        build=build,
    )
)
