"""``score``: quality scores for videos that have no MOS, with the reasons behind each score.

``vqa-pipe score MODEL_DIR INPUT...`` scores videos with a model bundle
(:mod:`vqa_pipe.pipeline.bundle`); ``vqa-pipe score --zero-shot INPUT...`` scores them with no
model at all, as CLIP-IQA does. An INPUT is a video file, a folder (searched recursively for
video files) or a manifest CSV.

How it runs:

1. Stage one is rebuilt from the bundle's recorded configuration; weights whose sha256 differs
   are refused, and so is anything else that would change the features.
2. Features go into a cache store (default ``OUT/features.zarr``, its manifest
   ``OUT/features.csv`` beside it) through the extract stage itself (``stages.extract``):
   resumable part by part, a failed video recorded with its reason, ``--workers`` /
   ``--scheduler`` as in ``extract``. A rerun skips done videos; a video whose file changed
   (its fingerprint: size, modification time and a sampled digest) is extracted again.
3. Predictions are made a chunk of videos at a time from the same model inputs training used
   (:func:`~vqa_pipe.pipeline.feature_table.load_table`), then explained
   (:mod:`vqa_pipe.pipeline.explain`).
4. ``OUT/scores.csv`` (one row per video, failed ones with their reason), ``OUT/scores.json``
   with ``--json``, and with ``--report DIR`` one PNG per video plus ``index.html``.

Zero-shot (CLIP-IQA, Wang et al., AAAI 2023): per window, the softmax of CLIP's scaled cosine
similarities to "Good photo." and "Bad photo."; the score is the probability of "Good photo."
averaged over the windows of every sampled frame and over frames, x 100 on 0-100. The other
antonym pairs of CLIP-IQA (bright/dark, sharp/blurry, noisy/clean, colorful/dull, high/low
contrast) are reported as attributes. Upstream feeds the whole image to a ResNet-50 CLIP without
positional embedding; here the windows of the semantic branch at the model's input size go to
any open_clip model (ViT-B-32 by default).
"""

from __future__ import annotations

import csv
import math
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from vqa_pipe.pipeline.errors import VqaPipeError
from vqa_pipe.pipeline.explain import VideoExplanation
from vqa_pipe.pipeline.options import check_fields, option

VIDEO_EXTENSIONS = (
    ".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp",
    ".ts", ".mts", ".m2ts", ".ogv", ".y4m",
)
ZERO_SHOT_QUALITY = "Good"
CSV_COLUMNS = ("video", "path", "status", "score", "scale", "score_100", "mos", "deviations",
               "contributions", "model", "random_weights", "error")
TABLE_LIMIT = 20


class ScoreError(VqaPipeError):
    """Inputs or an output folder that cannot be scored as asked."""


@dataclass(frozen=True)
class ScoreOptions:
    """Options of ``vqa-pipe score`` besides the extraction run options (``ExtractOptions``)."""

    out: str | None = option(
        None, "Output folder for scores.csv, scores.json and the feature cache "
        "(default: scores/<model name>, or scores/zero-shot-<clip model>).", metavar="DIR")
    store: str | None = option(
        None, "Feature cache (a store; default OUT/features.zarr). A rerun resumes it and "
        "skips done videos.", metavar="DIR")
    json: bool = option(False, "Also write scores.json with every explanation and frame curve.")
    report: str | None = option(
        None, "Write one PNG per video (worst and best frames, per-frame curve, reasons) into "
        "DIR, and index.html ranking the videos.", metavar="DIR")
    zero_shot: bool = option(
        False, "No model: CLIP-IQA's zero-shot score, P('Good photo.' vs 'Bad photo.') averaged "
        "over windows and frames (give only INPUTs).")
    clip_model: str = option("ViT-B-32", "CLIP model of --zero-shot (a bundle records its own).")
    clip_pretrained: str | None = option(
        None, "CLIP checkpoint (file or open_clip tag): for --zero-shot, or instead of the one "
        "the bundle records (same sha256 required).")
    swin_weights: str | None = option(
        None, "Swin checkpoint instead of the one the bundle records (same sha256 required).",
        metavar="FILE")
    batch_windows: int = option(288, "Windows per CLIP batch.", min=1)
    top: int = option(3, "Descriptions named per video in the table and scores.csv.", min=1,
                      max=20)

    def __post_init__(self) -> None:
        check_fields(self)


# --------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class ScoreInput:
    video_id: str
    path: Path
    mos: float | None = None
    mos_scale: str | None = None


