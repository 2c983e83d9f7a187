"""Train / validation / test splits for the evaluation protocol.

Every split carries a validation part carved from its training part: epochs and
hyper-parameters are chosen on it, never on a test part.

* :func:`random_splits`: N random splits (default 10, 80/20, fixed seeds), the UGC-VQA
  protocol (VIDEVAL, TLVQM, CLiF-VQA report the median over such splits).
* :func:`videval_splits`: the splits of VIDEVAL's and RAPIQUE's evaluation scripts (split
  *i* = scikit-learn's ``train_test_split`` with ``random_state=ceil(8.8 i)``; validation
  with ``ceil(6.6 i)``), so results compare split by split with theirs.
* :func:`konvid_splits`: the 1000 KoNViD-1k permutations distributed with VSFA
  (``KoNViD-1kinfo.mat``); permutation *k* puts its first 60 % in training, the next 20 %
  in validation and the last 20 % in test (VSFA's ``train/val/test`` ratios).
* :func:`lsvq_official_split`: LSVQ's official train / test / test-1080p lists.
* :func:`holdout_split`: a fixed training set and any number of named test sets, e.g.
  cross-dataset (train on one dataset, test on another).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from vqa_pipe.pipeline.errors import VqaPipeError

MIN_TRAIN = 4
"""Fewest training videos (after carving validation) a split may have."""


class SplitError(VqaPipeError):
    """A split cannot be made as asked (too few videos, unknown ids, bad ratios)."""


@dataclass(frozen=True)
class Split:
    """One protocol run: ids to train on, to choose epochs/hyper-parameters on, and to test."""

    name: str
    train: tuple[str, ...]
    val: tuple[str, ...]
    test: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    seed: int | None = None
    left_out: tuple[str, ...] = ()
    """Videos of a split file that had no features and were left out (``allow_missing``)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "left_out", tuple(self.left_out))
        object.__setattr__(self, "train", tuple(self.train))
        object.__setattr__(self, "val", tuple(self.val))
        object.__setattr__(self, "test", {k: tuple(v) for k, v in self.test.items()})
        train, val = set(self.train), set(self.val)
        if train & val:
            raise SplitError(f"split {self.name}: {len(train & val)} videos in both train and val")
        for name, ids in self.test.items():
            overlap = (train | val) & set(ids)
            if overlap:
                raise SplitError(
                    f"split {self.name}: {len(overlap)} videos of test set '{name}' are also "
                    f"used for training or validation (e.g. {sorted(overlap)[:3]})"
                )

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "seed": self.seed,
            "train": list(self.train),
            "val": list(self.val),
            "test": {k: list(v) for k, v in self.test.items()},
            "left_out": list(self.left_out),
        }

    @classmethod
    def from_json(cls, data: Mapping) -> Split:
        return cls(
            name=str(data["name"]),
            train=tuple(data["train"]),
            val=tuple(data["val"]),
            test={k: tuple(v) for k, v in data["test"].items()},
            seed=data.get("seed"),
            left_out=tuple(data.get("left_out", ())),
        )


def _check_ratio(name: str, value: float) -> None:
    if not 0 <= value < 1:
        raise SplitError(f"{name} must be in [0, 1), got {value}")


def _carve(ids: np.ndarray, ratio: float, rng: np.random.Generator) -> tuple[list, list]:
    """Split ``ids`` into (rest, carved) with ``round(ratio * n)`` carved at random."""
    order = rng.permutation(len(ids))
    n_carved = int(round(ratio * len(ids)))
    return [ids[i] for i in order[n_carved:]], [ids[i] for i in order[:n_carved]]


