"""``export``: turn a training run into a model bundle that scores new videos
(:mod:`vqa_pipe.pipeline.bundle`), and ``fit_final``: one model fitted on every labelled video.

* :func:`run_export` copies the run's model(s) (the final model when there is one, else every
  split model as an ensemble, or one split on request), records the exact stage-one
  configuration of the training store (each branch's configuration, weights identity, the
  prompts and their text embeddings), the training data and its MOS scale, the metrics, and the
  training-set statistics the explanations need; it writes a model card.
* :func:`fit_final` fits the run's regressor once more on all labelled videos of its training
  set (a validation part is carved at random for the choices that need one, as the ``cross``
  protocol does) and saves it as ``RUN_DIR/final``; ``train --final`` calls it.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from vqa_pipe.pipeline.bundle import (
    ENSEMBLE_RULE,
    FORMAT_VERSION,
    KIND,
    BundleError,
    ModelBundle,
    branch_build_options,
    load_bundle,
    prompt_spec_from_config,
    training_stats,
    weights_record,
    write_bundle,
)

FINAL = "final"
LINEAR_REGRESSORS = ("ridge",)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise BundleError(f"{path.parent} is not a training run folder (no {path.name})") from None
    except json.JSONDecodeError as err:
        raise BundleError(f"{path} is not valid JSON: {err}") from None


def _find(path_text: str, run_dir: Path, what: str) -> Path:
    """A path recorded in a run's config.json: as recorded (relative to where train ran), or
    relative to the project folder of a ``runs/<dataset>/<regressor>`` run."""
    path = Path(path_text)
    candidates = [path]
    if not path.is_absolute() and len(run_dir.resolve().parents) > 2:
        candidates.append(run_dir.resolve().parents[2] / path)
    for candidate in candidates:
        if candidate.exists():
            return candidate
    raise BundleError(
        f"the run's {what} {path_text} is not found (paths in {run_dir}/config.json are "
        "relative to the folder `vqa-pipe train` ran in); run export from that folder"
    )


class _Run:
    """What export and fit_final read from a run folder."""

    def __init__(self, run_dir: str | Path) -> None:
        from vqa_pipe.pipeline.feature_table import TableSpec

        self.dir = Path(run_dir)
        self.config = _read_json(self.dir / "config.json")
        options = self.config.get("options") or {}
        self.options = options
        self.regressor = str(options.get("regressor", "?"))
        self.params = dict(options.get("params") or {})
        self.roles = list(self.config.get("roles") or [])
        self.flat_layout = list(self.config.get("flat_layout") or [])
        self.spec = TableSpec.from_json(options.get("spec") or {}).with_layout(self.flat_layout)
        train = self.config.get("train") or {}
        self.dataset = str(train.get("name") or self.dir.parent.name)
        self.store = _find(str(train.get("store")), self.dir, "feature store")
        self.manifest = _find(str(train.get("manifest")), self.dir, "manifest")

    def table(self):
        from vqa_pipe.pipeline.feature_table import load_table

        return load_table(self.store, self.manifest, self.roles, self.spec, dataset=self.dataset,
                          who=f"the '{self.regressor}' models of {self.dir}")


def fit_final(
    run_dir: str | Path,
    *,
    val_ratio: float | None = None,
    seed: int | None = None,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Fit the run's regressor on every labelled video of its training set; save it in
    ``RUN_DIR/final`` (``config.json`` + ``weights.safetensors``) and return that folder.

    The choices a regressor makes on a validation part (SVR/ridge hyper-parameters, the best
    epoch of the torch heads) are made on ``val_ratio`` of the videos drawn with ``seed``
    (default: the run's own ``val_ratio`` and ``seed``), as the ``cross`` protocol does.
    """
    from vqa_pipe.pipeline.regressors import create_regressor
    from vqa_pipe.pipeline.report import write_json
    from vqa_pipe.pipeline.splits import SplitError, holdout_split

    log = log or (lambda msg: print(msg, file=sys.stderr))
    run = _Run(run_dir)
    table = run.table()
    val_ratio = float(run.options.get("val_ratio", 0.2) if val_ratio is None else val_ratio)
    seed = int(run.options.get("seed", 0) if seed is None else seed)
    try:
        split = holdout_split(table.video_ids, {}, val_ratio=val_ratio, seed=seed, name=FINAL)
    except SplitError as err:
        raise BundleError(f"final model of {run.dir}: {err}") from None
    model = create_regressor(run.regressor, **run.params)
    started = time.perf_counter()
    info = model.fit(table.subset(split.train), table.subset(split.val) if split.val else None)
    folder = model.save(run.dir / FINAL)
    write_json(folder / "final.json", {
        "what": "one model fitted on all labelled videos of the training set",
        "dataset": run.dataset,
        "n_videos": len(table),
        "n_train": len(split.train),
        "n_val": len(split.val),
        "val_ratio": val_ratio,
        "seed": seed,
        "val_ids": list(split.val),
        "fit_info": info,
        "fit_seconds": round(time.perf_counter() - started, 3),
    })
    log(f"final {run.regressor} model on {len(table)} videos of {run.dataset}: {folder}")
    return folder


