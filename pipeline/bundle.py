"""Model bundles: a trained regressor with everything needed to score videos it has never seen.

A bundle is a folder, self-contained and free of pickles::

    MODEL_DIR/
      bundle.json                    what the model is: regressor, roles, input shapes, feature
                                     table spec, members, training data and its MOS scale,
                                     metrics, and each extraction branch's exact configuration
      README.md                      the model card (human-readable summary of bundle.json)
      models/<member>/               each member as Regressor.save writes it
                                     (config.json + weights.safetensors)
      branches/<branch>.safetensors  the training store's branch-wide arrays (the prompts'
                                     text_embeddings, ...)
      branches/<branch>.prompts.json the semantic branch's prompt file, rebuilt from the store
      stats.safetensors              training-set statistics of the model inputs (explanations)

Members. A bundle made from a run's split models is an *ensemble*: its prediction is the mean
of the members' predictions on the unit MOS scale (0-1), mapped to the training scale. A bundle
made from one model (``train --final``, or one split) has one member.

Stage one is rebuilt from the recorded configurations (:func:`branch_build_options`); after
building, :func:`check_rebuilt` refuses branches whose configuration, weights (sha256) or text
embeddings differ from the ones the model was trained on, naming what differs.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from vqa_pipe.pipeline.branches import recorded_config
from vqa_pipe.pipeline.errors import VqaPipeError
from vqa_pipe.pipeline.store import config_differences as store_config_differences

BUNDLE_FILE = "bundle.json"
CARD_FILE = "README.md"
STATS_FILE = "stats.safetensors"
MODELS_DIR = "models"
BRANCHES_DIR = "branches"
FORMAT_VERSION = 1
KIND = "vqa-pipe model bundle"
ENSEMBLE_RULE = "mean of the members' unit-scale (0-1) predictions, mapped to the training scale"

# Configuration keys that do not change the features (checked separately or informational).
_IGNORED_KEYS = ("weights", "weights_identity", "rescored_from")


class BundleError(VqaPipeError):
    """A model bundle that is missing, malformed, or does not fit the features asked of it."""


def is_bundle(path: str | Path) -> bool:
    """True when ``path`` is a folder holding a ``bundle.json``."""
    return (Path(path) / BUNDLE_FILE).is_file()


@dataclass
class ModelBundle:
    """A bundle folder and its ``bundle.json``."""

    path: Path
    meta: dict

    @property
    def name(self) -> str:
        return str(self.meta.get("name") or self.path.name)

    @property
    def regressor(self) -> str:
        return str(self.meta["regressor"])

    @property
    def roles(self) -> list[str]:
        return list(self.meta["roles"])

    @property
    def members(self) -> list[str]:
        return list(self.meta["members"])

    @property
    def random_weights(self) -> bool:
        return bool(self.meta.get("random_weights"))

    @property
    def branches(self) -> list[str]:
        return list(self.meta["branches"])

    @property
    def scale(self) -> str:
        """The training MOS scale (``1-5``, ``0-100``) predictions are reported on."""
        return str(self.meta["training"]["mos_scale"])

    @property
    def flat_layout(self) -> list:
        return list(self.meta.get("flat_layout") or [])

    def branch_config(self, branch: str) -> dict:
        try:
            return dict(self.meta["branches"][branch]["config"])
        except KeyError:
            raise BundleError(
                f"bundle {self.path} has no '{branch}' branch; it has {self.branches}"
            ) from None

    def table_spec(self):
        """The :class:`~vqa_pipe.pipeline.feature_table.TableSpec` the model was trained with,
        its flat branches fixed to the training layout."""
        from vqa_pipe.pipeline.feature_table import TableSpec

        return TableSpec.from_json(self.meta.get("table_spec") or {}).with_layout(
            self.flat_layout)

    def branch_arrays(self, branch: str) -> dict[str, np.ndarray]:
        """The training store's branch-wide arrays of ``branch`` (e.g. ``text_embeddings``)."""
        path = self.path / BRANCHES_DIR / f"{branch}.safetensors"
        if not path.is_file():
            return {}
        return _load_tensors(path)

    def prompts_file(self, branch: str = "semantic") -> Path | None:
        name = self.meta["branches"].get(branch, {}).get("prompts_file")
        return None if not name else self.path / name

    def stats(self) -> dict[str, np.ndarray]:
        """Training-set statistics (see :func:`training_stats`)."""
        path = self.path / STATS_FILE
        return _load_tensors(path) if path.is_file() else {}

    def load_models(self) -> list:
        """Every member, loaded with :func:`~vqa_pipe.pipeline.regressors.load_regressor`."""
        from vqa_pipe.pipeline.regressors import load_regressor

        return [load_regressor(self.path / MODELS_DIR / m) for m in self.members]

    def descriptions(self) -> list[str]:
        """The r descriptions of the semantic branch (empty without one)."""
        if "semantic" not in self.meta["branches"]:
            return []
        names = self.branch_config("semantic").get("feature_names") or []
        return [n.split(":", 1)[1] for n in names[: len(names) // 2]]


def _load_tensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    try:
        return dict(load_file(str(path)))
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error types
        raise BundleError(f"{path} is not a valid safetensors file: {err}") from None


def load_bundle(path: str | Path) -> ModelBundle:
    """Open a bundle folder, checking its format and that its members are there."""
    path = Path(path)
    meta_path = path / BUNDLE_FILE
    if not meta_path.is_file():
        hint = ""
        if (path / "config.json").is_file() and (path / "models").is_dir():
            hint = f"; it looks like a training run: vqa-pipe export {path}"
        raise BundleError(f"{path} is not a model bundle (no {BUNDLE_FILE}){hint}")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as err:
        raise BundleError(f"{meta_path} is not valid JSON: {err}") from None
    if meta.get("kind") != KIND:
        raise BundleError(f"{meta_path} is not a vqa-pipe model bundle")
    if int(meta.get("format", 0)) > FORMAT_VERSION:
        raise BundleError(
            f"{path} was written by a newer vqa-pipe (bundle format {meta['format']}); "
            f"this version reads format {FORMAT_VERSION}"
        )
    for key in ("regressor", "roles", "members", "branches", "training"):
        if key not in meta:
            raise BundleError(f"{meta_path} lacks '{key}'")
    missing = [m for m in meta["members"] if not (path / MODELS_DIR / m / "config.json").is_file()]
    if missing or not meta["members"]:
        raise BundleError(f"bundle {path} is incomplete: members {missing or '(none)'} are missing")
    return ModelBundle(path, meta)


def write_bundle(
    out: str | Path,
    meta: Mapping[str, Any],
    models: Mapping[str, Any],
    *,
    branch_arrays: Mapping[str, Mapping[str, np.ndarray]],
    prompt_specs: Mapping[str, Mapping] | None = None,
    stats: Mapping[str, np.ndarray],
    card: str,
) -> ModelBundle:
    """Write a bundle into ``out`` (replacing an older bundle there, never another folder).

    The folder is written beside ``out`` first and moved into place at the end, so a failed
    export never leaves half a bundle.
    """
    from safetensors.numpy import save_file

    out = Path(out)
    if out.exists() and not is_bundle(out) and any(out.iterdir()):
        raise BundleError(f"{out} exists and is not a model bundle; refusing to write there")
    tmp = out.with_name(f".{out.name}.partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        meta = json.loads(json.dumps(dict(meta), default=_json_default))
        meta["members"] = list(models)
        for name, model in models.items():
            model.save(tmp / MODELS_DIR / name)
        (tmp / BRANCHES_DIR).mkdir()
        for branch, arrays in branch_arrays.items():
            if arrays:
                save_file(
                    {k: np.ascontiguousarray(v) for k, v in arrays.items()},
                    str(tmp / BRANCHES_DIR / f"{branch}.safetensors"),
                )
            meta["branches"][branch]["arrays"] = sorted(arrays)
        for branch, spec in (prompt_specs or {}).items():
            name = f"{BRANCHES_DIR}/{branch}.prompts.json"
            (tmp / name).write_text(json.dumps(spec, indent=2) + "\n")
            meta["branches"][branch]["prompts_file"] = name
        save_file({k: np.ascontiguousarray(v) for k, v in stats.items()}, str(tmp / STATS_FILE))
        (tmp / BUNDLE_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        (tmp / CARD_FILE).write_text(card)
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return load_bundle(out)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# --------------------------------------------------------------------------- training statistics
def training_stats(table: Any, semantic_flat: np.ndarray | None) -> dict[str, np.ndarray]:
    """Per-feature mean and standard deviation over the training videos.

    Keys: ``role.<role>.mean`` / ``.std`` for the model's ``flat`` and ``sequence`` inputs
    (shapes (d,) and (T, 2r)), and ``semantic_flat.mean`` / ``.std`` (4r,) of the semantic
    pooled features (mean then std over frames of the 2r frame scores), whose first r values are
    each description's probability averaged over windows and frames.
    """
    from vqa_pipe.pipeline.feature_table import FLAT, SEQUENCE

    stats: dict[str, np.ndarray] = {}
    for role in (FLAT, SEQUENCE):
        if role in table.inputs:
            x = np.asarray(table.inputs[role], dtype=np.float64)
            stats[f"role.{role}.mean"] = np.nanmean(x, axis=0).astype(np.float32)
            stats[f"role.{role}.std"] = np.nanstd(x, axis=0).astype(np.float32)
    if semantic_flat is not None:
        x = np.asarray(semantic_flat, dtype=np.float64)
        stats["semantic_flat.mean"] = np.nanmean(x, axis=0).astype(np.float32)
        stats["semantic_flat.std"] = np.nanstd(x, axis=0).astype(np.float32)
    return stats


# --------------------------------------------------------------------------- stage-one rebuild
def prompt_spec_from_config(config: Mapping) -> dict:
    """The prompt file a semantic configuration was made with, rebuilt from its texts, sets and
    feature names (pairs are consecutive descriptions of one set, each set has one template).

    Raises :class:`BundleError` when no single template per set reproduces the texts.
    """
    prompts = config.get("prompts") or {}
    texts = list(prompts.get("texts") or [])
    sets = list(prompts.get("sets") or [])
    names = list(config.get("feature_names") or [])
    r = len(texts)
    if not r or len(sets) != r or len(names) != 2 * r:
        raise BundleError("the semantic configuration does not record its prompts completely")
    descriptions = [n.split(":", 1)[1] for n in names[:r]]
    spec: dict = {"name": prompts.get("name", "prompts"), "sets": {}}
    for set_name in dict.fromkeys(sets):
        idx = [i for i, s in enumerate(sets) if s == set_name]
        if len(idx) % 2:
            raise BundleError(f"prompt set '{set_name}' has an odd number of descriptions")
        template = _common_template([texts[i] for i in idx], [descriptions[i] for i in idx])
        if template is None:
            raise BundleError(f"prompt set '{set_name}': no single template gives its texts")
        pairs = [[descriptions[idx[k]], descriptions[idx[k + 1]]] for k in range(0, len(idx), 2)]
        spec["sets"][set_name] = {"template": template, "pairs": pairs}
    return spec


def _common_template(texts: Sequence[str], descriptions: Sequence[str]) -> str | None:
    first, desc = texts[0], descriptions[0]
    start = first.find(desc)
    while start >= 0:
        candidate = first[:start] + "{}" + first[start + len(desc):]
        if candidate.count("{}") == 1 and "{" not in candidate.replace("{}", "") and all(
            candidate.format(d) == t for d, t in zip(descriptions, texts)
        ):
            return candidate
        start = first.find(desc, start + 1)
    return None


def branch_build_options(
    branch: str,
    config: Mapping,
    *,
    weights: str | None = None,
    prompts_file: str | Path | None = None,
) -> dict[str, Any]:
    """Options for :func:`~vqa_pipe.pipeline.branches.build_branches` that rebuild ``branch`` as
    recorded in ``config``; ``weights`` is the checkpoint (file or tag) to load.

    The store records, with each extracted branch, the options that define its features
    (``config["options"]``, see ``branches.recorded_config``): they are used as they are.
    :func:`check_rebuilt` then compares the built branch's whole configuration with the
    recorded one, so nothing can differ silently.
    """
    from vqa_pipe.pipeline.branches import BRANCHES

    if branch not in BRANCHES.names():
        raise BundleError(
            f"the model was trained on '{branch}' features, which vqa-pipe score cannot extract "
            "from videos (imported feature sets have no extractor); export a model trained on "
            "extracted branches (semantic, spatial)"
        )
    options = config.get("options")
    if not isinstance(options, Mapping):
        raise BundleError(
            f"the '{branch}' features were extracted by a vqa-pipe that did not record their "
            "options: extract the training set again, retrain and export"
        )
    options = dict(options)
    weights_key = {"semantic": "clip_pretrained", "spatial": "swin_weights"}.get(branch)
    if weights_key is not None:
        options[weights_key] = weights
    if prompts_file is not None and branch == "semantic":
        options["prompts"] = str(prompts_file)
    return options


def weights_option(branch: str) -> str:
    """The command-line option that gives ``branch``'s checkpoint."""
    return {"semantic": "--clip-pretrained", "spatial": "--swin-weights"}.get(branch, "--weights")


def resolve_weights(
    bundle: ModelBundle, branch: str, given: str | None, *, random_weights: bool
) -> str | None:
    """The checkpoint (a file or an open_clip tag) to rebuild ``branch`` with.

    ``given`` (``--clip-pretrained`` / ``--swin-weights``) wins; otherwise the path recorded at
    export, the recorded open_clip tag, or a file of the recorded name inside the bundle folder.
    A random-weights bundle needs ``random_weights`` (and no checkpoint); a trained one refuses
    it.
    """
    record = bundle.meta["branches"][branch].get("weights") or {}
    option = weights_option(branch)
    if record.get("source") == "random":
        if not random_weights:
            raise BundleError(
                f"bundle {bundle.path} was trained on features from RANDOM (untrained) "
                f"'{branch}' weights: its scores are meaningless. Pass --random-weights to "
                "score with it anyway (every output will say so)"
            )
        if given:
            raise BundleError(
                f"bundle {bundle.path} was made with random '{branch}' weights; do not pass "
                f"{option}"
            )
        return None
    if random_weights:
        raise BundleError(
            f"--random-weights: bundle {bundle.path} was trained on real '{branch}' weights "
            f"({record.get('file', '?')}); scoring needs those weights, not random ones"
        )
    if given:
        return str(given)
    recorded = record.get("path")
    if recorded and Path(recorded).is_file():
        return str(recorded)
    if record.get("source") == "tag" and record.get("tag"):
        return str(record["tag"])
    name = record.get("file")
    for folder in (bundle.path, bundle.path / "weights"):
        if name and (folder / name).is_file():
            return str(folder / name)
    raise BundleError(
        f"bundle {bundle.path} needs the '{branch}' checkpoint {name or '?'} (sha256 "
        f"{str(record.get('sha256', '?'))[:16]}…): pass it with {option} FILE, or put the file "
        "in the bundle folder"
    )


def weights_record(config: Mapping, path: str | Path | None = None) -> dict:
    """A branch's weights identity as a bundle records it (plus where the file was found)."""
    weights = dict(config.get("weights") or {})
    record = {
        k: weights[k] for k in ("source", "tag", "file", "bytes", "sha256", "seed") if k in weights
    }
    if path is not None:
        record["path"] = str(Path(path).resolve())
    return record


def check_rebuilt(bundle: ModelBundle, branches: Sequence[Any]) -> None:
    """Refuse rebuilt branches that would not give the features the model was trained on.

    Checks, per branch: the weights (sha256, or both random), every other configuration key,
    and the branch-wide arrays (the prompts' text embeddings, re-encoded by the loaded model).
    """
    for branch in branches:
        recorded = bundle.branch_config(branch.name)
        rebuilt = json.loads(json.dumps(recorded_config(branch), default=_json_default))
        old_w, new_w = recorded.get("weights") or {}, rebuilt.get("weights") or {}
        if (old_w.get("source") == "random") != (new_w.get("source") == "random"):
            raise BundleError(
                f"'{branch.name}' weights: the bundle was made with "
                f"{_describe_weights(old_w)}, this run loaded {_describe_weights(new_w)}"
            )
        if old_w.get("source") != "random" and old_w.get("sha256") != new_w.get("sha256"):
            raise BundleError(
                f"'{branch.name}' weights differ from the ones the model was trained on: "
                f"{new_w.get('file', '?')} has sha256 {str(new_w.get('sha256'))[:16]}…, the bundle "
                f"needs {old_w.get('file', '?')} with sha256 {str(old_w.get('sha256'))[:16]}…. "
                f"Pass the right file with {weights_option(branch.name)}"
            )
        diffs = config_differences(recorded, rebuilt)
        if diffs:
            raise BundleError(
                f"'{branch.name}' cannot be rebuilt as the model was trained: "
                + "; ".join(diffs[:8])
                + (f" (and {len(diffs) - 8} more)" if len(diffs) > 8 else "")
            )
        text = getattr(branch, "text_embeddings", None)
        stored = bundle.branch_arrays(branch.name).get("text_embeddings")
        if text is not None and stored is not None:
            text = np.asarray(text, dtype=np.float32)
            if text.shape != stored.shape or not np.allclose(text, stored, atol=1e-4):
                raise BundleError(
                    f"'{branch.name}': the loaded model does not reproduce the prompts' text "
                    "embeddings the bundle was trained with (another text tower or tokenizer)"
                )


def _describe_weights(weights: Mapping) -> str:
    if weights.get("source") == "random":
        return "random weights"
    return f"{weights.get('file', '?')} (sha256 {str(weights.get('sha256', '?'))[:16]}…)"


def config_differences(recorded: Mapping, rebuilt: Mapping) -> list[str]:
    """``key: recorded -> rebuilt`` for every feature-relevant key that differs (the weights
    are compared by :func:`check_rebuilt` by their sha256, not their file names)."""
    return store_config_differences(recorded, rebuilt, ignore=_IGNORED_KEYS)