def random_splits(
    video_ids: Sequence[str],
    n_splits: int = 10,
    *,
    test_ratio: float = 0.2,
    val_ratio: float = 0.2,
    seed: int = 0,
) -> list[Split]:
    """``n_splits`` random train/val/test splits with fixed seeds.

    Split *k* uses seed ``seed + k``: the test part is ``test_ratio`` of all videos, the
    validation part ``val_ratio`` of the remaining training part.

    Raises:
        SplitError: too few videos for a non-empty test part, at least 2 validation videos
            and :data:`MIN_TRAIN` training videos, or bad ratios.
    """
    ids = np.asarray(list(video_ids), dtype=object)
    if len(set(ids.tolist())) != len(ids):
        raise SplitError("video ids must be unique")
    if n_splits < 1:
        raise SplitError(f"n_splits must be >= 1, got {n_splits}")
    _check_ratio("test_ratio", test_ratio)
    _check_ratio("val_ratio", val_ratio)
    n = len(ids)
    n_test = int(round(test_ratio * n))
    n_val = int(round(val_ratio * (n - n_test)))
    n_train = n - n_test - n_val
    if n_test < 3 or (val_ratio > 0 and n_val < 2) or n_train < MIN_TRAIN:
        raise SplitError(
            f"too few videos for the splits: {n} labelled videos give {n_train} train / "
            f"{n_val} validation / {n_test} test; need at least {MIN_TRAIN} / 2 / 3 "
            f"(test_ratio={test_ratio}, val_ratio={val_ratio})"
        )
    splits = []
    for k in range(n_splits):
        rng = np.random.default_rng(seed + k)
        train_all, test = _carve(ids, test_ratio, rng)
        train, val = _carve(np.asarray(train_all, dtype=object), val_ratio, rng)
        splits.append(
            Split(name=f"split{k:02d}", train=train, val=val, test={"test": test}, seed=seed + k)
        )
    return splits


def videval_splits(
    video_ids: Sequence[str],
    n_splits: int = 100,
    *,
    test_ratio: float = 0.2,
    val_ratio: float = 0.2,
    first: int = 1,
) -> list[Split]:
    """The random 80/20 splits of VIDEVAL's ``demo_eval_BVQA_feats_one_dataset.py`` (and of
    RAPIQUE's / BVQA_Benchmark's evaluation scripts), in the order of ``video_ids`` (give
    them in the feature matrix's row order, the datasets' metadata order).

    Split *i* (``i = first .. first + n_splits - 1``; theirs start at 1) is scikit-learn's
    ``train_test_split(ids, test_size=test_ratio, random_state=ceil(8.8 * i))``; its
    validation part is ``train_test_split(train, test_size=val_ratio,
    random_state=ceil(6.6 * i))`` as VIDEVAL carves it for its grid search (the CV search
    uses train + validation, all of their training part).
    """
    from sklearn.model_selection import train_test_split

    ids = list(video_ids)
    if len(set(ids)) != len(ids):
        raise SplitError("video ids must be unique")
    if n_splits < 1 or first < 0:
        raise SplitError(f"n_splits must be >= 1 and first >= 0, got {n_splits}, {first}")
    _check_ratio("test_ratio", test_ratio)
    _check_ratio("val_ratio", val_ratio)
    n_test = math.ceil(test_ratio * len(ids))
    n_val = math.ceil(val_ratio * (len(ids) - n_test)) if val_ratio > 0 else 0
    if n_test < 3 or len(ids) - n_test - n_val < MIN_TRAIN or (val_ratio > 0 and n_val < 2):
        raise SplitError(
            f"too few videos for the splits: {len(ids)} labelled videos give "
            f"{len(ids) - n_test - n_val} train / {n_val} validation / {n_test} test; need at "
            f"least {MIN_TRAIN} / 2 / 3"
        )
    splits = []
    for i in range(first, first + n_splits):
        train_all, test = train_test_split(ids, test_size=test_ratio,
                                           random_state=math.ceil(8.8 * i))
        if val_ratio > 0:
            train, val = train_test_split(train_all, test_size=val_ratio,
                                          random_state=math.ceil(6.6 * i))
        else:
            train, val = train_all, []
        splits.append(Split(name=f"videval{i:03d}", train=train, val=val, test={"test": test},
                            seed=i))
    return splits