def _is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


def collect_inputs(inputs: Sequence[str | Path]) -> list[ScoreInput]:
    """The videos named by ``inputs``: files, folders (recursively, by video extension) and
    manifest CSVs, each video once, with unique ids.

    A folder's videos are named by their path inside it without extension
    (``sub/clip``); a file by its stem. When two videos would share an id, parent folder
    names are added until the ids differ. A manifest keeps its own ids. A file that does not
    exist stays in the list (it fails with its reason, as in ``extract``).
    """
    from vqa_pipe.pipeline.manifest import read_manifest

    if not inputs:
        raise ScoreError("give at least one video, folder or manifest CSV to score")
    named: list[ScoreInput] = []
    loose: list[tuple[Path, int]] = []  # (path, minimum number of path parts in its id)
    seen: set[str] = set()  # absolute paths (links are not followed: two names, two videos)
    for text in inputs:
        path = Path(text)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and _is_video(p)
                           and not any(part.startswith(".") for part in p.relative_to(path).parts))
            if not found:
                raise ScoreError(
                    f"folder {path} holds no video files ({', '.join(VIDEO_EXTENSIONS[:6])} …)"
                )
            for p in found:
                if os.path.abspath(p) not in seen:
                    seen.add(os.path.abspath(p))
                    loose.append((p, len(p.relative_to(path).parts)))
        elif path.suffix.lower() == ".csv":
            for row in read_manifest(path):
                if os.path.abspath(row.path) not in seen:
                    seen.add(os.path.abspath(row.path))
                    named.append(ScoreInput(row.video_id, row.path, row.mos, row.mos_scale))
        else:
            if path.exists() and not path.is_file():
                raise ScoreError(f"{path} is neither a video file, a folder nor a manifest CSV")
            if os.path.abspath(path) not in seen:
                seen.add(os.path.abspath(path))
                loose.append((path, 1))
    taken = {item.video_id for item in named}
    if len(taken) != len(named):
        raise ScoreError("the manifests given share video ids; score them separately")
    ids = _unique_ids(loose, taken)
    return named + [ScoreInput(vid, path) for (path, _), vid in zip(loose, ids)]


def _unique_ids(loose: list[tuple[Path, int]], taken: set[str]) -> list[str]:
    """Each file's id: its stem, with as many parent folders as it takes to tell it from the
    others; files that differ only in extension (``a.mp4``, ``a.mkv``) keep it."""
    parts = [list(p.absolute().with_suffix("").parts) for p, _ in loose]
    depth = [k for _, k in loose]
    while True:
        ids = ["/".join(ps[-k:]) for ps, k in zip(parts, depth)]
        counts: dict[str, int] = {}
        for vid in ids:
            counts[vid] = counts.get(vid, 0) + 1
        clash = [i for i, vid in enumerate(ids) if counts[vid] > 1 or vid in taken]
        if not clash:
            return ids
        grown = False
        for i in clash:
            full = list(loose[i][0].absolute().parts)
            if depth[i] < len(parts[i]):
                depth[i] += 1
                grown = True
            elif parts[i] != full:  # the whole path is not enough: the extension tells them
                parts[i], depth[i] = full, 1
                grown = True
        if not grown:
            raise ScoreError(f"cannot give {ids[clash[0]]!r} a unique video id")


# --------------------------------------------------------------------------- results
@dataclass
class ScoreRow:
    video: str
    path: str
    status: str  # ok | failed
    score: float | None = None
    score_100: float | None = None
    mos: float | None = None
    error: str = ""
    explanation: VideoExplanation | None = None
    png: str | None = None

    def deviations_text(self, k: int) -> str:
        if self.explanation is None:
            return ""
        items = self.explanation.top_deviations(k)
        if items and items[0].get("z") is None:
            return "; ".join(f"{d['description']} {d['probability']:.2f}" for d in items)
        return "; ".join(f"{d['description']} {d['z']:+.2f}" for d in items)

    def contributions_text(self, k: int) -> str:
        if self.explanation is None:
            return ""
        return "; ".join(f"{c['description']} {c['contribution']:+.3f}"
                         for c in self.explanation.top_contributions(k))


