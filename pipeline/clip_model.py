"""A frozen open_clip model, loaded only from local files (or random weights behind a flag).

``--clip-pretrained`` takes a path to a checkpoint file, or an open_clip tag (``openai``,
``laion2b_s34b_b79k``, ...) that is looked up in the local Hugging Face / open_clip caches.
Nothing is downloaded here; ``vqa-pipe weights download MODEL TAG`` does that on a machine
that is online.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from vqa_pipe.pipeline.weights import (
    RANDOM,
    WeightsError,
    describe_mismatch,
    file_identity,
    load_state_dict,
)

TINY_MODEL = "vqa-tiny-clip"  # a 2-layer CLIP for tests and fast demos; random weights only
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
HF_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")

_registered = False


def _open_clip():
    """Import open_clip offline, with the project's model configs registered."""
    global _registered
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import open_clip

    if not _registered:
        folder = resources.files("vqa_pipe.pipeline").joinpath("data/clip_configs")
        open_clip.add_model_config(Path(str(folder)))
        _registered = True
    return open_clip


@dataclass
class ClipModel:
    """A frozen CLIP with what the extractor needs: encoders, normalisation, logit scale."""

    model: Any
    name: str
    weights: dict  # identity: {"source": "random"} or {"tag"/"file", "sha256", ...}
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    logit_scale: float
    device: str = "cpu"
    _tokenizer: Any = field(default=None, repr=False)

    @property
    def random_weights(self) -> bool:
        return self.weights.get("source") == RANDOM

    def config(self) -> dict:
        return {
            "model": self.name,
            "weights": self.weights,
            "random_weights": self.random_weights,
            "image_size": self.image_size,
            "logit_scale": round(self.logit_scale, 6),
        }

    def encode_texts(self, texts: list[str]) -> Any:
        """L2-normalised text embeddings (r, D), float32 on CPU."""
        import torch

        tokens = self._tokenizer(list(texts)).to(self.device)
        with torch.inference_mode():
            emb = self.model.encode_text(tokens).float()
        return torch.nn.functional.normalize(emb, dim=-1).cpu()

    def encode_images(self, images: Any) -> Any:
        """L2-normalised embeddings (N, D) of (N, 3, S, S) uint8 images (or floats in [0, 1])."""
        import torch

        x = images.to(self.device, non_blocking=True)
        x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        x = (x - mean) / std
        on_cuda = x.device.type == "cuda"
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=on_cuda):
            emb = self.model.encode_image(x)
        return torch.nn.functional.normalize(emb.float(), dim=-1)


def available_models() -> list[str]:
    return sorted(_open_clip().list_models())


def _check_model_name(name: str) -> None:
    models = available_models()
    if name not in models:
        raise WeightsError(f"unknown CLIP model '{name}'. Available models: {', '.join(models)}")


def _tag_file(name: str, tag: str, cache_dir: str | None) -> tuple[Path, dict]:
    """Find a tag's checkpoint in the local caches, or explain how to get it."""
    open_clip = _open_clip()
    tags = open_clip.list_pretrained_tags_by_model(name)
    if tag not in tags:
        raise WeightsError(
            f"'{tag}' is neither a checkpoint file nor a known tag for {name}. "
            f"Available tags: {', '.join(tags) or 'none (pass a checkpoint file)'}"
        )
    cfg = open_clip.get_pretrained_cfg(name, tag)
    looked = []
    hub = (cfg.get("hf_hub") or "").strip("/")
    if hub:
        from huggingface_hub import try_to_load_from_cache

        repo_id = "/".join(hub.split("/")[:2])
        for filename in HF_FILES:
            found = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir)
            looked.append(f"hf://{repo_id}/{filename}")
            if isinstance(found, str) and Path(found).is_file():
                return Path(found), cfg
    url = cfg.get("url")
    if url:
        root = Path(cache_dir or Path.home() / ".cache" / "clip")
        candidate = root / os.path.basename(url)
        looked.append(str(candidate))
        if candidate.is_file() and candidate.suffix != ".pt":  # .pt: TorchScript archives
            return candidate, cfg
    raise WeightsError(
        f"CLIP weights {name} / {tag} are not on this machine (looked in: {', '.join(looked)}). "
        f"On a machine with internet run `vqa-pipe weights download {name} {tag}` and copy the "
        "Hugging Face cache here, or pass --clip-pretrained /path/to/open_clip_model.safetensors. "
        "For a smoke test without weights use --random-weights (results are meaningless)."
    )


