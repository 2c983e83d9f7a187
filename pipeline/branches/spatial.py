"""The ``spatial`` branch's declaration: FAST-VQA fragments through a Video Swin Tiny. The
implementation is :class:`vqa_pipe.pipeline.spatial_branch.SpatialBranch`."""

from __future__ import annotations

from dataclasses import dataclass

from vqa_pipe.pipeline.branches import BranchSpec, BuildContext, register_branch
from vqa_pipe.pipeline.fragments import SAMPLERS as CLIP_SAMPLERS
from vqa_pipe.pipeline.fragments import SMALL_FRAMES
from vqa_pipe.pipeline.options import check_fields, option


def _backbones() -> list[str]:
    from vqa_pipe.pipeline.backbones import list_backbones

    return ["auto", *list_backbones()]


@dataclass(frozen=True)
class SpatialOptions:
    """Options of the spatial branch."""

    swin_weights: str | None = option(
        None,
        "Video Swin Tiny checkpoint: torchvision Kinetics-400, FAST-VQA or DOVER.",
        metavar="FILE",
        feature=False,  # the weights' identity (sha256) is recorded instead of the path
    )
    spatial_clips: int = option(4, "Fragment clips per video.", min=1)
    spatial_output: str = option(
        "map",
        "Store the Swin feature map per clip (plus pooled) or only the pooled vector.",
        choices=("map", "pooled"),
    )
    spatial_backbone: str = option(
        "auto",
        "auto: chosen from the checkpoint's keys (FAST-VQA/DOVER -> swin3d_t_grpb).",
        choices=_backbones,
    )
    spatial_samplings: int = option(
        1, "Differently seeded fragment samplings per clip (training augmentation).",
        min=1, max=64,
    )
    spatial_seed: int = option(0, "Fragment sampling seed (patch positions and clip offsets).")
    spatial_clip_sampler: str = option(
        "fastvqa",
        "Clip starts: fastvqa (FAST-VQA's test sampler: segment starts plus seeded offsets) or "
        "centred (the earlier evenly centred clips).",
        choices=CLIP_SAMPLERS,
    )
    spatial_small_frames: str = option(
        "fastvqa",
        "Frames smaller than the fragment grid: fastvqa (torch bilinear upsampling, patches on "
        "the original grid, as FAST-VQA) or resize (Pillow upscale first).",
        choices=SMALL_FRAMES,
    )

    def __post_init__(self) -> None:
        check_fields(self)


def build(options: SpatialOptions, context: BuildContext):
    from vqa_pipe.pipeline.spatial_branch import SpatialBranch

    backbone = options.spatial_backbone
    if backbone == "auto" and not options.swin_weights:
        backbone = "swin3d_t"  # random weights: nothing to detect from
    return SpatialBranch(
        backbone_name=backbone,
        weights=options.swin_weights,
        random_weights=context.random_weights,
        n_clips=options.spatial_clips,
        n_samplings=options.spatial_samplings,
        seed=options.spatial_seed,
        clip_sampler=options.spatial_clip_sampler,
        small_frames=options.spatial_small_frames,
        store_maps=options.spatial_output == "map",
        device=context.device,
    )


SPEC = register_branch(
    BranchSpec(
        name="spatial",
        summary="FAST-VQA fragments through a Video Swin Tiny",
        options=SpatialOptions,
        arrays={
            "clip_maps": "(clips, 768, 16, 7, 7) float16: the Swin Tiny's last feature map",
            "clip_pooled": "(clips, 768) float32: its global average",
        },
        build=build,
    )
)