def _members(run: _Run, which: str) -> dict[str, Path]:
    split_dirs = sorted(p for p in (run.dir / "models").glob("*") if (p / "config.json").is_file())
    final = run.dir / FINAL
    if which == "auto":
        which = FINAL if (final / "config.json").is_file() else "ensemble"
    if which == FINAL:
        if not (final / "config.json").is_file():
            raise BundleError(
                f"{run.dir} has no final model; fit one with `vqa-pipe train --final` "
                "(or export the split ensemble with --members ensemble)"
            )
        return {FINAL: final}
    if not split_dirs:
        raise BundleError(
            f"{run.dir} holds no saved split models (models/<split>/); was it trained with "
            "--no-save-models?"
        )
    if which == "ensemble":
        return {p.name: p for p in split_dirs}
    by_name = {p.name: p for p in split_dirs}
    if which not in by_name:
        raise BundleError(
            f"{run.dir} has no split model '{which}'; choose auto, ensemble, final or one of "
            f"{', '.join(by_name)}"
        )
    return {which: by_name[which]}


def _model_branches(roles: list[str], flat_layout: list) -> list[str]:
    from vqa_pipe.pipeline.feature_table import FLAT, ROLE_SOURCES

    names: list[str] = []
    for role in roles:
        if role == FLAT:
            names.extend(b for b, _, _ in flat_layout)
        elif role in ROLE_SOURCES:
            names.append(ROLE_SOURCES[role][0])
        else:
            raise BundleError(
                f"the model reads input '{role}', which vqa-pipe score does not know how to "
                "build from videos"
            )
    return list(dict.fromkeys(names))


def _branch_meta_arrays(store: Any, branch: str) -> dict[str, np.ndarray]:
    """Every branch-wide array the training store holds for ``branch`` (``meta/<branch>/``)."""
    import zarr

    try:
        names = list(zarr.open_group(str(store.path), mode="r")[f"meta/{branch}"].array_keys())
    except KeyError:
        return {}
    return {name: np.asarray(store.branch_array(branch, name)) for name in names}


def _check_weights_file(branch: str, config: dict, path: str | None) -> dict:
    from vqa_pipe.pipeline.weights import file_identity

    if path is None:
        return weights_record(config)
    if not Path(path).is_file():
        raise BundleError(f"{path}: checkpoint file not found")
    identity = file_identity(path)
    recorded = (config.get("weights") or {}).get("sha256")
    if identity["sha256"] != recorded:
        raise BundleError(
            f"{path} (sha256 {identity['sha256'][:16]}…) is not the '{branch}' checkpoint the "
            f"training store was made with (sha256 {str(recorded)[:16]}…)"
        )
    return weights_record(config, path)