def load_clip(
    name: str = "ViT-B-32",
    pretrained: str | Path | None = None,
    *,
    random_weights: bool = False,
    device: str = "cpu",
    cache_dir: str | None = None,
    seed: int = 0,
) -> ClipModel:
    """Build an open_clip model from local weights, or random weights when asked explicitly.

    Args:
        name: open_clip model name (``vqa-pipe`` adds ``vqa-tiny-clip`` for tests).
        pretrained: a checkpoint file (safetensors or torch state dict) or an open_clip tag
            resolved from the local caches.
        random_weights: build untrained weights (seeded); refused together with ``pretrained``.
        device: ``cpu`` or ``cuda[:i]``.
    """
    import torch

    open_clip = _open_clip()
    _check_model_name(name)
    if random_weights and pretrained:
        raise WeightsError("pass either --clip-pretrained or --random-weights, not both")
    if not random_weights and not pretrained:
        raise WeightsError(
            f"no CLIP weights given for {name}: pass --clip-pretrained TAG|FILE "
            "(e.g. --clip-model ViT-B-32 --clip-pretrained openai), "
            "or --random-weights for a smoke test with meaningless results"
        )
    quick_gelu = False
    mean, std = OPENAI_MEAN, OPENAI_STD
    if random_weights:
        checkpoint, weights = None, {"source": RANDOM, "seed": seed}
    elif Path(str(pretrained)).is_file():
        checkpoint = Path(str(pretrained))
        weights = {"source": "file", **file_identity(checkpoint)}
    elif os.sep in str(pretrained) or Path(str(pretrained)).suffix in (
        ".safetensors",
        ".bin",
        ".pt",
        ".pth",
    ):
        raise WeightsError(f"CLIP checkpoint file not found: {pretrained}")
    else:
        checkpoint, cfg = _tag_file(name, str(pretrained), cache_dir)
        quick_gelu = bool(cfg.get("quick_gelu", False))
        mean, std = tuple(cfg.get("mean", mean)), tuple(cfg.get("std", std))
        weights = {"source": "tag", "tag": str(pretrained), **file_identity(checkpoint)}

    torch.manual_seed(seed)
    # open_clip logs "Model initialized randomly" for pretrained=None; with a checkpoint that
    # is loaded just below, the message would be false, so it is silenced for that call.
    quiet = logging.getLogger()
    level = quiet.level
    if checkpoint is not None:
        quiet.setLevel(logging.ERROR)
    try:
        model = open_clip.create_model(name, pretrained=None, force_quick_gelu=quick_gelu)
    finally:
        quiet.setLevel(level)
    if checkpoint is not None:
        state = load_state_dict(checkpoint, what=f"CLIP checkpoint for {name}")
        result = model.load_state_dict(state, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise WeightsError(
                f"{checkpoint} does not fit CLIP model {name}: "
                + describe_mismatch(result.missing_keys, result.unexpected_keys)
                + ". Is it a checkpoint of another model?"
            )
    model = model.eval().requires_grad_(False).to(device)
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else int(size)
    if weights["source"] != "tag":
        mean = tuple(getattr(model.visual, "image_mean", None) or mean)
        std = tuple(getattr(model.visual, "image_std", None) or std)
    return ClipModel(
        model=model,
        name=name,
        weights=weights,
        image_size=size,
        mean=mean,
        std=std,
        logit_scale=float(model.logit_scale.exp().item()),
        device=device,
        _tokenizer=open_clip.get_tokenizer(name),
    )


def download_weights(name: str, tag: str, cache_dir: str | None = None) -> Path:
    """Fetch a tag's checkpoint into the local cache (needs internet)."""
    os.environ.pop("HF_HUB_OFFLINE", None)
    import open_clip

    _check_model_name(name)
    cfg = open_clip.get_pretrained_cfg(name, tag)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(name)
        raise WeightsError(f"unknown tag '{tag}' for {name}. Available tags: {', '.join(tags)}")
    return Path(open_clip.download_pretrained(cfg, cache_dir=cache_dir))
