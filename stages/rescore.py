"""Score a store's cached window embeddings against another prompt set, without running CLIP
over the videos again.

The result is a new, small store whose ``semantic`` branch holds ``frame_scores`` and
``frame_times`` for the new prompts (the source store is never written). Only the CLIP text
tower runs, so the same weights are needed: their identity is checked against the source's
configuration, and the source's own prompts are re-encoded and compared with its stored text
embeddings.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from vqa_pipe.pipeline.clip_model import load_clip
from vqa_pipe.pipeline.prompts import load_prompts, score_windows
from vqa_pipe.pipeline.store import FeatureStore, StoreError
from vqa_pipe.pipeline.store_lock import writer_lock

BRANCH = "semantic"


@dataclass
class RescoreSummary:
    store: Path
    parts_written: int
    parts_skipped: int
    videos: int
    seconds: float
    random_weights: bool


def run_rescore(
    source: str | Path,
    out: str | Path,
    *,
    prompts: str | Path = "default",
    softmax: str | None = None,
    clip_pretrained: str | None = None,
    device: str = "cpu",
) -> RescoreSummary:
    """Re-score ``source``'s window embeddings with ``prompts`` into a new store at ``out``.

    Args:
        softmax: ``all``, ``per_set`` or ``pairs``; default: the source's.
        clip_pretrained: the checkpoint the source was made with (not needed for random weights).
    """
    start = time.perf_counter()
    src = FeatureStore.open(source)
    cfg = src.branch_config(BRANCH)
    weights = cfg.get("weights", {})
    random = bool(cfg.get("random_weights"))
    if random and clip_pretrained:
        raise StoreError(f"{source} was made with random weights; do not pass a checkpoint")
    if not random and not clip_pretrained:
        raise StoreError(
            f"{source} was made with {cfg['model']} weights {weights.get('file', '?')} "
            f"(sha256 {str(weights.get('sha256', '?'))[:12]}…): pass --clip-pretrained with them"
        )
    if "windows" not in cfg.get("views", ["windows"]):
        raise StoreError(
            f"{source} holds no window embeddings (its semantic views: {cfg['views']}); "
            "rescoring needs a store extracted with the windows view"
        )
    clip = load_clip(
        cfg["model"],
        clip_pretrained,
        random_weights=random,
        quick_gelu=cfg.get("quick_gelu"),  # the activation the store was made with
        device=device,
        seed=int(weights.get("seed", 0)),
    )
    if not random and clip.weights.get("sha256") != weights.get("sha256"):
        raise StoreError(
            f"the checkpoint given ({clip.weights.get('file')}) is not the one {source} was made "
            f"with ({weights.get('file')}): sha256 differs"
        )
    old_text = src.branch_array(BRANCH, "text_embeddings")
    again = clip.encode_texts(list(cfg["prompts"]["texts"])).numpy()
    if again.shape != old_text.shape or not np.allclose(again, old_text, atol=1e-3):
        raise StoreError(
            f"re-encoding {source}'s own prompts does not reproduce its text embeddings: "
            "the text tower differs from the one the store was made with"
        )

    new = load_prompts(prompts)
    softmax = softmax or cfg["softmax"]
    groups = new.groups(softmax)
    text = clip.encode_texts(list(new.texts)).numpy().astype(np.float32)
    config = {
        **cfg,
        # the options a model bundle rebuilds the branch from follow the new scoring
        **({"options": {**cfg["options"], "softmax": softmax}} if "options" in cfg else {}),
        "softmax": softmax,
        "prompts": new.to_config(),
        "feature_names": new.feature_names(),
        "rescored_from": {
            "store": str(Path(source).resolve()),
            "prompts": cfg["prompts"]["sha256"],
        },
    }
    with writer_lock(out):
        return _write_rescored(source, out, src, cfg, config, text, groups, start,
                               clip.random_weights)


def _write_rescored(source, out, src, cfg, config, text, groups, start, random_weights):
    dst = FeatureStore.create_or_open(out, src.video_ids, part_size=src.part_size)
    dst.ensure_branch(BRANCH, config)
    dst.put_branch_array(BRANCH, "text_embeddings", text)
    status = src.status(BRANCH)
    written = skipped = videos = 0
    for part in range(src.n_parts):
        ids = src.part_ids(part)
        if dst.part_complete(BRANCH, part) or not src.part_complete(BRANCH, part):
            skipped += 1  # done already, or not extracted in the source yet
            continue
        emb = src.read(BRANCH, "window_embeddings", ids)
        times = src.read(BRANCH, "frame_times", ids)
        results: dict[str, dict | str] = {}
        for vid in ids:
            if status[vid].state != "done":
                results[vid] = status[vid].reason or "failed in the source store"
                continue
            scores = score_windows(emb[vid], text, cfg["logit_scale"], groups)
            results[vid] = {"frame_scores": scores.astype(np.float32), "frame_times": times[vid]}
            videos += 1
        dst.write_part(BRANCH, part, results)
        written += 1
    dst.consolidate()
    return RescoreSummary(
        Path(out), written, skipped, videos, time.perf_counter() - start, random_weights
    )
