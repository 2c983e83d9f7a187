"""Stage two, ``train``: fit a regressor on cached features under the evaluation protocol.

Protocols (``TrainOptions.protocol``):

* ``random``: N random train/val/test splits (default 10, 80/20, 20 % of training for
  validation, seeds ``seed .. seed+N-1``);
* ``videval``: the random 80/20 splits of VIDEVAL's / RAPIQUE's evaluation scripts (split
  *i* uses ``random_state=ceil(8.8 i)``, i = 1..N; validation ``ceil(6.6 i)``), in the
  table's order (the datasets' metadata order), to compare split by split with them;
* ``konvid``: the KoNViD-1k permutations of ``KoNViD-1kinfo.mat`` (60/20/20);
* ``official``: fixed lists (FAST-VQA label files), e.g. LSVQ train / test / test-1080p;
* ``cross``: train on all videos of the training dataset (validation carved at random,
  one model per seed) and test only on other datasets.

Other datasets given as ``tests`` are predicted by every split's model, whatever the
protocol (cross-dataset results). Validation parts choose epochs and hyper-parameters;
nothing is chosen on a test part.

A run folder holds ``config.json``, ``splits.json``, ``metrics.json``, ``predictions.csv``,
``summary.txt``, one scatter plot per test set (``scatter.png`` for the first) and, per
split, the fitted model in ``models/<split>/`` (safetensors + JSON, no pickle).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vqa_pipe.pipeline.errors import VqaPipeError
from vqa_pipe.pipeline.feature_table import (
    NAN_POLICIES,
    FeatureError,
    FeatureTable,
    TableSpec,
    check_compatible,
    load_table,
    mismatch_note,
)
from vqa_pipe.pipeline.metrics import MetricError, safe_evaluate, srocc, summarize
from vqa_pipe.pipeline.options import check_fields, option, to_plain
from vqa_pipe.pipeline.report import (
    PredictionRow,
    RunResult,
    metric_notes,
    write_json,
    write_run_outputs,
)
from vqa_pipe.pipeline.splits import (
    Split,
    SplitError,
    holdout_split,
    konvid_splits,
    lsvq_official_split,
    random_splits,
    videval_splits,
)

log = logging.getLogger(__name__)

PROTOCOLS: tuple[str, ...] = ("random", "videval", "konvid", "official", "cross")


class TrainError(VqaPipeError):
    """A training run cannot start as configured (the message says what to change)."""


@dataclass(frozen=True)
class DatasetRef:
    """A dataset to read: its feature store and the manifest it was made from."""

    store: Path
    manifest: Path
    name: str = ""

    @property
    def label(self) -> str:
        return self.name or Path(self.manifest).stem


def _regressor_names() -> list[str]:
    from vqa_pipe.pipeline.regressors import list_regressors

    return list_regressors()


def parse_branch_list(value: object) -> tuple[str, ...] | None:
    """``semantic,videval`` (or a list) -> ``("semantic", "videval")``; empty -> None (all)."""
    if value is None:
        return None
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    names = tuple(dict.fromkeys(str(v).strip() for v in items if str(v).strip()))
    return names or None


@dataclass(frozen=True)
class TrainOptions:
    """Everything a training run needs besides the data; each field is a ``vqa-pipe train``
    option of the same name (and a ``train:`` key of params.yaml)."""

    regressor: str = option(
        "svr", "Regressor from the registry (`vqa-pipe regressors` lists them and their "
        "parameters).", choices=_regressor_names)
    params: dict = option({}, "Regressor parameters.", cli=False)
    protocol: str = option(
        "random",
        "random splits, VIDEVAL's split seeds, KoNViD permutations, official lists, or "
        "cross-dataset only.",
        choices=PROTOCOLS,
    )
    splits: int = option(10, "Number of splits (seeds for 'official' and 'cross').", min=1)
    test_ratio: float = option(0.2, "Test share of each random split.", min=0.0, max=1.0)
    val_ratio: float = option(
        0.2, "Validation share carved from training (choices are made on it).", min=0.0, max=1.0
    )
    seed: int = option(0, "First split seed.")
    konvid_info: str | None = option(None, "KoNViD-1kinfo.mat (protocol konvid).",
                                     metavar="FILE")
    split_start: int = option(0, "First KoNViD permutation to use.", min=0)
    official_lists: dict = option({}, "Official split lists by name (protocol official).",
                                  cli=False)
    allow_missing: bool = option(
        False, "Leave out split-file videos that have no features (they are counted)."
    )
    branches: tuple[str, ...] | None = option(
        None,
        "Store branches pooled into flat features, comma-separated (default: all in the "
        "store), e.g. semantic,videval for the 'CNN+VIDEVAL' rows.",
        parse=parse_branch_list,
    )
    frames: int = option(16, "T: frames per video after resampling (mlp, gru, fused).", min=1)
    clip_frames: int = option(
        32, "T of the CLIPVQA head's frame roles: frames picked per video by TSN (clipvqa).",
        min=1,
    )
    nan_policy: str = option(
        "drop",
        "Videos with NaN features: drop (counted), error, impute zero, or impute the "
        "training mean.",
        choices=NAN_POLICIES,
    )
    jobs: int = option(1, "Splits trained in parallel worker processes.", min=1)
    allow_config_mismatch: bool = option(
        False,
        "Test on datasets whose features were extracted with another configuration (grid, "
        "prompts, model, weights...); every output then says so.",
    )
    save_models: bool = option(True, "Save each split's model in the run folder.")

    def __post_init__(self) -> None:
        check_fields(self)

    @property
    def spec(self) -> TableSpec:
        """How the feature table is built for this run."""
        return TableSpec(flat_branches=self.branches, n_frames=self.frames,
                         nan_policy=self.nan_policy, clip_frames=self.clip_frames)

    def to_json(self) -> dict[str, Any]:
        return {
            **{k: v for k, v in to_plain(self).items() if k != "official_lists"},
            "official_lists": {k: str(v) for k, v in self.official_lists.items()},
            "spec": self.spec.to_json(),
        }


# --------------------------------------------------------------------------- splits
def build_splits(table: FeatureTable, opts: TrainOptions) -> list[Split]:
    """The splits of ``opts.protocol`` over the videos of ``table``."""
    ids = table.video_ids
    try:
        if opts.protocol == "random":
            return random_splits(ids, opts.splits, test_ratio=opts.test_ratio,
                                 val_ratio=opts.val_ratio, seed=opts.seed)
        if opts.protocol == "videval":
            return videval_splits(ids, opts.splits, test_ratio=opts.test_ratio,
                                  val_ratio=opts.val_ratio, first=opts.seed + 1)
        if opts.protocol == "konvid":
            if opts.konvid_info is None:
                raise TrainError("protocol 'konvid' needs the KoNViD-1kinfo.mat file")
            return konvid_splits(opts.konvid_info, ids, opts.splits, start=opts.split_start,
                                 allow_missing=opts.allow_missing)
        if opts.protocol == "official":
            lists = dict(opts.official_lists)
            if "train" not in lists or len(lists) < 2:
                raise TrainError(
                    "protocol 'official' needs a 'train' list and at least one test list, "
                    "e.g. train=train_labels.txt test=labels_test.txt"
                )
            train = lists.pop("train")
            return [
                lsvq_official_split(train, lists, ids, val_ratio=opts.val_ratio,
                                    seed=opts.seed + k, allow_missing=opts.allow_missing)
                for k in range(opts.splits)
            ]
        if opts.protocol == "cross":
            return [
                holdout_split(ids, {}, val_ratio=opts.val_ratio, seed=opts.seed + k,
                              name=f"seed{opts.seed + k:02d}")
                for k in range(opts.splits)
            ]
    except SplitError as err:
        raise TrainError(f"{table.dataset}: {err}") from None
    raise TrainError(f"unknown protocol {opts.protocol!r}; choose one of {', '.join(PROTOCOLS)}")


# --------------------------------------------------------------------------- one split
def _fit_split(
    split: Split,
    table: FeatureTable,
    external: Mapping[str, FeatureTable],
    regressor: str,
    params: Mapping[str, Any],
    model_dir: str | None,
) -> dict[str, Any]:
    """Fit one split's model and predict its test sets (runs in a worker process too)."""
    from vqa_pipe.pipeline.regressors import create_regressor

    model = create_regressor(regressor, **params)
    train = table.subset(split.train)
    val = table.subset(split.val) if split.val else None
    started = time.perf_counter()
    info = model.fit(train, val)
    info = dict(info, fit_seconds=round(time.perf_counter() - started, 3))
    tests: dict[str, FeatureTable] = {name: table.subset(ids) for name, ids in split.test.items()}
    tests.update(external)
    outputs = {}
    for name, test in tests.items():
        outputs[name] = {
            "video_ids": test.video_ids,
            "dataset": test.dataset,
            "mos": test.mos,
            "scales": test.scales,
            "pred": model.predict(test),
        }
    if model_dir is not None:
        model.save(Path(model_dir) / split.name)
    return {"split": split.name, "fit_info": info, "outputs": outputs}