def run_export(
    run_dir: str | Path,
    out: str | Path | None = None,
    *,
    members: str = "auto",
    clip_pretrained: str | None = None,
    swin_weights: str | None = None,
    log: Callable[[str], None] | None = None,
) -> ModelBundle:
    """Write the model bundle of a training run.

    Args:
        run_dir: a ``vqa-pipe train`` run folder.
        out: the bundle folder (default ``models/<dataset>/<regressor>``).
        members: ``auto`` (the final model if the run has one, else every split model as an
            ensemble), ``final``, ``ensemble``, or one split's name.
        clip_pretrained, swin_weights: checkpoint files to record for scoring (their sha256
            must be the training store's).
    """
    from vqa_pipe.pipeline.feature_table import (
        FLAT,
        TableSpec,
        configuration_differences,
        load_table,
        shapes_match,
    )
    from vqa_pipe.pipeline.layout import Layout
    from vqa_pipe.pipeline.prompts import parse_prompts
    from vqa_pipe.pipeline.regressors import load_regressor
    from vqa_pipe.pipeline.store import FeatureStore

    from vqa_pipe import __version__

    log = log or (lambda msg: print(msg, file=sys.stderr))
    run = _Run(run_dir)
    chosen = _members(run, members)
    models = {name: load_regressor(folder) for name, folder in chosen.items()}
    store = FeatureStore.open(run.store)
    branches = _model_branches(run.roles, run.flat_layout)
    given = {"semantic": clip_pretrained, "spatial": swin_weights}
    branch_meta: dict[str, dict] = {}
    branch_arrays: dict[str, dict] = {}
    prompt_specs: dict[str, dict] = {}
    for branch in branches:
        config = store.branch_config(branch)
        branch_build_options(branch, config)  # refuses branches that cannot be extracted
        branch_meta[branch] = {
            "config": config,
            "weights": _check_weights_file(branch, config, given.get(branch)),
        }
        branch_arrays[branch] = _branch_meta_arrays(store, branch)
        if branch == "semantic" and "prompts" in config:  # the windows view's descriptions
            spec = prompt_spec_from_config(config)
            prompts = parse_prompts(spec, where=f"prompts of {run.store}")
            if list(prompts.texts) != list(config["prompts"]["texts"]) or (
                prompts.feature_names() != list(config["feature_names"])
            ):
                raise BundleError(f"the prompts of {run.store} cannot be rebuilt exactly")
            prompt_specs[branch] = spec

    trained = run.config.get("features")
    now = {b: store.branch_config(b) for b in branches}
    diffs = (["the run's config.json does not record its feature configuration (trained by an "
              "older vqa-pipe)"] if trained is None
             else configuration_differences({b: trained[b] for b in branches if b in trained},
                                            now))
    if diffs:
        raise BundleError(
            f"the store {run.store} no longer holds the features {run.dir} was trained on: "
            + "; ".join(diffs[:6]) + ". Retrain on the current store, or extract it as it was"
        )
    table = run.table()
    for name, model in models.items():
        for role in run.roles:
            want = model.input_shapes.get(role)
            have = list(table.require(role).shape[1:])
            if want is not None and not shapes_match(role, want, have):
                raise BundleError(
                    f"model '{name}' of {run.dir} was fitted on '{role}' inputs of shape "
                    f"{tuple(want)}, but the run's store now gives {tuple(have)}"
                )
    semantic_flat = None
    if "semantic" in branches and "frame_scores" in store.arrays("semantic"):
        sem = load_table(store, run.manifest, [FLAT],
                         TableSpec(flat_branches=("semantic",), n_frames=run.spec.n_frames,
                                   nan_policy=run.spec.nan_policy),
                         dataset=run.dataset)
        semantic_flat = sem.inputs[FLAT]
    stats = training_stats(table, semantic_flat)

    scales = Counter(table.scales)
    if len(scales) > 1:
        raise BundleError(
            f"{run.dir} was trained on videos of several MOS scales ({', '.join(scales)}): a "
            "bundle scores on one training scale; export a run trained on one dataset scale"
        )
    scale = next(iter(scales))
    metrics_path = run.dir / "metrics.json"
    metrics = _read_json(metrics_path) if metrics_path.is_file() else {}
    kind = "final" if list(chosen) == [FINAL] else (
        "ensemble" if len(chosen) > 1 else "split"
    )
    meta: dict[str, Any] = {
        "kind": KIND,
        "format": FORMAT_VERSION,
        "name": f"{run.dataset}-{run.regressor}",
        "vqa_pipe_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "run": str(run.dir),
        "regressor": run.regressor,
        "params": run.params,
        "roles": run.roles,
        "input_shapes": table.input_shapes(),
        "table_spec": run.spec.to_json(),
        "flat_layout": run.flat_layout,
        "member_kind": kind,
        "ensemble": ENSEMBLE_RULE if len(chosen) > 1 else None,
        "linear": run.regressor in LINEAR_REGRESSORS,
        "random_weights": any(
            bool(store.branch_config(b).get("random_weights")) for b in branches
        ),
        "training": {
            "dataset": run.dataset,
            "store": str(run.store),
            "manifest": str(run.manifest),
            "n_videos": len(table),
            "mos_scale": scale,
            "mos_scales": dict(scales),
            "mos_min": float(np.min(table.mos)),
            "mos_max": float(np.max(table.mos)),
            "protocol": run.options.get("protocol"),
            "notes": list(table.notes),
        },
        "metrics": {
            "protocol": metrics.get("protocol") or run.options.get("protocol"),
            "n_splits": metrics.get("n_splits"),
            "summary": metrics.get("summary") or {},
            "notes": metrics.get("notes") or [],
        },
        "branches": branch_meta,
    }
    target = Path(out) if out is not None else Layout().model(run.dataset, run.regressor)
    bundle = write_bundle(target, meta, models, branch_arrays=branch_arrays,
                          prompt_specs=prompt_specs, stats=stats, card="")
    (bundle.path / "README.md").write_text(model_card(bundle))
    log(f"model bundle {bundle.path}: {run.regressor} ({kind}, {len(chosen)} member(s)) "
        f"trained on {run.dataset}")
    return bundle


