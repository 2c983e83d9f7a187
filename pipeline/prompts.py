"""Prompt sets: text descriptions of quality factors and feelings, and how windows are scored.

A prompt file is JSON::

    {"name": "...",
     "sets": {"objective": {"template": "a {} photo.", "pairs": [["bright", "dark"], ...]},
                             "subjective": {...}}}

Each set has one template and a list of antonym pairs ``[positive, negative]``. The r
descriptions are the pairs flattened, set after set (``bright, dark, sharp, blurry, ...``).
Descriptions must be unique across the file: each one names the features ``avg:<description>``
and ``max:<description>``.

Softmax modes (how each window's r similarities become probabilities, CLiF-VQA eq. 4):

- ``all``: one softmax over all r descriptions, as in the paper (eq. 2; the default);
- ``per_set``: a softmax within each set, so objective and subjective are normalised apart
  (the CLiF-VQA+ finding that one joint softmax suppresses features);
- ``pairs``: a softmax within each antonym pair, as CLIP-IQA does.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from vqa_pipe.pipeline.errors import VqaPipeError

SOFTMAX_MODES = ("all", "per_set", "pairs")
DEFAULT_PROMPTS = "default"


class PromptError(VqaPipeError):
    """A prompt file is missing or malformed."""


@dataclass(frozen=True)
class PromptSet:
    """Descriptions, the texts fed to CLIP, and the groups each softmax mode normalises over."""

    name: str
    descriptions: tuple[str, ...]
    texts: tuple[str, ...]
    set_names: tuple[str, ...]  # per description: which set it belongs to
    pair_index: tuple[int, ...]  # per description: global index of its antonym pair

    @property
    def r(self) -> int:
        return len(self.descriptions)

    def groups(self, softmax: str) -> list[np.ndarray]:
        """Index groups over which the softmax is taken."""
        if softmax not in SOFTMAX_MODES:
            raise ValueError(f"softmax must be one of {SOFTMAX_MODES}, got {softmax!r}")
        if softmax == "all":
            return [np.arange(self.r)]
        keys = self.set_names if softmax == "per_set" else self.pair_index
        order = list(dict.fromkeys(keys))
        return [np.array([i for i, k in enumerate(keys) if k == key]) for key in order]

    def to_config(self) -> dict:
        return {
            "name": self.name,
            "texts": list(self.texts),
            "sets": list(self.set_names),
            "sha256": hashlib.sha256("\n".join(self.texts).encode()).hexdigest()[:16],
        }

    def feature_names(self) -> list[str]:
        """Names of the 2r per-frame features: ``avg:<description>`` then ``max:<description>``."""
        return [f"avg:{d}" for d in self.descriptions] + [f"max:{d}" for d in self.descriptions]


def load_prompts(source: str | Path = DEFAULT_PROMPTS) -> PromptSet:
    """Load a prompt set: ``"default"`` (shipped) or a path to a JSON prompt file."""
    if str(source) == DEFAULT_PROMPTS:
        text = (
            resources.files("vqa_pipe.pipeline").joinpath("data/prompts_default.json").read_text()
        )
        where = "built-in default prompts"
    else:
        path = Path(source)
        if not path.is_file():
            raise PromptError(f"prompt file not found: {path}")
        text = path.read_text()
        where = str(path)
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as err:
        raise PromptError(f"{where}: not valid JSON ({err})") from None
    return parse_prompts(spec, where=where)


def parse_prompts(spec: dict, *, where: str = "prompt spec") -> PromptSet:
    sets = spec.get("sets") if isinstance(spec, dict) else None
    if not isinstance(sets, dict) or not sets:
        raise PromptError(f'{where}: needs a non-empty "sets" object')
    descriptions, texts, set_names, pair_index = [], [], [], []
    seen: dict[str, str] = {}  # description -> where it first appeared
    pair = 0
    for set_name, body in sets.items():
        template = body.get("template", "{}") if isinstance(body, dict) else None
        pairs = body.get("pairs") if isinstance(body, dict) else None
        if not isinstance(template, str) or template.count("{}") != 1:
            raise PromptError(f'{where}: set "{set_name}" needs a template with exactly one {{}}')
        if not isinstance(pairs, list) or not pairs:
            raise PromptError(f'{where}: set "{set_name}" needs a non-empty "pairs" list')
        for k, item in enumerate(pairs):
            if (
                not isinstance(item, list)
                or len(item) != 2
                or not all(isinstance(d, str) and d.strip() for d in item)
            ):
                raise PromptError(
                    f'{where}: set "{set_name}" pair {k} must be two non-empty strings, '
                    f"got {item!r}"
                )
            for description in item:
                here = f'set "{set_name}" pair {k}'
                if description.strip() in seen:
                    raise PromptError(
                        f'{where}: duplicate description "{description.strip()}" appears twice '
                        f"({seen[description.strip()]} and {here}); each description names two "
                        f'features (avg:{description.strip()}, max:{description.strip()}), so '
                        "descriptions must be unique: reword one of them"
                    )
                seen[description.strip()] = here
                descriptions.append(description.strip())
                texts.append(template.format(description.strip()))
                set_names.append(set_name)
                pair_index.append(pair)
            pair += 1
    if len(set(texts)) != len(texts):
        dup = sorted({t for t in texts if texts.count(t) > 1})
        raise PromptError(f"{where}: duplicate prompt texts {dup}")
    return PromptSet(
        name=str(spec.get("name", Path(where).stem)),
        descriptions=tuple(descriptions),
        texts=tuple(texts),
        set_names=tuple(set_names),
        pair_index=tuple(pair_index),
    )


def score_windows(
    window_embeddings: np.ndarray,
    text_embeddings: np.ndarray,
    logit_scale: float,
    groups: list[np.ndarray],
) -> np.ndarray:
    """Per-frame features from window embeddings (CLiF-VQA eqs. 3-7).

    ``window_embeddings`` (F, k, D) and ``text_embeddings`` (r, D) are L2-normalised. Each
    window's similarities, times the logit scale, go through a softmax within each group,
    giving M_t (F, k, r); the result is ``[mean over windows, max over windows]`` (F, 2r).
    """
    w = np.asarray(window_embeddings, dtype=np.float32)
    t = np.asarray(text_embeddings, dtype=np.float32)
    if w.ndim != 3 or t.ndim != 2 or w.shape[-1] != t.shape[-1]:
        raise ValueError(
            f"window embeddings (F, k, D) and text embeddings (r, D) must agree on D, "
            f"got {w.shape} and {t.shape}"
        )
    logits = logit_scale * (w @ t.T)  # (F, k, r)
    probs = np.empty_like(logits)
    for idx in groups:
        z = logits[..., idx]
        z = np.exp(z - z.max(axis=-1, keepdims=True))
        probs[..., idx] = z / z.sum(axis=-1, keepdims=True)
    return np.concatenate([probs.mean(axis=1), probs.max(axis=1)], axis=-1)
