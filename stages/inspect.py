"""``vqa-pipe inspect``: a feature store's configuration, counts and array shapes, as text."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from vqa_pipe.pipeline.store import DAMAGED_PREFIX, FeatureStore

_BANNER = "!!! RANDOM WEIGHTS: features from untrained models; results are meaningless !!!"


def describe_store(path: str | Path, *, show_failed: bool = True) -> str:
    """Human-readable summary of a store."""
    store = FeatureStore.open(path)
    meta = store.meta
    lines = []
    if store.random_weights:
        lines.append(_BANNER)
    lines.append(f"store: {store.path}")
    lines.append(
        f"format {meta.get('format')}, written by vqa-pipe {meta.get('package_version')}, "
        f"{len(store.video_ids)} videos in {store.n_parts} parts of {store.part_size} "
        f"(`vqa-pipe verify {store.path}` reads and checks every chunk)"
    )
    for branch in store.branches():
        config = dict(store.branch_config(branch))
        config.pop("feature_names", None)
        prompts = config.get("prompts")
        if isinstance(prompts, dict) and "texts" in prompts:
            config["prompts"] = {
                **prompts,
                "texts": f"{len(prompts['texts'])} texts",
                "sets": dict(Counter(prompts.get("sets", []))),
            }
        status = store.status(branch)
        counts = Counter(s.state for s in status.values())
        damaged = sum(s.reason.startswith(DAMAGED_PREFIX) for s in status.values())
        lines.append(
            f"\n[{branch}] done {counts['done']}, failed {counts['failed']}"
            + (f" ({damaged} marked damaged, redone by --retry-failed)" if damaged else "")
            + f", pending {counts['pending']}"
        )
        lines.append("  config: " + json.dumps(config, sort_keys=True))
        for name, (shape, dtype) in store.arrays(branch).items():
            lines.append(f"  array {name}: (rows,) + {shape} {dtype}")
        if show_failed:
            for vid, st in status.items():
                if st.state == "failed":
                    lines.append(f"  failed {vid}: {st.reason}")
    if store.random_weights:
        lines.append(_BANNER)
    return "\n".join(lines)
