"""A frozen open_clip model, loaded only from local files (or random weights behind a flag).

Where the weights come from (``load_clip(name, pretrained)``), following open_clip's conventions:

- an open_clip tag (``openai``, ``laion2b_s34b_b79k``, ...) looked up in the local Hugging Face /
  open_clip caches; the tag's own record says whether it needs QuickGELU and which mean/std;
- a folder holding ``open_clip_config.json`` (``model_cfg`` + ``preprocess_cfg``) and a
  checkpoint, as distributed on the model hub; given as ``pretrained=FOLDER`` with a model name
  whose config must equal the folder's, or as open_clip's ``name="local-dir:FOLDER"``;
- a checkpoint file (safetensors or a torch state dict, open_clip or OpenAI key format). A file
  next to an ``open_clip_config.json`` is checked against it like a folder.

QuickGELU is never guessed silently. The activation is the one the model name's config says
(``ViT-B-32-quickgelu`` has QuickGELU, ``ViT-B-32`` GELU) unless the weights say otherwise:

- a tag or ``open_clip_config.json`` that disagrees with the name is refused, naming the model
  to use;
- a state dict in the format of OpenAI's TorchScript archive (it carries ``input_resolution``,
  ``context_length`` and ``vocab_size`` entries) was trained with QuickGELU: a GELU name is
  refused;
- a bare state dict for a name whose published weights differ in activation (ViT-B-32: OpenAI,
  LAION-400M and MetaCLIP use QuickGELU, LAION-2B and DataComp GELU) is refused unless the
  activation is stated, by a ``-quickgelu`` name or by ``quick_gelu=True/False``; the file
  alone cannot tell the two apart.

TorchScript archives (OpenAI's original ``.pt`` files) are refused with the command that converts
them; nothing pickled is ever executed. Nothing is downloaded here; ``vqa-pipe weights download
MODEL TAG`` does that on a machine that is online.
"""

from __future__ import annotations