def holdout_split(
    train_ids: Sequence[str],
    test_sets: Mapping[str, Sequence[str]],
    *,
    val_ratio: float = 0.2,
    seed: int = 0,
    name: str = "holdout",
) -> Split:
    """A fixed training set (validation carved from it at random) and named test sets.

    Used for official splits and for cross-dataset tests (train on one dataset, test on
    another): test ids may come from other datasets.
    """
    _check_ratio("val_ratio", val_ratio)
    ids = np.asarray(list(train_ids), dtype=object)
    train, val = _carve(ids, val_ratio, np.random.default_rng(seed))
    if len(train) < MIN_TRAIN or (val_ratio > 0 and len(val) < 2):
        raise SplitError(
            f"too few training videos for split '{name}': {len(ids)} give {len(train)} train / "
            f"{len(val)} validation; need at least {MIN_TRAIN} / 2"
        )
    for set_name, test in test_sets.items():
        if len(test) < 3:
            raise SplitError(f"test set '{set_name}' has {len(test)} videos; need at least 3")
    return Split(name=name, train=train, val=val, test=dict(test_sets), seed=seed)


# --------------------------------------------------------------------------- id matching
def _key_variants(name: str) -> list[str]:
    """Ways a label-file name may appear as a manifest video id, most specific first."""
    posix = name.strip().replace("\\", "/")
    no_ext = re.sub(r"\.[A-Za-z0-9]{2,4}$", "", posix)
    base = posix.rsplit("/", 1)[-1]
    stem = no_ext.rsplit("/", 1)[-1]
    return list(dict.fromkeys([posix, no_ext, base, stem]))


def match_ids(names: Iterable[str], video_ids: Iterable[str], *, what: str) -> dict[str, str]:
    """Map names from a label or split file onto manifest video ids.

    A name matches an id equal to it, to it without extension, or to its file name / stem
    (``yfcc-batch1/747.mp4`` matches ``yfcc-batch1/747.mp4``, ``yfcc-batch1/747``,
    ``747.mp4`` or ``747``). Names with no matching id are left out of the result.

    Raises:
        SplitError: one id matches several names (ambiguous stems).
    """
    index: dict[str, str] = {}
    ambiguous: set[str] = set()
    for vid in video_ids:
        for key in _key_variants(vid):
            if key in index and index[key] != vid:
                ambiguous.add(key)
            index.setdefault(key, vid)
    out: dict[str, str] = {}
    for name in names:
        for key in _key_variants(name):
            if key in index:
                if key in ambiguous and key != name:
                    raise SplitError(
                        f"{what}: '{name}' matches several manifest ids through '{key}'"
                    )
                out[name] = index[key]
                break
    taken: dict[str, str] = {}
    for name, vid in out.items():
        if vid in taken:
            raise SplitError(
                f"{what}: manifest id '{vid}' matches both '{taken[vid]}' and '{name}'"
            )
        taken[vid] = name
    return out


# --------------------------------------------------------------------------- KoNViD-1k
_INFO_KEYS = "video_names (cell of file names), scores, index (videos x permutations), ref_ids"


class _InfoMat:
    """Checked access to the keys of a KoNViD-1kinfo.mat; every error names the file and key."""

    def __init__(self, f, path: Path) -> None:
        self.f, self.path = f, path

    def fail(self, key: str, problem: str) -> SplitError:
        return SplitError(
            f"{self.path}: key '{key}' {problem}; a KoNViD-1kinfo.mat (VSFA's, MATLAB v7.3) "
            f"holds {_INFO_KEYS}"
        )

    def dataset(self, key: str, *, required: bool = True):
        import h5py

        if key not in self.f:
            if not required:
                return None
            raise self.fail(key, "is missing")
        item = self.f[key]
        if not isinstance(item, h5py.Dataset):
            raise self.fail(key, f"is a {type(item).__name__.lower()}, not an array")
        return item

    def numbers(self, key: str, *, required: bool = True) -> np.ndarray | None:
        """A numeric array whose values are all finite whole numbers (ids) or finite (scores)."""
        item = self.dataset(key, required=required)
        if item is None:
            return None
        if item.dtype.kind not in "fiu":
            raise self.fail(key, f"holds {item.dtype} values, not numbers")
        values = np.asarray(item[()], dtype=np.float64)
        if not np.isfinite(values).all():
            raise self.fail(key, "holds NaN or infinite values")
        return values

    def whole_numbers(self, key: str) -> np.ndarray:
        values = self.numbers(key)
        assert values is not None
        if not np.array_equal(values, np.round(values)):
            raise self.fail(key, "holds values that are not whole numbers")
        return values.astype(np.int64)

    def names(self, key: str) -> list[str]:
        import h5py

        item = self.dataset(key)
        if h5py.check_ref_dtype(item.dtype) is None:
            raise self.fail(key, f"holds {item.dtype} values, not a cell array of file names")
        out = []
        for pos, ref in enumerate(np.asarray(item[()]).ravel()):
            try:
                target = self.f[ref]
            except (ValueError, KeyError, TypeError):
                raise self.fail(key, f"entry {pos + 1} is an empty reference") from None
            if not isinstance(target, h5py.Dataset) or target.dtype.kind not in "iu":
                raise self.fail(key, f"entry {pos + 1} is not text (MATLAB char codes)")
            codes = np.asarray(target[()]).ravel()
            if codes.size == 0 or codes.min() < 1 or codes.max() > 0x10FFFF:
                raise self.fail(key, f"entry {pos + 1} is not a file name")
            out.append("".join(chr(int(c)) for c in codes))
        if not out:
            raise self.fail(key, "is empty")
        return out