@dataclass
class ScoreSummary:
    """What one ``score`` run produced."""

    model: str
    scale: str
    random_weights: bool
    out: Path
    rows: list[ScoreRow] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0
    extracted: int = 0
    cached: int = 0
    top: int = 3
    notes: list[str] = field(default_factory=list)

    @property
    def scored(self) -> list[ScoreRow]:
        return [r for r in self.rows if r.status == "ok"]

    @property
    def failed(self) -> list[ScoreRow]:
        return [r for r in self.rows if r.status != "ok"]

    @property
    def ok(self) -> bool:
        """False only when there were videos and none could be scored (``extract``'s rule)."""
        return bool(self.scored) or not self.rows

    def lines(self) -> list[str]:
        from vqa_pipe.pipeline.weights import RANDOM_WEIGHTS_BANNER

        out = [RANDOM_WEIGHTS_BANNER] if self.random_weights else []
        ok = self.scored
        if len(self.rows) <= TABLE_LIMIT:
            out.extend(self._table())
        else:
            values = np.array([r.score for r in ok], dtype=float)
            if len(values):
                out.append(
                    f"scores on {self.scale}: median {np.median(values):.3f}, min "
                    f"{values.min():.3f}, max {values.max():.3f}"
                )
                order = sorted(ok, key=lambda r: r.score)
                out.append("worst: " + ", ".join(f"{r.video} {r.score:.2f}" for r in order[:3]))
                out.append("best: " + ", ".join(f"{r.video} {r.score:.2f}"
                                                for r in order[::-1][:3]))
            reasons: dict[str, int] = {}
            for r in self.failed:
                key = r.error.split(":", 1)[0]
                reasons[key] = reasons.get(key, 0) + 1
            if reasons:
                out.append("failures: " + ", ".join(f"{n} {k}" for k, n in reasons.items()))
        out.append(
            f"{len(ok)} of {len(self.rows)} videos scored with {self.model} "
            f"({self.extracted} extracted, {self.cached} from the cache, {len(self.failed)} "
            f"failed) in {self.seconds:.1f} s"
        )
        for name, path in self.files.items():
            out.append(f"{name}: {path}")
        out.extend(f"note: {n}" for n in self.notes)
        if self.random_weights:
            out.append(RANDOM_WEIGHTS_BANNER)
        return out

    def _table(self) -> list[str]:
        head = ["video", f"score ({self.scale})", "0-100", "why"]
        rows = [head]
        for r in self.rows:
            if r.status != "ok":
                rows.append([r.video, "failed", "", r.error[:90]])
                continue
            why = r.contributions_text(self.top) or r.deviations_text(self.top)
            rows.append([r.video, f"{r.score:.3f}", f"{r.score_100:.1f}", why])
        widths = [min(40, max(len(row[i]) for row in rows)) for i in range(3)]
        lines = []
        for i, row in enumerate(rows):
            cells = [row[j][:40].ljust(widths[j]) for j in range(3)] + [row[3]]
            lines.append("  ".join(cells).rstrip())
            if i == 0:
                lines.append("  ".join("-" * w for w in widths) + "  ---")
        return lines


# --------------------------------------------------------------------------- models
class _Scorer:
    """What differs between a bundle and zero-shot: branches, scale, prediction."""

    name: str
    scale: str
    low: float
    high: float
    random_weights: bool
    branch_names: list[str]
    branch_options: dict[str, Any]

    def build(self, device: str) -> list:
        raise NotImplementedError

    def predict(self, store, manifest: Path, ids: list[str]) -> dict[str, tuple]:
        """``{video: (unit score or None, failure reason or None, explanation)}``."""
        raise NotImplementedError

    def describe(self) -> str:
        return self.name


def zero_shot_prompts() -> Path:
    """The CLIP-IQA prompt file shipped with vqa-pipe."""
    return Path(str(resources.files("vqa_pipe.pipeline").joinpath("data/prompts_clipiqa.json")))