import json
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
LOCAL_DIR = "local-dir:"
CONFIG_FILE = "open_clip_config.json"
QUICKGELU_SUFFIX = "-quickgelu"
# Entries of the state dict of OpenAI's TorchScript CLIP archives (not weights).
OPENAI_MARKERS = ("input_resolution", "context_length", "vocab_size")
# open_clip's preference when a folder holds several checkpoints.
CHECKPOINT_NAMES = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth",
    "model.safetensors",
    "pytorch_model.bin",
    "pytorch_model.pth",
    "model.pth",
)

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
    quick_gelu: bool = False
    device: str = "cpu"
    _tokenizer: Any = field(default=None, repr=False)
    _buffer: Any = field(default=None, repr=False)

    @property
    def random_weights(self) -> bool:
        return self.weights.get("source") == RANDOM

    def config(self) -> dict:
        return {
            "model": self.name,
            "weights": self.weights,
            "random_weights": self.random_weights,
            "image_size": self.image_size,
            "quick_gelu": self.quick_gelu,
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "logit_scale": round(self.logit_scale, 6),
        }

    def encode_texts(self, texts: list[str], *, normalize: bool = True) -> Any:
        """Text embeddings (r, D), float32 on CPU; L2-normalised unless ``normalize=False``."""
        import torch

        tokens = self._tokenizer(list(texts)).to(self.device)
        with torch.inference_mode():
            emb = self.model.encode_text(tokens).float()
        if normalize:
            emb = torch.nn.functional.normalize(emb, dim=-1)
        return emb.cpu()

    def _input_buffer(self, shape: tuple[int, ...]) -> Any:
        """A float32 input batch of ``shape``, reused between calls (a fresh 170 MB batch per
        call costs as much in page faults as the copies that fill it)."""
        import torch

        size = 1
        for n in shape:
            size *= int(n)
        buffer = self._buffer
        if buffer is None or buffer.numel() < size:
            buffer = self._buffer = torch.empty(size, dtype=torch.float32, device=self.device)
        return buffer[:size].view(shape)

    def encode_images(
        self,
        images: Any,
        *,
        mean: tuple[float, float, float] | None = None,
        std: tuple[float, float, float] | None = None,
        normalize: bool = True,
        tokens: bool = False,
    ) -> Any:
        """Embeddings (N, D) of (N, 3, S, S) uint8 images (or floats in [0, 1]), or of a list
        of N (S, S, 3) uint8 images in height-width-channel order (e.g. window views of
        decoded frames): these are copied once, straight into the model's float input, which
        is then used in channels-last layout (no further copy).

        Pixels are normalised with ``mean``/``std`` (default: the model's own). The embedding is
        L2-normalised unless ``normalize=False``. With ``tokens=True`` the result is
        ``(embeddings, patch_tokens)``: the (N, n_patches, width) output of the last transformer
        block without the class token (before ``ln_post``), float32.
        """
        import torch

        mean_t = torch.tensor(mean or self.mean, device=self.device)
        std_t = torch.tensor(std or self.std, device=self.device)
        if isinstance(images, (list, tuple)):
            x = self._input_buffer((len(images),) + tuple(images[0].shape))
            for i, image in enumerate(images):
                x[i].copy_(image, non_blocking=True)
            # (x / 255 - mean) / std in one pass: x * scale + shift (channels last)
            torch.addcmul(-mean_t / std_t, x, 1.0 / (255.0 * std_t), out=x)
            x = x.permute(0, 3, 1, 2)
        elif images.dtype == torch.uint8:
            x = images.to(self.device, non_blocking=True).float()
            shape = (1, 3, 1, 1)
            torch.addcmul(-(mean_t / std_t).view(shape), x, (1.0 / (255.0 * std_t)).view(shape),
                          out=x)
        else:
            x = images.to(self.device, non_blocking=True).float()
            x = (x - mean_t.view(1, 3, 1, 1)) / std_t.view(1, 3, 1, 1)
        on_cuda = x.device.type == "cuda"
        captured: list = []
        hook = None
        if tokens:
            transformer = getattr(self.model.visual, "transformer", None)
            if transformer is None or not hasattr(self.model.visual, "class_embedding"):
                raise WeightsError(
                    f"patch tokens need a ViT image tower; {self.name} has "
                    f"{type(self.model.visual).__name__}. Turn clip_tokens off or use a ViT model"
                )
            hook = transformer.register_forward_hook(lambda m, i, out: captured.append(out))
        try:
            with torch.inference_mode(), torch.autocast(
                "cuda", dtype=torch.float16, enabled=on_cuda
            ):
                emb = self.model.encode_image(x)
        finally:
            if hook is not None:
                hook.remove()
        emb = emb.float()
        if normalize:
            emb = torch.nn.functional.normalize(emb, dim=-1)
        if not tokens:
            return emb
        out = captured[-1]
        if not getattr(self.model.visual.transformer, "batch_first", True):
            out = out.permute(1, 0, 2)
        return emb, out[:, 1:, :].float()


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


# ---------------------------------------------------------------------------- activation rules
def _cfg_quick_gelu(cfg: dict | None) -> bool:
    return bool((cfg or {}).get("quick_gelu", False))


def _comparable(cfg: dict) -> dict:
    """A model config as compared between a checkpoint's JSON and a registered model."""
    out = json.loads(json.dumps(cfg))
    out["quick_gelu"] = bool(out.get("quick_gelu", False))
    if not out.get("custom_text"):
        out.pop("custom_text", None)
    return out


def _cfg_diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(a) | set(b))
    diffs = []
    for k in keys:
        if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
            diffs += _cfg_diff(a[k], b[k], f"{prefix}{k}.")
        elif a.get(k) != b.get(k):
            diffs.append(f"{prefix}{k}: {b.get(k)!r} in the checkpoint's config, {a.get(k)!r} here")
    return diffs


def _models_with_cfg(cfg: dict) -> list[str]:
    open_clip = _open_clip()
    want = _comparable(cfg)
    return [n for n in sorted(open_clip.list_models()) if _comparable(
        open_clip.get_model_config(n) or {}) == want]


def _quickgelu_name(name: str) -> str | None:
    """The registered ``-quickgelu`` variant of a GELU model name, if there is one."""
    candidate = name + QUICKGELU_SUFFIX
    return candidate if candidate in _open_clip().list_models() else None


def _gelu_name(name: str) -> str | None:
    if name.endswith(QUICKGELU_SUFFIX):
        base = name[: -len(QUICKGELU_SUFFIX)]
        return base if base in _open_clip().list_models() else None
    return None


def _use_quick(name: str, hint: str) -> str:
    alt = _quickgelu_name(name)
    return f"--clip-model {alt}" if alt else hint