# --------------------------------------------------------------------------- descriptions
def _branch_line(branch: str, config: dict) -> str:
    weights = config.get("weights") or {}
    if config.get("random_weights") or weights.get("source") == "random":
        wtext = "RANDOM weights"
    else:
        wtext = (f"{weights.get('tag') or weights.get('file', '?')} "
                 f"(sha256 {str(weights.get('sha256', '?'))[:12]}…)")
    if branch == "semantic":
        sampling = config.get("sampling") or {}
        prompts = config.get("prompts") or {}
        grid = config.get("grid") or ["?", "?"]
        fps = sampling.get("fps")
        return (
            f"semantic: CLIP {config.get('model')} {wtext}; {grid[0]}x{grid[1]} windows of "
            f"{config.get('window_size')} px ({config.get('window_fit')}); softmax "
            f"{config.get('softmax')}; prompts {prompts.get('name')} "
            f"({len(prompts.get('texts') or [])} descriptions); "
            f"{'all frames' if fps is None else f'{fps:g} frames/s'}, at most "
            f"{sampling.get('max_frames') or 'all'} frames"
        )
    if branch == "spatial":
        return (
            f"spatial: {config.get('model')} {wtext}; {config.get('n_clips')} clips of "
            f"{config.get('clip_len')} frames, fragments {config.get('grid')}x{config.get('grid')}"
            f" of {config.get('patch')} px"
        )
    return f"{branch}: {wtext}"


def _metric_lines(summary: dict) -> list[str]:
    lines = []
    for test_set, stats in summary.items():
        parts = []
        for key, label in (("srocc", "SROCC"), ("plcc", "PLCC"), ("krocc", "KROCC"),
                           ("rmse", "RMSE")):
            s = stats.get(key) or {}
            if s.get("median") is not None:
                std = f" ± {s['std']:.3f}" if s.get("std") is not None and s.get("n", 1) > 1 else ""
                parts.append(f"{label} {s['median']:.3f}{std}")
        n = max((int(s.get("n", 0)) for s in stats.values() if isinstance(s, dict)), default=0)
        lines.append(f"{test_set}: " + ", ".join(parts) + (f" (median over {n} splits)"
                                                              if n > 1 else ""))
    return lines