def _worker_init(threads: int) -> None:
    """Share the cores between workers (read by torch and BLAS when they are imported)."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ["MKL_NUM_THREADS"] = str(threads)
    os.environ["OPENBLAS_NUM_THREADS"] = str(threads)


def run_protocol(
    table: FeatureTable,
    splits: Sequence[Split],
    regressor: str,
    params: Mapping[str, Any] | None = None,
    *,
    external: Mapping[str, FeatureTable] | None = None,
    jobs: int = 1,
    models_dir: str | Path | None = None,
    progress: bool | Callable[[dict], None] = False,
    allow_config_mismatch: bool = False,
) -> RunResult:
    """Fit ``regressor`` on every split and score its test sets.

    Args:
        table: the training dataset (all splits' train/val/test ids are looked up here).
        splits: the protocol's splits.
        regressor, params: registry name and parameters.
        external: other datasets, predicted whole by every split's model (cross-dataset).
        jobs: worker processes (splits run in parallel; 1 runs in this process).
        models_dir: where to save each split's model (``<models_dir>/<split>``), or None.
        progress: True for a progress bar, or a callback receiving each split's result.
        allow_config_mismatch: test on ``external`` tables extracted with another
            configuration (the differences are added to the notes).
    """
    from vqa_pipe.pipeline.regressors import get_regressor

    external = dict(external or {})
    cls = get_regressor(regressor)
    params = cls(**dict(params or {})).params  # checked and resolved before any work
    for role in cls.roles:
        table.require(role, f"regressor '{regressor}'")
    mismatches = {name: check_compatible(table, ext, cls.roles,
                                         allow_config_mismatch=allow_config_mismatch)
                  for name, ext in external.items()}
    if not splits:
        raise TrainError("no splits to run")
    started = time.perf_counter()
    model_dir = None if models_dir is None else str(models_dir)
    results: dict[str, dict[str, Any]] = {}
    bar = None
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(splits), unit="split", desc=f"train {regressor}", dynamic_ncols=True)

    def done(result: dict[str, Any]) -> None:
        results[result["split"]] = result
        first = next(iter(result["outputs"].values()))
        try:
            s = srocc(first["mos"], first["pred"])
        except MetricError:
            s = float("nan")
        if bar is not None:
            bar.set_postfix_str(f"{result['split']} SROCC {s:.3f}", refresh=False)
            bar.update(1)
        elif callable(progress):
            progress({"split": result["split"], "srocc": s, "done": len(results),
                      "total": len(splits)})

    try:
        if jobs > 1 and len(splits) > 1:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor, as_completed

            jobs = min(jobs, len(splits))
            threads = max(1, (os.cpu_count() or 1) // jobs)
            with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn"),
                                     initializer=_worker_init, initargs=(threads,)) as pool:
                futures = []
                for split in splits:
                    needed = list(split.train) + list(split.val) + [
                        v for ids in split.test.values() for v in ids
                    ]
                    part = table.subset(needed)
                    futures.append(pool.submit(_fit_split, split, part, external, regressor,
                                               params, model_dir))
                for future in as_completed(futures):
                    done(future.result())
        else:
            for split in splits:
                done(_fit_split(split, table, external, regressor, params, model_dir))
    finally:
        if bar is not None:
            bar.close()

    per_split, predictions = [], []
    by_test: dict[str, list[dict[str, float]]] = {}
    for split in splits:
        result = results[split.name]
        for test_name, out in result["outputs"].items():
            metrics = safe_evaluate(out["mos"], out["pred"])
            per_split.append({"split": split.name, "test_set": test_name,
                              "dataset": out["dataset"], "metrics": metrics})
            by_test.setdefault(test_name, []).append(metrics)
            predictions.extend(
                PredictionRow(v, out["dataset"], float(m), s, float(p), split.name, test_name)
                for v, m, s, p in zip(out["video_ids"], out["mos"], out["scales"], out["pred"])
            )
    summary = {name: summarize(rows) for name, rows in by_test.items()}
    notes = list(table.notes)
    for name, ext in external.items():
        notes.extend(f"{name}: {n}" for n in ext.notes)
    for name, diffs in mismatches.items():
        if diffs:
            notes.append(mismatch_note(name, table.dataset, diffs))
    notes.extend(fit_notes(regressor, [results[s.name]["fit_info"] for s in splits]))
    notes.extend(metric_notes(per_split, summary))
    return RunResult(
        regressor=regressor,
        params=params,
        protocol="",
        dataset=table.dataset,
        per_split=per_split,
        fit_info={name: results[name]["fit_info"] for name in (s.name for s in splits)},
        predictions=predictions,
        summary=summary,
        notes=notes,
        seconds=time.perf_counter() - started,
    )


def fit_notes(regressor: str, infos: Sequence[Mapping[str, Any]]) -> list[str]:
    """What the run's notes should say about how the models were fitted (e.g. which SVR
    path ran at scale)."""
    notes = []
    paths = [i["fit_path"] for i in infos if i.get("fit_path") and not
             str(i["fit_path"]).startswith("exact")]
    if paths:
        notes.append(f"{regressor}: large training part in {len(paths)} of {len(infos)} "
                     f"splits; final fit: {paths[0]}")
    subsets = [i["search_subset"] for i in infos if i.get("search_subset")]
    if subsets:
        notes.append(f"{regressor}: hyper-parameters searched on a random {subsets[0]} "
                     f"training videos in {len(subsets)} of {len(infos)} splits")
    return notes


def run_train(
    train: DatasetRef,
    out: str | Path,
    opts: TrainOptions,
    tests: Sequence[DatasetRef] = (),
    *,
    progress: bool | Callable[[dict], None] = False,
) -> RunResult:
    """Load features, build the splits, fit every split and write the run folder ``out``.

    Raises:
        FeatureError: missing feature groups, ids not in the manifest, NaN features under
            the ``error`` policy (the message names them).
        TrainError: too few videos for the splits, bad protocol options.
    """
    from vqa_pipe.pipeline.regressors import get_regressor

    from vqa_pipe import __version__

    if opts.protocol not in PROTOCOLS:
        raise TrainError(
            f"unknown protocol {opts.protocol!r}; choose one of {', '.join(PROTOCOLS)}"
        )
    if opts.protocol == "cross" and not tests:
        raise TrainError("protocol 'cross' needs at least one other dataset to test on")
    cls = get_regressor(opts.regressor)
    resolved = cls(**opts.params).params  # checked before any data is read
    who = f"regressor '{opts.regressor}'"
    table = load_table(train.store, train.manifest, cls.roles, opts.spec, dataset=train.label,
                       who=who)
    # other datasets get exactly the training table's flat branches, in the same order
    test_spec = opts.spec.with_layout(table.info.get("flat_layout"))
    external = {}
    for ref in tests:
        if ref.label in external or ref.label == table.dataset:
            raise TrainError(f"two datasets are named '{ref.label}'; give them distinct names")
        external[ref.label] = load_table(ref.store, ref.manifest, cls.roles, test_spec,
                                         dataset=ref.label, who=who)
        # refused here, before the run folder is touched (its earlier run stays as it was)
        check_compatible(table, external[ref.label], cls.roles,
                         allow_config_mismatch=opts.allow_config_mismatch)
    splits = build_splits(table, opts)
    left_out = sorted({v for s in splits for v in s.left_out})
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("models", "final"):  # an earlier run's models must not mix with this one's
        if (out / stale).is_dir():
            shutil.rmtree(out / stale)
    write_json(out / "config.json", {
        "vqa_pipe_version": __version__,
        "stage": "train",
        "train": {"name": train.label, "store": str(train.store), "manifest": str(train.manifest)},
        "tests": [{"name": r.label, "store": str(r.store), "manifest": str(r.manifest)}
                  for r in tests],
        "options": opts.to_json(),
        "resolved_params": resolved,
        "roles": list(cls.roles),
        "input_shapes": table.input_shapes(),
        "flat_layout": table.info.get("flat_layout"),
        "features": table.info.get("branch_configs", {}),
    })
    write_json(out / "splits.json", {"splits": [s.to_json() for s in splits]})
    result = run_protocol(
        table, splits, opts.regressor, opts.params, external=external, jobs=opts.jobs,
        models_dir=(out / "models") if opts.save_models else None, progress=progress,
        allow_config_mismatch=opts.allow_config_mismatch,
    )
    result.protocol = opts.protocol
    if left_out:
        result.notes.append(
            f"{len(left_out)} videos of the split file(s) have no features and were left out "
            f"of the splits (e.g. {left_out[:3]})"
        )
    write_run_outputs(out, result)
    return result


__all__ = [
    "PROTOCOLS",
    "DatasetRef",
    "FeatureError",
    "RunResult",
    "TrainError",
    "TrainOptions",
    "build_splits",
    "fit_notes",
    "run_protocol",
    "run_train",
]