class _ZeroShot(_Scorer):
    def __init__(self, options: ScoreOptions, random_weights: bool) -> None:
        self.clip_model = options.clip_model
        self.name = f"zero-shot CLIP-IQA ({options.clip_model})"
        self.scale = "0-1"
        self.low, self.high = 0.0, 1.0
        self.random_weights = random_weights
        self.branch_names = ["semantic"]
        self.branch_options = {
            "clip_model": options.clip_model,
            "clip_pretrained": options.clip_pretrained,
            "prompts": str(zero_shot_prompts()),
            "softmax": "pairs",
            "batch_windows": options.batch_windows,
        }

    def build(self, device: str) -> list:
        from vqa_pipe.pipeline.branches import build_branches

        return build_branches(self.branch_names, device=device,
                              random_weights=self.random_weights, **self.branch_options)

    def predict(self, store, manifest: Path, ids: list[str]) -> dict[str, tuple]:
        from vqa_pipe.pipeline.explain import zero_shot_explanation

        config = store.branch_config("semantic")
        names = config["feature_names"]
        r = len(names) // 2
        descriptions = [n.split(":", 1)[1] for n in names[:r]]
        quality = descriptions.index(ZERO_SHOT_QUALITY)
        attributes = [i for i in range(0, r, 2) if i != quality]
        scores = store.read("semantic", "frame_scores", ids)
        times = store.read("semantic", "frame_times", ids)
        out = {}
        for vid in ids:
            fs = np.asarray(scores[vid], dtype=np.float64)[:, :r]
            unit = float(fs[:, quality].mean())
            out[vid] = (unit, None, zero_shot_explanation(vid, fs, times[vid], descriptions,
                                                          quality, attributes))
        return out


class _BundleScorer(_Scorer):
    def __init__(self, model_dir: str | Path, options: ScoreOptions, random_weights: bool):
        from vqa_pipe.pipeline.bundle import branch_build_options, load_bundle, resolve_weights
        from vqa_pipe.pipeline.explain import Explainer
        from vqa_pipe.pipeline.manifest import MOS_SCALES

        self.bundle = bundle = load_bundle(model_dir)
        self.name = bundle.name
        self.scale = bundle.scale
        self.low, self.high = MOS_SCALES[self.scale]
        self.random_weights = bundle.random_weights
        self.branch_names = bundle.branches
        given = {"semantic": options.clip_pretrained, "spatial": options.swin_weights}
        self.branch_options = {}
        for branch in self.branch_names:
            weights = resolve_weights(bundle, branch, given.get(branch),
                                      random_weights=random_weights)
            self.branch_options.update(branch_build_options(
                branch, bundle.branch_config(branch), weights=weights,
                prompts_file=bundle.prompts_file(branch)))
        if "semantic" in self.branch_names:
            self.branch_options["batch_windows"] = options.batch_windows
        self.models = bundle.load_models()
        self.explainer = Explainer(
            self.models, bundle.roles, bundle.flat_layout, bundle.descriptions(),
            bundle.stats(), span=self.high - self.low, low=self.low,
            linear=bool(bundle.meta.get("linear")),
        )

    def describe(self) -> str:
        b = self.bundle
        members = (f"ensemble of {len(b.members)}" if len(b.members) > 1
                   else b.members[0])
        return (f"model {b.name}: {b.regressor} ({members}), trained on "
                f"{b.meta['training']['dataset']} ({b.meta['training']['n_videos']} videos)")

    def build(self, device: str) -> list:
        from vqa_pipe.pipeline.branches import build_branches
        from vqa_pipe.pipeline.bundle import check_rebuilt

        branches = build_branches(self.branch_names, device=device,
                                  random_weights=self.random_weights, **self.branch_options)
        check_rebuilt(self.bundle, branches)
        return branches

    def predict(self, store, manifest: Path, ids: list[str]) -> dict[str, tuple]:
        from vqa_pipe.pipeline.explain import predict_unit
        from vqa_pipe.pipeline.feature_table import load_table, shapes_match
        from vqa_pipe.pipeline.manifest import ManifestRow, read_manifest, write_manifest

        bundle = self.bundle
        spec = bundle.table_spec()
        if spec.nan_policy == "error":  # one video's NaN must not stop the others
            spec = replace(spec, nan_policy="drop")
        wanted = set(ids)
        rows = read_manifest(manifest)
        with tempfile.TemporaryDirectory(prefix="vqa-score-") as tmp:
            # load_table joins features to labels and leaves unlabelled videos out: the
            # videos to score get a placeholder label in a temporary copy of the manifest, so
            # their inputs are built by exactly the code that built the training inputs. The
            # placeholder never reaches an output (only predict_unit is used).
            labelled = Path(tmp) / "score.csv"
            write_manifest([ManifestRow(r.video_id, r.path, 0.0 if r.video_id in wanted
                                        else None, "0-100" if r.video_id in wanted else None)
                            for r in rows], labelled)
            table = load_table(store, labelled, bundle.roles, spec, dataset="score",
                               who=f"model {bundle.name}")
        shapes = bundle.meta.get("input_shapes") or {}
        for role in bundle.roles:
            if role in shapes and not shapes_match(role, table.require(role).shape[1:],
                                                   shapes[role]):
                raise ScoreError(
                    f"'{role}' inputs have shape {tuple(table.require(role).shape[1:])}, the "
                    f"model was trained on {tuple(shapes[role])}"
                )
        unit = predict_unit(self.models, table.inputs)
        frames = times = {}
        if "semantic" in self.branch_names and "frame_scores" in store.arrays("semantic"):
            frames = store.read("semantic", "frame_scores", table.video_ids)
            times = store.read("semantic", "frame_times", table.video_ids)
        out: dict[str, tuple] = {}
        for i, vid in enumerate(table.video_ids):
            inputs = {k: v[i:i + 1] for k, v in table.inputs.items()}
            fs = frames.get(vid)
            explanation = (
                self.explainer.explain(vid, inputs, fs, times[vid]) if fs is not None
                else VideoExplanation(vid, notes=["no semantic features: no explanation"])
            )
            out[vid] = (float(unit[i]), None, explanation)
        for vid in ids:
            if vid not in out:
                out[vid] = (None, "features hold NaN or infinite values (left out as the "
                                  f"model's NaN policy '{spec.nan_policy}' says)", None)
        return out