@dataclass
class _Plan:
    build: str  # the open_clip model name to build (a registered name or local-dir:FOLDER)
    quick_gelu: bool
    checkpoint: Path | None
    weights: dict
    mean: tuple | None = None
    std: tuple | None = None
    state: dict | None = None  # already read from the checkpoint


def _check_explicit(explicit: bool | None, decided: bool, why: str) -> None:
    if explicit is not None and explicit != decided:
        have = "QuickGELU" if decided else "GELU"
        asked = "QuickGELU" if explicit else "GELU"
        raise WeightsError(f"{asked} was asked for, but {why} says {have}; drop the override")


def _read_json_config(path: Path) -> dict:
    try:
        spec = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise WeightsError(f"cannot read {path}: {err}") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("model_cfg"), dict):
        raise WeightsError(
            f"{path} has no \"model_cfg\" object: not an open_clip checkpoint config "
            "(expected {\"model_cfg\": {...}, \"preprocess_cfg\": {...}})"
        )
    return spec


def _find_checkpoint(folder: Path) -> Path:
    for name in CHECKPOINT_NAMES:
        if (folder / name).is_file():
            return folder / name
    found = sorted(
        p for p in folder.iterdir()
        if p.is_file() and p.suffix in (".safetensors", ".bin", ".pth", ".pt")
    )
    if len(found) == 1:
        return found[0]
    raise WeightsError(
        f"{folder} holds {CONFIG_FILE} but "
        + ("no checkpoint" if not found else f"several checkpoints ({[p.name for p in found]})")
        + f"; expected one of {', '.join(CHECKPOINT_NAMES)}, or pass the checkpoint file itself"
    )


def _config_plan(
    name: str | None, config_path: Path, checkpoint: Path, explicit: bool | None
) -> _Plan:
    """Weights whose open_clip_config.json says what they are."""
    spec = _read_json_config(config_path)
    model_cfg = spec["model_cfg"]
    quick = _cfg_quick_gelu(model_cfg)
    folder = config_path.parent
    if name is None:
        build = f"{LOCAL_DIR}{folder}"
    else:
        registered = _open_clip().get_model_config(name) or {}
        if _comparable(registered) != _comparable(model_cfg):
            matches = _models_with_cfg(model_cfg)
            use = (
                f"--clip-model {matches[0]}" if matches
                else f"--clip-model {LOCAL_DIR}{folder} (without --clip-pretrained)"
            )
            diffs = _cfg_diff(_comparable(registered), _comparable(model_cfg))
            raise WeightsError(
                f"{config_path} describes another model than {name} ("
                + "; ".join(diffs[:4]) + (" ..." if len(diffs) > 4 else "")
                + f"): use {use}"
            )
        build = name
    _check_explicit(explicit, quick, str(config_path))
    pre = spec.get("preprocess_cfg") or {}
    return _Plan(
        build=build,
        quick_gelu=quick,
        checkpoint=checkpoint,
        weights={
            "source": "file",
            **file_identity(checkpoint),
            "config": config_path.name,
            "config_sha256": file_identity(config_path)["sha256"],
            "quick_gelu_from": CONFIG_FILE,
        },
        mean=tuple(pre["mean"]) if "mean" in pre else None,
        std=tuple(pre["std"]) if "std" in pre else None,
    )