def model_card(bundle: ModelBundle) -> str:
    """The bundle's README.md: what it predicts, from what, how well, and its limits."""
    m = bundle.meta
    t = m["training"]
    warn = []
    if bundle.random_weights:
        warn = [
            "> **WARNING: RANDOM WEIGHTS.** This model was trained on features from untrained "
            "(random) networks. It exercises the pipeline; its scores say nothing about video "
            "quality.",
            "",
        ]
    members = (
        f"{len(bundle.members)} split models; prediction = {ENSEMBLE_RULE}"
        if len(bundle.members) > 1 else f"one model ({m.get('member_kind')}: {bundle.members[0]})"
    )
    lines = [
        f"# {bundle.name}: a vqa-pipe quality model",
        "",
        *warn,
        f"Predicts the mean opinion score (MOS) of a video on the **{t['mos_scale']}** scale of "
        f"{t['dataset']}, and the same score on 0-100. Made with vqa-pipe "
        f"{m.get('vqa_pipe_version')} from the run `{m.get('run')}` on {m.get('created')}.",
        "",
        "| | |",
        "|---|---|",
        f"| regressor | `{m['regressor']}` {json.dumps(m.get('params') or {})} |",
        f"| members | {members} |",
        f"| trained on | {t['dataset']}: {t['n_videos']} labelled videos, MOS "
        f"{t['mos_min']:.3g}-{t['mos_max']:.3g} on {t['mos_scale']} |",
        f"| inputs | {', '.join(m['roles'])} {json.dumps(m.get('input_shapes'))} |",
    ]
    for branch in bundle.branches:
        lines.append(f"| features | {_branch_line(branch, bundle.branch_config(branch))} |")
    metric_lines = _metric_lines((m.get("metrics") or {}).get("summary") or {})
    protocol = (m.get("metrics") or {}).get("protocol") or "?"
    for line in metric_lines:
        lines.append(f"| test metrics ({protocol} splits) | {line} |")
    lines += [
        "",
        "## Use",
        "",
        "```bash",
        f"vqa-pipe score {bundle.path} video.mp4 more_videos/ --report report/",
        "```",
        "",
        "The score command decodes and extracts features exactly as recorded in `bundle.json` "
        "(it refuses other weights, checked by sha256), predicts, and explains each score "
        "(descriptions that deviate from the training videos, their contributions, a per-frame "
        "curve).",
        "",
        "## Limits",
        "",
        f"- The test metrics above are within {t['dataset']}; on other kinds of video (other "
        "content, resolutions, distortions) expect lower correlation.",
        f"- Scores are on {t['dataset']}'s MOS scale ({t['mos_scale']}); they can fall outside "
        "its range for videos unlike the training set.",
    ]
    for note in t.get("notes") or []:
        lines.append(f"- Training data: {note}.")
    return "\n".join(lines) + "\n"


def describe_bundle(path: str | Path) -> str:
    """Human-readable summary of a bundle (``vqa-pipe inspect MODEL_DIR``)."""
    bundle = load_bundle(path)
    m = bundle.meta
    t = m["training"]
    banner = "!!! RANDOM WEIGHTS: this model's scores are meaningless !!!"
    lines = [banner] if bundle.random_weights else []
    lines += [
        f"model bundle: {bundle.path} ({bundle.name}), format {m.get('format')}, "
        f"vqa-pipe {m.get('vqa_pipe_version')}",
        f"regressor {m['regressor']} {json.dumps(m.get('params') or {})}; "
        f"{len(bundle.members)} member(s): {', '.join(bundle.members)}"
        + (f" ({ENSEMBLE_RULE})" if len(bundle.members) > 1 else ""),
        f"trained on {t['dataset']}: {t['n_videos']} videos, MOS {t['mos_min']:.3g}-"
        f"{t['mos_max']:.3g} on {t['mos_scale']}",
        f"inputs: {json.dumps(m.get('input_shapes'))}",
    ]
    for branch in bundle.branches:
        lines.append("  " + _branch_line(branch, bundle.branch_config(branch)))
        arrays = bundle.meta["branches"][branch].get("arrays") or []
        if arrays:
            lines.append(f"    arrays: {', '.join(arrays)}")
    for line in _metric_lines((m.get("metrics") or {}).get("summary") or {}):
        lines.append(f"metrics {line}")
    if bundle.random_weights:
        lines.append(banner)
    return "\n".join(lines)


__all__ = ["FINAL", "describe_bundle", "fit_final", "model_card", "run_export"]