# --------------------------------------------------------------------------- the cache
def _prepare_cache(store_path: Path, items: list[ScoreInput]) -> Path:
    """Write the cache's manifest: earlier videos first, then new ones (the store's prefix
    rule). A video given again under the same id with a new file is extracted again by
    ``extract`` itself, which compares the files' fingerprints."""
    from vqa_pipe.pipeline.manifest import ManifestRow, read_manifest, write_manifest

    manifest = store_path.with_suffix(".csv")
    if (store_path / "zarr.json").is_file() and not manifest.is_file():
        raise ScoreError(
            f"{store_path} is not a score cache ({manifest.name} is missing beside it); give "
            "another --store or --out"
        )
    prior = read_manifest(manifest) if manifest.is_file() else []
    order = [r.video_id for r in prior]
    paths = {r.video_id: r.path for r in prior}
    for item in items:
        if item.video_id not in paths:
            order.append(item.video_id)
        paths[item.video_id] = item.path
    write_manifest([ManifestRow(v, paths[v], None, None) for v in order], manifest)
    return manifest


# --------------------------------------------------------------------------- the run
def default_out(name: str) -> Path:
    """``scores/<model name>`` (``pipeline.layout``)."""
    from vqa_pipe.pipeline.layout import Layout

    return Layout().scores(re.sub(r"[^A-Za-z0-9_.-]+", "_", name))


def _chunk_size(roles) -> int:
    """Videos predicted at a time: fewer when the model reads per-clip maps or patch tokens
    (megabytes per video) than when it reads pooled features."""
    from vqa_pipe.pipeline.feature_table import CLIP_KEYS, SPATIAL_CLIP_MAPS, SPATIAL_MAPS

    return 32 if {SPATIAL_MAPS, SPATIAL_CLIP_MAPS, CLIP_KEYS} & set(roles) else 256