def _file_plan(name: str, checkpoint: Path, explicit: bool | None) -> _Plan:
    """A bare checkpoint file: the model name decides, unless the file or the tags object."""
    open_clip = _open_clip()
    state = load_state_dict(checkpoint, what=f"CLIP checkpoint for {name}")
    markers = [k for k in OPENAI_MARKERS if k in state]
    cfg_quick = _cfg_quick_gelu(open_clip.get_model_config(name))
    tags = open_clip.list_pretrained_tags_by_model(name)
    quick_tags = [t for t in tags if _cfg_quick_gelu(open_clip.get_pretrained_cfg(name, t))]
    gelu_tags = [t for t in tags if t not in quick_tags]
    if cfg_quick:
        _check_explicit(explicit, True, f"the model name {name}")
        quick, why = True, "model name"
    elif markers:
        if explicit is False:
            raise WeightsError(
                f"{checkpoint} is in the format of OpenAI's CLIP archives (it holds {markers}), "
                "whose weights were trained with QuickGELU; GELU would give wrong embeddings"
            )
        if explicit is None:
            raise WeightsError(
                f"{checkpoint} is in the format of OpenAI's CLIP archives (it holds {markers}): "
                f"these weights need QuickGELU, but {name} builds GELU. Use "
                + _use_quick(name, "--clip-activation quickgelu")
            )
        quick, why = True, "explicit"
    elif explicit is not None:
        quick, why = explicit, "explicit"
    elif quick_tags:
        gelu = f"GELU ({', '.join(gelu_tags[:4])})" if gelu_tags else "none in GELU"
        raise WeightsError(
            f"{checkpoint} is a bare state dict for {name}, and published {name} weights differ "
            f"in activation: QuickGELU ({', '.join(quick_tags[:4])}) and {gelu}. The file does "
            "not say which it is, and the wrong one gives wrong embeddings without an error. "
            f"For QuickGELU-trained weights (OpenAI's among them) use "
            + _use_quick(name, "--clip-activation quickgelu")
            + "; for GELU-trained ones pass --clip-activation gelu; or pass the folder that "
            f"holds the file and its {CONFIG_FILE}"
        )
    else:
        quick, why = False, "model name"
    weights = {"source": "file", **file_identity(checkpoint), "quick_gelu_from": why}
    if markers:
        weights["format"] = "openai"
    return _Plan(name, quick, checkpoint, weights, state=state)


def _tag_plan(name: str, tag: str, explicit: bool | None, cache_dir: str | None) -> _Plan:
    checkpoint, cfg = _tag_file(name, tag, cache_dir)
    tag_quick = _cfg_quick_gelu(cfg)
    if _cfg_quick_gelu(_open_clip().get_model_config(name)) and not tag_quick:
        base = _gelu_name(name)
        raise WeightsError(
            f"tag {tag} of {name} was trained with GELU, but {name} builds QuickGELU: use "
            + (f"--clip-model {base}" if base else "a model name without -quickgelu")
        )
    _check_explicit(explicit, tag_quick, f"the pretrained tag {tag}")
    return _Plan(
        build=name,
        quick_gelu=tag_quick,
        checkpoint=checkpoint,
        weights={
            "source": "tag", "tag": tag, **file_identity(checkpoint), "quick_gelu_from": "tag"
        },
        mean=tuple(cfg["mean"]) if "mean" in cfg else None,
        std=tuple(cfg["std"]) if "std" in cfg else None,
    )


def _plan(
    name: str,
    pretrained: str | Path | None,
    random_weights: bool,
    explicit: bool | None,
    seed: int,
    cache_dir: str | None,
) -> _Plan:
    if name.startswith(LOCAL_DIR):
        folder = Path(name[len(LOCAL_DIR):]).expanduser()
        if random_weights:
            raise WeightsError(f"{name} takes its weights from the folder; drop --random-weights")
        if not folder.is_dir():
            raise WeightsError(f"CLIP model folder not found: {folder}")
        if pretrained and Path(str(pretrained)).resolve() != folder.resolve():
            raise WeightsError(
                f"{name} takes its weights from that folder; drop --clip-pretrained {pretrained}"
            )
        if not (folder / CONFIG_FILE).is_file():
            raise WeightsError(f"{folder} has no {CONFIG_FILE}: not an open_clip model folder")
        return _config_plan(None, folder / CONFIG_FILE, _find_checkpoint(folder), explicit)
    _check_model_name(name)
    if random_weights and pretrained:
        raise WeightsError("pass either --clip-pretrained or --random-weights, not both")
    if not random_weights and not pretrained:
        raise WeightsError(
            f"no CLIP weights given for {name}: pass --clip-pretrained TAG|FILE|FOLDER "
            "(e.g. --clip-model ViT-B-32 --clip-pretrained openai), "
            "or --random-weights for a smoke test with meaningless results"
        )
    if random_weights:
        cfg_quick = _cfg_quick_gelu(_open_clip().get_model_config(name))
        if cfg_quick and explicit is False:
            raise WeightsError(f"{name} builds QuickGELU; GELU was asked for: drop the override")
        quick = cfg_quick or bool(explicit)
        return _Plan(name, quick, None, {"source": RANDOM, "seed": seed})
    path = Path(str(pretrained)).expanduser()
    if path.is_dir():
        if not (path / CONFIG_FILE).is_file():
            raise WeightsError(
                f"{path} is a folder without {CONFIG_FILE}; pass the checkpoint file inside it "
                "or a folder as distributed on the model hub (config + weights)"
            )
        return _config_plan(name, path / CONFIG_FILE, _find_checkpoint(path), explicit)
    if path.is_file():
        if (path.parent / CONFIG_FILE).is_file():
            return _config_plan(name, path.parent / CONFIG_FILE, path, explicit)
        return _file_plan(name, path, explicit)
    if os.sep in str(pretrained) or path.suffix in (".safetensors", ".bin", ".pt", ".pth"):
        raise WeightsError(f"CLIP checkpoint file not found: {pretrained}")
    return _tag_plan(name, str(pretrained), explicit, cache_dir)