def read_konvid_info(path: str | Path) -> tuple[list[str], np.ndarray]:
    """Video names and the permutations (n_perm, n_videos; 0-based video positions) of
    ``KoNViD-1kinfo.mat`` (MATLAB v7.3, read with h5py).

    Raises:
        SplitError: the file is missing or not HDF5, or a key is missing or of the wrong type
            or shape (``video_names``, ``index``, ``ref_ids``, and ``scores`` when present:
            one number per video); the message names the file and the key.
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise SplitError(f"KoNViD split file {path} does not exist")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        reason = " ".join(str(err).split())
        raise SplitError(
            f"{path} is not a KoNViD-1kinfo.mat (MATLAB v7.3, an HDF5 file, with {_INFO_KEYS}): "
            f"{reason}"
        ) from None
    with f:
        mat = _InfoMat(f, path)
        names = mat.names("video_names")
        n = len(names)
        index = mat.whole_numbers("index")
        ref_ids = mat.whole_numbers("ref_ids")
        scores = mat.numbers("scores", required=False)
    if ref_ids.size != n or (ref_ids.ndim == 2 and 1 not in ref_ids.shape) or ref_ids.ndim > 2:
        raise mat.fail("ref_ids", f"has shape {ref_ids.shape}, expected one id per video ({n})")
    ref_ids = ref_ids.ravel()
    if len(set(ref_ids.tolist())) != n:
        raise mat.fail("ref_ids", "repeats an id")
    if scores is not None and scores.size != n:
        raise mat.fail("scores", f"has shape {scores.shape}, expected one score per video ({n})")
    if index.ndim != 2 or n not in index.shape:
        raise mat.fail(
            "index", f"has shape {index.shape}, expected ({n}, permutations): one column of "
            f"ref_ids per permutation of the {n} videos"
        )
    if index.shape[0] != n:
        index = index.T
    # index holds ref ids (1-based); map them to positions in video_names.
    order = np.argsort(ref_ids)
    where = np.searchsorted(ref_ids, index.T, sorter=order)
    where = np.clip(where, 0, n - 1)
    perms = order[where]
    bad = np.flatnonzero((ref_ids[perms] != index.T).any(axis=1)
                         | (np.sort(perms, axis=1) != np.arange(n)).any(axis=1))
    if bad.size:
        raise mat.fail(
            "index", f"column {bad[0] + 1} is not a permutation of the {n} ref_ids"
        )
    return names, perms.astype(np.int64)


def _flickr_id(name: str) -> str:
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    match = re.match(r"(\d+)", base)
    return match.group(1) if match else base


def konvid_splits(
    info_mat: str | Path,
    video_ids: Sequence[str],
    n_splits: int = 10,
    *,
    start: int = 0,
    train_ratio: float = 0.6,
    val_ratio: float = 0.2,
    allow_missing: bool = False,
) -> list[Split]:
    """Splits from the KoNViD-1k permutations in ``KoNViD-1kinfo.mat`` (as VSFA uses them).

    Permutation ``start + k`` gives split *k*: its first ``ceil(train_ratio * 1200)``
    videos train, the next ones up to ``ceil((train_ratio + val_ratio) * 1200)`` validate,
    the rest test. Videos are matched to ``video_ids`` by their Flickr id (the leading
    number of a name such as ``8536919744_original_centercrop_960x540_8s.mp4``).

    Raises:
        SplitError: permutation videos missing from ``video_ids`` (unless ``allow_missing``,
            which leaves them out), or more splits asked than permutations exist.
    """
    names, perms = read_konvid_info(info_mat)
    if not 0 <= start or start + n_splits > len(perms):
        raise SplitError(
            f"{info_mat} has {len(perms)} permutations; cannot take {n_splits} from {start}"
        )
    by_flickr: dict[str, str] = {}
    for vid in video_ids:
        key = _flickr_id(vid)
        if key in by_flickr:
            raise SplitError(f"video ids '{by_flickr[key]}' and '{vid}' share Flickr id {key}")
        by_flickr[key] = vid
    mapped = [by_flickr.get(_flickr_id(n)) for n in names]
    missing = [n for n, m in zip(names, mapped) if m is None]
    if missing and not allow_missing:
        raise SplitError(
            f"{len(missing)} of the {len(names)} KoNViD-1k videos in {info_mat} are not among "
            f"the {len(video_ids)} given video ids (e.g. {missing[:3]}); pass allow_missing "
            "to leave them out"
        )
    n = len(names)
    n_train = math.ceil(train_ratio * n)
    n_trainval = math.ceil((train_ratio + val_ratio) * n)
    splits = []
    for k in range(start, start + n_splits):
        perm = perms[k]
        train, val, test = (
            [mapped[i] for i in part if mapped[i] is not None]
            for part in (perm[:n_train], perm[n_train:n_trainval], perm[n_trainval:])
        )
        if len(train) < MIN_TRAIN or len(test) < 3:
            raise SplitError(f"KoNViD permutation {k}: too few videos left ({len(train)} train)")
        splits.append(Split(name=f"konvid{k:03d}", train=train, val=val,
                            test={"test": test}, seed=k, left_out=missing))
    return splits


# --------------------------------------------------------------------------- LSVQ
LSVQ_FILES = {"train": "train_labels.txt", "test": "labels_test.txt",
              "test-1080p": "labels_1080p.txt"}


def read_label_names(path: str | Path) -> list[str]:
    """First column (relative video path) of a FAST-VQA style ``labels*.txt`` file."""
    path = Path(path)
    if not path.is_file():
        raise SplitError(f"label file {path} does not exist")
    names = []
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            name = line.split(",", 1)[0].strip()
            if not name:
                raise SplitError(f"{path}:{line_no}: empty video name")
            names.append(name)
    return names


def lsvq_official_split(
    train_labels: str | Path,
    test_labels: Mapping[str, str | Path],
    video_ids: Sequence[str],
    *,
    val_ratio: float = 0.2,
    seed: int = 0,
    allow_missing: bool = False,
) -> Split:
    """LSVQ's official split: train on ``train_labels``, test on each of ``test_labels``
    (usually ``{"test": labels_test.txt, "test-1080p": labels_1080p.txt}``).

    ``video_ids`` are the ids of the feature table(s) (train and test stores together);
    names are matched as :func:`match_ids` does. Validation is carved from training.
    """
    ids = list(video_ids)

    left_out: list[str] = []

    def ids_of(path: str | Path, what: str) -> list[str]:
        names = read_label_names(path)
        found = match_ids(names, ids, what=str(path))
        missing = [n for n in names if n not in found]
        if missing and not allow_missing:
            raise SplitError(
                f"{len(missing)} of the {len(names)} {what} videos in {path} have no features "
                f"(e.g. {missing[:3]}); pass allow_missing to leave them out"
            )
        left_out.extend(missing)
        return [found[n] for n in names if n in found]

    train = ids_of(train_labels, "training")
    tests = {name: ids_of(path, f"'{name}'") for name, path in test_labels.items()}
    split = holdout_split(train, tests, val_ratio=val_ratio, seed=seed, name="lsvq-official")
    return replace(split, left_out=tuple(left_out))