def run_score(
    model_dir: str | Path | None,
    inputs: Sequence[str | Path],
    options: ScoreOptions,
    run: Any = None,
    *,
    log: Callable[[str], None] | None = None,
) -> ScoreSummary:
    """Score ``inputs`` with the bundle at ``model_dir`` (or zero-shot, ``options.zero_shot``).

    Args:
        run: extraction run options (:class:`~vqa_pipe.stages.extract.ExtractOptions`):
            device, workers/scheduler, part size, timeout, retry_failed, progress,
            random_weights (needed by a random-weights bundle).
    """
    from vqa_pipe.pipeline.device import resolve_device
    from vqa_pipe.pipeline.progress import progress_bar
    from vqa_pipe.pipeline.store import FeatureStore
    from vqa_pipe.stages.extract import ExtractOptions, extract

    log = log or (lambda msg: print(msg, file=sys.stderr))
    run = run or ExtractOptions()
    started = time.perf_counter()
    if options.zero_shot:
        if model_dir is not None:
            raise ScoreError("--zero-shot scores without a model: give only videos, folders or "
                             f"manifests (got a model folder {model_dir} first)")
        scorer: _Scorer = _ZeroShot(options, run.random_weights)
        name = f"zero-shot-{options.clip_model}"
    else:
        if model_dir is None:
            raise ScoreError("give a model bundle folder first (vqa-pipe export RUN_DIR makes "
                             "one), or --zero-shot")
        from vqa_pipe.pipeline.bundle import is_bundle

        if not is_bundle(model_dir) and (Path(model_dir).is_file() or _is_video(Path(model_dir))):
            raise ScoreError(
                f"{model_dir} is a video, not a model bundle: give a bundle folder first "
                "(vqa-pipe export RUN_DIR makes one), or --zero-shot to score without a model"
            )
        scorer = _BundleScorer(model_dir, options, run.random_weights)
        name = scorer.name
    items = collect_inputs(inputs)
    out = Path(options.out) if options.out else default_out(name)
    store_path = Path(options.store) if options.store else out / "features.zarr"
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(run.device)
    branches = scorer.build("cpu" if (run.workers or run.scheduler) else device)
    log(f"scoring {len(items)} video{'s' if len(items) != 1 else ''} with {scorer.describe()}")
    manifest = _prepare_cache(store_path, items)
    part_size = run.part_size
    if (store_path / "zarr.json").is_file():  # the cache keeps the part size it was made with
        part_size = FeatureStore.open(store_path).part_size
    # The default cache is score's own: a model with other features replaces it. A store given
    # with --store may be someone's extraction: it is never replaced, a mismatch is refused.
    run = replace(run, branches=tuple(scorer.branch_names), redo=(),
                  on_config_change="error" if options.store else "replace", limit=None,
                  part_size=part_size)
    summary = extract(manifest, store_path, run, scorer.branch_options, branches=branches,
                      log=log)

    store = FeatureStore.open(store_path)
    status = {b: store.status(b) for b in scorer.branch_names}
    ids = [item.video_id for item in items]
    reasons: dict[str, str] = {}
    for vid in ids:
        for b in scorer.branch_names:
            st = status[b][vid]
            if st.state != "done":
                reasons.setdefault(vid, st.reason or f"not extracted ({st.state})")
    done = [v for v in ids if v not in reasons]
    results: dict[str, tuple] = {}
    chunk = _chunk_size(getattr(getattr(scorer, "bundle", None), "roles", ()))
    bar = progress_bar(len(done), desc="score", unit="video", enabled=run.progress)
    try:
        for start in range(0, len(done), chunk):
            part = done[start:start + chunk]
            results.update(scorer.predict(store, manifest, part))
            bar.update(len(part))
    finally:
        bar.close()
    span = scorer.high - scorer.low
    rows = []
    for item in items:
        vid = item.video_id
        if vid in reasons:
            rows.append(ScoreRow(vid, str(item.path), "failed", mos=item.mos, error=reasons[vid]))
            continue
        unit, reason, explanation = results[vid]
        if unit is None or not math.isfinite(unit):
            rows.append(ScoreRow(vid, str(item.path), "failed", mos=item.mos,
                                 error=reason or "the model gave no finite score"))
            continue
        rows.append(ScoreRow(vid, str(item.path), "ok", score=scorer.low + unit * span,
                             score_100=100.0 * unit, mos=item.mos, explanation=explanation))
    extracted = set(summary.done)
    result = ScoreSummary(
        model=scorer.name, scale=scorer.scale, random_weights=scorer.random_weights, out=out,
        rows=rows, extracted=len(extracted & set(ids)),
        cached=len([v for v in done if v not in extracted]), top=options.top,
    )
    if options.report:
        _write_report(Path(options.report), result, scorer, store, items, branches,
                      timeout=run.timeout, log=log)
    result.files["scores"] = write_scores_csv(out / "scores.csv", result)
    if options.json:
        result.files["json"] = write_scores_json(out / "scores.json", result, scorer)
    labelled = [r for r in result.scored if r.mos is not None]
    if len(labelled) >= 3:
        from vqa_pipe.pipeline.metrics import evaluate

        try:
            m = evaluate([r.mos for r in labelled], [r.score for r in labelled])
            result.notes.append(f"{len(labelled)} inputs have a MOS: SROCC {m['srocc']:.3f}, "
                                f"PLCC {m['plcc']:.3f} (MOS scales as given)")
        except ValueError:
            pass
    result.seconds = time.perf_counter() - started
    return result


# --------------------------------------------------------------------------- outputs
def _fmt(value: float | None, digits: int = 6) -> str:
    return "" if value is None else f"{value:.{digits}g}"