def _uses_quick_gelu(model: Any) -> bool:
    from open_clip.transformer import QuickGELU

    return any(isinstance(m, QuickGELU) for m in model.modules())


def load_clip(
    name: str = "ViT-B-32",
    pretrained: str | Path | None = None,
    *,
    random_weights: bool = False,
    quick_gelu: bool | None = None,
    device: str = "cpu",
    cache_dir: str | None = None,
    seed: int = 0,
) -> ClipModel:
    """Build an open_clip model from local weights, or random weights when asked explicitly.

    Args:
        name: open_clip model name (``vqa-pipe`` adds ``vqa-tiny-clip`` and
            ``vqa-tiny-clip-quickgelu`` for tests), or ``local-dir:FOLDER``.
        pretrained: an open_clip tag resolved from the local caches, a checkpoint file
            (safetensors or torch state dict), or a folder with ``open_clip_config.json``.
        random_weights: build untrained weights (seeded); refused together with ``pretrained``.
        quick_gelu: state the activation the weights were trained with (``None``: decided from
            the name, tag or config; see the module docstring). A statement that contradicts
            the weights' own record is refused.
        device: ``cpu`` or ``cuda[:i]``.

    Raises:
        WeightsError: missing or unreadable weights, weights that do not fit the model, or an
            activation that cannot be decided.
    """
    import torch

    open_clip = _open_clip()
    plan = _plan(name, pretrained, random_weights, quick_gelu, seed, cache_dir)
    torch.manual_seed(seed)
    # open_clip logs "Model initialized randomly" for weights it did not load; with a
    # checkpoint that is loaded just below, the message would be false, so it is silenced.
    quiet = logging.getLogger()
    level = quiet.level
    if plan.checkpoint is not None:
        quiet.setLevel(logging.ERROR)
    try:
        model = open_clip.create_model(
            plan.build, pretrained=None, load_weights=False, force_quick_gelu=plan.quick_gelu
        )
    finally:
        quiet.setLevel(level)
    if _uses_quick_gelu(model) != plan.quick_gelu and hasattr(model, "transformer"):
        raise RuntimeError(f"{plan.build} was built with the wrong activation")  # a bug
    if plan.checkpoint is not None:
        state = plan.state
        if state is None:
            state = load_state_dict(plan.checkpoint, what=f"CLIP checkpoint for {name}")
        state = {k: v for k, v in state.items() if k not in OPENAI_MARKERS}
        try:
            result = model.load_state_dict(state, strict=False)
        except RuntimeError as err:
            raise WeightsError(
                f"{plan.checkpoint} does not fit CLIP model {name}: "
                f"{str(err).splitlines()[-1].strip()[:300]}. Is it a checkpoint of another model?"
            ) from None
        if result.missing_keys or result.unexpected_keys:
            raise WeightsError(
                f"{plan.checkpoint} does not fit CLIP model {name}: "
                + describe_mismatch(result.missing_keys, result.unexpected_keys)
                + ". Is it a checkpoint of another model?"
            )
    model = model.eval().requires_grad_(False).to(device)
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else int(size)
    pre = getattr(model.visual, "preprocess_cfg", {}) or {}
    mean = plan.mean or tuple(pre.get("mean") or OPENAI_MEAN)
    std = plan.std or tuple(pre.get("std") or OPENAI_STD)
    return ClipModel(
        model=model,
        name=name,
        weights=plan.weights,
        image_size=size,
        mean=tuple(float(v) for v in mean),
        std=tuple(float(v) for v in std),
        logit_scale=float(model.logit_scale.exp().item()),
        quick_gelu=plan.quick_gelu,
        device=device,
        _tokenizer=open_clip.get_tokenizer(plan.build),
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