def write_scores_csv(path: Path, summary: ScoreSummary) -> Path:
    """``scores.csv``: one row per video, in input order (see :data:`CSV_COLUMNS`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for r in summary.rows:
            writer.writerow([
                r.video, r.path, r.status, _fmt(r.score), summary.scale, _fmt(r.score_100),
                _fmt(r.mos), r.deviations_text(summary.top), r.contributions_text(summary.top),
                summary.model, "true" if summary.random_weights else "false", r.error,
            ])
    tmp.replace(path)
    return path


def write_scores_json(path: Path, summary: ScoreSummary, scorer: _Scorer) -> Path:
    """``scores.json``: the model, and every video with its full explanation."""
    from vqa_pipe.pipeline.report import write_json

    model: dict[str, Any] = {"name": summary.model, "scale": summary.scale,
                             "random_weights": summary.random_weights}
    if isinstance(scorer, _BundleScorer):
        b = scorer.bundle
        model.update(path=str(b.path), regressor=b.regressor, members=b.members,
                     ensemble=b.meta.get("ensemble"), trained_on=b.meta["training"]["dataset"])
    else:
        model.update(method="CLIP-IQA: P('Good photo.' vs 'Bad photo.'), mean over windows "
                            "and frames", clip_model=getattr(scorer, "clip_model", None))
    videos = []
    for r in summary.rows:
        videos.append({
            "video": r.video, "path": r.path, "status": r.status, "score": r.score,
            "score_100": r.score_100, "mos": r.mos, "error": r.error or None,
            "report": r.png,
            "explanation": None if r.explanation is None else r.explanation.to_json(),
        })
    return write_json(path, {"model": model, "videos": videos})


def _png_name(video: str, used: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", video).strip("_") or "video"
    name, k = f"{base}.png", 1
    while name in used:
        k += 1
        name = f"{base}-{k}.png"
    used.add(name)
    return name


def _shown_frames(curve: list[float] | None, n: int) -> list[tuple[int, str]]:
    """Up to two worst and two best frames by the curve: ``[(index, 'worst'|'best'), ...]``."""
    if not curve:
        return []
    order = list(np.argsort(np.asarray(curve), kind="stable"))
    worst = order[: min(2, (len(order) + 1) // 2)]
    best = [i for i in order[::-1] if i not in worst][:2]
    return [(int(i), "worst") for i in worst] + [(int(i), "best") for i in best]


def _write_report(folder: Path, summary: ScoreSummary, scorer: _Scorer, store, items,
                  branches, *, timeout: float, log) -> None:
    """One PNG per scored video and ``index.html`` ranking them (failed videos listed with
    their reason)."""
    from vqa_pipe.pipeline.bundle import prompt_spec_from_config
    from vqa_pipe.pipeline.decode import decode_in_background
    from vqa_pipe.pipeline.explain import window_probabilities
    from vqa_pipe.pipeline.prompts import parse_prompts
    from vqa_pipe.pipeline.score_report import (
        Curve,
        FramePanel,
        IndexRow,
        index_page,
        video_figure,
    )
    from vqa_pipe.pipeline.windows import WindowGrid

    folder.mkdir(parents=True, exist_ok=True)
    ok = [r for r in summary.scored if r.explanation is not None]
    semantic = next((b for b in branches if b.name == "semantic"), None)
    shown = {r.video: _shown_frames(r.explanation.frame_curve, len(r.explanation.frame_times))
             for r in ok}
    frames: dict[str, dict[int, Any]] = {r.video: {} for r in ok}
    config = store.branch_config("semantic") if semantic is not None else {}
    if semantic is not None and ok and "window_embeddings" in store.arrays("semantic"):
        has_windows = True
        text = store.branch_array("semantic", "text_embeddings")
        groups = parse_prompts(prompt_spec_from_config(config)).groups(config["softmax"])
        grid = WindowGrid(config["grid"][0], config["grid"][1], config["window_size"],
                          config["window_fit"])
        paths = {item.video_id: str(item.path) for item in items}
        stream = decode_in_background([(r.video, paths[r.video]) for r in ok], semantic.plan(),
                                      timeout_s=timeout)
        try:
            for video in stream:
                want = {i for i, _ in shown.get(video.key, [])}
                try:
                    for k, frame in enumerate(video.frames):
                        if k in want:
                            frames[video.key][k] = frame
                except Exception as err:  # noqa: BLE001 - the report shows the curve anyway
                    log(f"report: frames of {video.key} could not be decoded again: {err}")
                    frames[video.key] = {}
        finally:
            stream.close()
    else:
        has_windows = False
    used: set[str] = set()
    index_rows = []
    for r in summary.rows:
        if r.status != "ok" or r.explanation is None:
            index_rows.append(IndexRow(r.video, r.status, r.score, r.score_100, "", None,
                                       r.error))
            continue
        exp = r.explanation
        times = np.asarray(exp.frame_times, dtype=float)
        panels = []
        probs = None
        if has_windows and frames[r.video]:
            emb = store.read("semantic", "window_embeddings", [r.video])[r.video]
            probs = window_probabilities(emb, text, config["logit_scale"], groups)
        for index, kind in shown[r.video]:
            frame = frames[r.video].get(index)
            if frame is None:
                continue
            if abs(float(frame.time_s) - float(times[index])) > 1e-3:
                log(f"report: frame {index} of {r.video} is not the one scored; no frames shown")
                panels = []
                break
            desc, d = _shade_description(exp, kind, scorer)
            h, w = frame.rgb.shape[:2]
            hw, ww = grid.working_size(h, w)
            boxes = grid.boxes(h, w).astype(float) * np.array([h / hw, w / ww, h / hw, w / ww])
            values = None if probs is None or d is None else probs[index, :, d]
            value = exp.frame_curve[index] if exp.frame_curve else float("nan")
            colour = "#c62828" if kind == "worst" else "#2e7d32"
            panels.append(FramePanel(
                frame.rgb, f"{kind} · {times[index]:.1f} s · {value:.2f}", boxes, values,
                f"shaded: P({desc}) per window" if values is not None else "", colour))
        marks = {i: ("#c62828" if k == "worst" else "#2e7d32") for i, k in shown[r.video]}
        zero = isinstance(scorer, _ZeroShot)
        curve = Curve(
            list(times), list(exp.frame_curve or []),
            ylabel="P(Good photo) x 100" if zero else f"score ({summary.scale})",
            title=("per frame: P('Good photo.') x 100, mean over windows" if zero else
                   "per frame: the score of a clip made of that frame alone"),
            reference=r.score_100 if zero else r.score, marks=marks,
        )
        bars = _bars(exp, zero)
        if zero:
            title = f"{r.video}: {r.score_100:.1f} / 100"
        else:
            title = f"{r.video}: {r.score:.2f} on {summary.scale} ({r.score_100:.0f} / 100)"
        name = _png_name(r.video, used)
        video_figure(folder / name, title=title, subtitle=scorer.describe(), frames=panels,
                     curve=curve, bars=bars, random_weights=summary.random_weights)
        r.png = str(folder / name)
        why = r.contributions_text(summary.top) or r.deviations_text(summary.top)
        index_rows.append(IndexRow(r.video, "ok", r.score, r.score_100, why, name))
    if summary.rows:
        summary.files["index"] = index_page(
            folder / "index.html", index_rows, title=f"Scores: {summary.model}",
            scale=summary.scale, random_weights=summary.random_weights)
    summary.files["report"] = folder


def _shade_description(exp: VideoExplanation, kind: str, scorer: _Scorer):
    """Which description shades a frame: the one that lowers the score most (worst frames) or
    raises it most (best frames); without contributions the largest deviation; zero-shot: the
    quality prompt itself."""
    if isinstance(scorer, _ZeroShot):
        return "Good photo", 0
    names = [d["description"] for d in exp.deviations]
    if exp.contributions:
        pick = (min if kind == "worst" else max)(exp.contributions,
                                                  key=lambda c: c["contribution"])
        return pick["description"], names.index(pick["description"])
    top = exp.top_deviations(1)
    if top:
        return top[0]["description"], names.index(top[0]["description"])
    return "", None


def _bars(exp: VideoExplanation, zero: bool):
    from vqa_pipe.pipeline.score_report import Bars

    if zero:
        items = exp.deviations
        return Bars("CLIP attributes: P(first) vs its antonym",
                    [d["description"] for d in items], [d["probability"] for d in items],
                    centre=0.5, fmt="{:.2f}", signed_colours=False)
    if exp.contributions:
        items = exp.top_contributions(8)
        exact = "exact, linear model" if exp.exact else "occlusion to the training mean"
        return Bars(f"contributions to the score ({exact})",
                    [c["description"] for c in items], [c["contribution"] for c in items])
    items = exp.top_deviations(8)
    return Bars("deviation from the training videos (z)",
                [d["description"] for d in items], [d["z"] for d in items])


__all__ = [
    "ScoreError",
    "ScoreOptions",
    "ScoreRow",
    "ScoreSummary",
    "collect_inputs",
    "run_score",
    "zero_shot_prompts",
]
