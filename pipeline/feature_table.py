"""Model inputs for stage two: store arrays joined to the manifest's MOS by video id.

A :class:`FeatureTable` holds, for each labelled video with features, its MOS on the
dataset's own scale and one fixed-shape array per *role* a regressor asks for:

================  ==========================  =============================================
role              shape per video             built from
================  ==========================  =============================================
``flat``          ``(d,)``                    pooled features of the chosen branches,
                                              concatenated in order: ``semantic`` gives the
                                              mean and std over frames of ``frame_scores``
                                              (4r values), ``spatial`` the mean over clips
                                              of ``clip_pooled`` (C), an imported set (e.g.
                                              ``videval``) its ``features`` row (d)
``sequence``      ``(T, 2r)``                 ``semantic/frame_scores`` resampled to T frames
``spatial_maps``  ``(C, T', H', W')``         ``spatial/clip_maps`` averaged over clips
``spatial_pooled``  ``(C,)``                  ``spatial/clip_pooled`` averaged over clips
``spatial_clip_maps`` ``(K, C, T', H', W')``  ``spatial/clip_maps`` as stored, one map per
                                              clip (K = clips x samplings), kept float16
``clip_frames``   ``(T, D)``                  ``semantic/frame_embeddings`` (CLIP image
                                              embedding of each whole frame), T frames
                                              picked by TSN (see :func:`tsn_indices`)
``clip_keys``     ``(T, N, C)``               ``semantic/frame_tokens`` (patch tokens) when
                                              the store has them, else
                                              ``semantic/window_embeddings``; the same T
                                              frames; kept in the stored dtype (float16)
``level_text``    ``(K, D)``                  the branch array ``level_text_embeddings``
                                              (K quality-level words), same for every video
================  ==========================  ======================================
MOS scales. The manifest gives each video's scale (``1-5`` or ``0-100``). Regressors learn
on a *unit* scale, ``(mos - low) / (high - low)`` in [0, 1], so datasets with different scales
can be trained on and tested across; every prediction is mapped back to the scale of the
video it is for, and all reported numbers (predictions, RMSE) are on that scale.

Only the arrays a role needs are read, one store part at a time (so large ``clip_maps`` are
reduced part by part, never held whole). Nothing is dropped silently: unlabelled videos,
videos without features and videos with NaN features are counted in :attr:`FeatureTable.notes`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from vqa_pipe.pipeline.errors import VqaPipeError
from vqa_pipe.pipeline.manifest import MOS_SCALES

log = logging.getLogger(__name__)

FLAT = "flat"
SEQUENCE = "sequence"
SPATIAL_MAPS = "spatial_maps"
SPATIAL_POOLED = "spatial_pooled"
SPATIAL_CLIP_MAPS = "spatial_clip_maps"
CLIP_FRAMES = "clip_frames"
CLIP_KEYS = "clip_keys"
LEVEL_TEXT = "level_text"
FRAMES = "frames"
FRAME_COUNTS = "frame_counts"
ROLES: tuple[str, ...] = (FLAT, SEQUENCE, SPATIAL_MAPS, SPATIAL_POOLED, SPATIAL_CLIP_MAPS,
                          CLIP_FRAMES, CLIP_KEYS, LEVEL_TEXT, FRAMES, FRAME_COUNTS)

# Where each non-flat role comes from: (branch, array).
ROLE_SOURCES: dict[str, tuple[str, str]] = {
    SEQUENCE: ("semantic", "frame_scores"),
    SPATIAL_MAPS: ("spatial", "clip_maps"),
    SPATIAL_POOLED: ("spatial", "clip_pooled"),
    SPATIAL_CLIP_MAPS: ("spatial", "clip_maps"),
    CLIP_FRAMES: ("semantic", "frame_embeddings"),
    CLIP_KEYS: ("semantic", "frame_tokens"),  # or window_embeddings (see _clip_keys_source)
    LEVEL_TEXT: ("semantic", "level_text_embeddings"),  # a branch array, not per video
    FRAMES: ("semantic", "frame_scores"),
    FRAME_COUNTS: ("semantic", "frame_scores"),
}
CLIP_KEYS_FALLBACK = ("semantic", "window_embeddings")
_KEEP_DTYPE = frozenset({CLIP_KEYS})  # large float16 arrays stay float16 in the table
VARIABLE_AXES: dict[str, int] = {FRAMES: 0}
"""Variable-length roles: the per-video axis padded to the table's longest video."""


def shapes_match(role: str, a: Sequence[int], b: Sequence[int]) -> bool:
    """Whether per-video shapes ``a`` and ``b`` of ``role`` fit the same model (the padded
    axis of a variable-length role may differ)."""
    a, b = list(a), list(b)
    axis = VARIABLE_AXES.get(role)
    if axis is not None and len(a) == len(b) and len(a) > axis:
        del a[axis], b[axis]
    return a == b


def pad_frames(rows: Sequence[np.ndarray]) -> np.ndarray:
    """Stack per-video ``(F_i, C)`` arrays into ``(videos, max F_i, C)``, zero after each
    video's last frame."""
    longest = max(len(r) for r in rows)
    out = np.zeros((len(rows), longest) + tuple(rows[0].shape[1:]), dtype=np.float32)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


# What each branch contributes to the flat role: (array, pooling).
FLAT_SOURCES: dict[str, tuple[str, str]] = {
    "semantic": ("frame_scores", "mean_std"),
    "spatial": ("clip_pooled", "mean"),
}
IMPORTED_ARRAY = "features"

NAN_POLICIES: tuple[str, ...] = ("drop", "error", "zero", "mean")
"""``drop``: leave out videos with NaN features (counted in the notes); ``error``: refuse;
``zero``: replace NaN with 0; ``mean``: keep NaN, regressors impute the training-part mean."""



class FeatureError(VqaPipeError):
    """Features cannot be joined or used as asked; the message names the store, video or group."""


def _scale_bounds(scales: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    low = np.empty(len(scales))
    high = np.empty(len(scales))
    for i, scale in enumerate(scales):
        try:
            low[i], high[i] = MOS_SCALES[scale]
        except KeyError:
            raise FeatureError(
                f"unknown MOS scale {scale!r}; known: {', '.join(MOS_SCALES)}"
            ) from None
    return low, high


def to_unit(mos: np.ndarray | Sequence[float], scales: Sequence[str]) -> np.ndarray:
    """MOS on each video's own scale -> [0, 1]."""
    low, high = _scale_bounds(scales)
    return (np.asarray(mos, dtype=np.float64) - low) / (high - low)


def from_unit(unit: np.ndarray | Sequence[float], scales: Sequence[str]) -> np.ndarray:
    """[0, 1] -> each video's own MOS scale."""
    low, high = _scale_bounds(scales)
    return np.asarray(unit, dtype=np.float64) * (high - low) + low


@dataclass
class FeatureTable:
    """Labelled videos with fixed-shape inputs, one array per role (axis 0 = videos)."""

    video_ids: list[str]
    mos: np.ndarray
    scales: list[str]
    inputs: dict[str, np.ndarray]
    dataset: str = ""
    notes: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.video_ids = [str(v) for v in self.video_ids]
        self.mos = np.asarray(self.mos, dtype=np.float64).ravel()
        if isinstance(self.scales, str):
            self.scales = [self.scales] * len(self.video_ids)
        self.scales = list(self.scales)
        n = len(self.video_ids)
        if len(set(self.video_ids)) != n:
            dup = sorted({v for v in self.video_ids if self.video_ids.count(v) > 1})[:5]
            raise FeatureError(f"duplicate video ids in feature table: {dup}")
        if len(self.mos) != n or len(self.scales) != n:
            raise FeatureError(
                f"{n} video ids but {len(self.mos)} MOS values and {len(self.scales)} scales"
            )
        _scale_bounds(self.scales)
        for role, arr in self.inputs.items():
            if len(arr) != n:
                raise FeatureError(f"role '{role}' has {len(arr)} rows for {n} videos")

    def __len__(self) -> int:
        return len(self.video_ids)

    @property
    def unit_mos(self) -> np.ndarray:
        """MOS mapped to [0, 1] by each video's scale."""
        return to_unit(self.mos, self.scales)

    def take(self, index: Sequence[int] | np.ndarray) -> FeatureTable:
        """The rows at ``index`` (in that order)."""
        index = np.asarray(index, dtype=np.int64)
        return FeatureTable(
            video_ids=[self.video_ids[i] for i in index],
            mos=self.mos[index],
            scales=[self.scales[i] for i in index],
            inputs={role: arr[index] for role, arr in self.inputs.items()},
            dataset=self.dataset,
            notes=list(self.notes),
            info=dict(self.info),
        )

    def subset(self, video_ids: Iterable[str]) -> FeatureTable:
        """The rows of ``video_ids`` (in that order); unknown ids are an error naming them."""
        position = {v: i for i, v in enumerate(self.video_ids)}
        ids = list(video_ids)
        missing = [v for v in ids if v not in position]
        if missing:
            raise FeatureError(
                f"{len(missing)} video ids are not in the feature table"
                f"{' of ' + self.dataset if self.dataset else ''}: {missing[:5]}"
            )
        return self.take([position[v] for v in ids])

    def require(self, role: str, who: str = "this regressor") -> np.ndarray:
        """The array of ``role``, or a :class:`FeatureError` saying which store group is missing."""
        if role in self.inputs:
            return self.inputs[role]
        if role == FLAT:
            hint = "pooled features (load the table with the flat role)"
        elif role in ROLE_SOURCES:
            branch, array = ROLE_SOURCES[role]
            hint = f"the '{branch}' branch (array '{array}')"
        else:
            hint = f"role '{role}'"
        raise FeatureError(
            f"{who} needs {hint}, which the feature table"
            f"{' of ' + self.dataset if self.dataset else ''} does not have "
            f"(it has: {', '.join(self.inputs) or 'nothing'})"
        )

    def input_shapes(self) -> dict[str, list[int]]:
        """Per-video shape of each role's array."""
        return {role: list(arr.shape[1:]) for role, arr in self.inputs.items()}


def resample_time(x: np.ndarray, n_frames: int) -> np.ndarray:
    """Bring ``x`` (F, ...) to ``n_frames`` rows along time.

    More frames than asked: average over ``n_frames`` equal segments (anti-aliased pooling).
    Fewer: linear interpolation between neighbouring frames. Equal: unchanged.
    """
    x = np.asarray(x, dtype=np.float32)
    f = len(x)
    if n_frames < 1:
        raise FeatureError(f"n_frames must be >= 1, got {n_frames}")
    if f == 0:
        raise FeatureError("cannot resample a video with no frames")
    if f == n_frames:
        return x.copy()
    if f > n_frames:
        edges = np.linspace(0, f, n_frames + 1)
        starts = np.floor(edges[:-1]).astype(int)
        stops = np.maximum(np.ceil(edges[1:]).astype(int), starts + 1)
        return np.stack([x[a:b].mean(axis=0) for a, b in zip(starts, stops)]).astype(np.float32)
    pos = np.linspace(0, f - 1, n_frames)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, f - 1)
    w = (pos - lo).reshape((-1,) + (1,) * (x.ndim - 1)).astype(np.float32)
    return (x[lo] * (1 - w) + x[hi] * w).astype(np.float32)


def tsn_indices(n_frames: int, n_segments: int) -> np.ndarray:
    """TSN test-mode frame choice: the centre frame of each of ``n_segments`` equal segments.

    ``floor((k + 0.5) * n_frames / n_segments)`` for k = 0 .. n_segments-1: mmaction2's
    ``SampleFrames`` in test mode with ``clip_len=1, frame_interval=1`` (CLIPVQA's loader),
    applied to the frames a store holds. Fewer frames than segments repeat frames (each one
    about ``n_segments / n_frames`` times), as that sampler does.
    """
    if n_segments < 1:
        raise FeatureError(f"the number of segments must be >= 1, got {n_segments}")
    if n_frames < 1:
        raise FeatureError("cannot pick frames from a video with no frames")
    k = np.arange(n_segments, dtype=np.float64)
    return np.minimum(((k + 0.5) * (n_frames / n_segments)).astype(np.int64), n_frames - 1)


@dataclass(frozen=True)
class TableSpec:
    """How to build model inputs from a store.

    ``flat_branches``: branches pooled into the flat role, in order (None: all branches of
    the store, in the store's order). ``n_frames``: T of the ``sequence`` role.
    ``clip_frames``: T of the ``clip_frames`` and ``clip_keys`` roles (CLIPVQA uses 32).
    """

    flat_branches: tuple[str, ...] | None = None
    n_frames: int = 16
    nan_policy: str = "drop"
    clip_frames: int = 32

    def __post_init__(self) -> None:
        if self.nan_policy not in NAN_POLICIES:
            raise FeatureError(
                f"unknown NaN policy {self.nan_policy!r}; choose one of {', '.join(NAN_POLICIES)}"
            )
        if self.n_frames < 1:
            raise FeatureError(f"n_frames must be >= 1, got {self.n_frames}")
        if self.clip_frames < 1:
            raise FeatureError(f"clip_frames must be >= 1, got {self.clip_frames}")

    def with_layout(self, flat_layout: Sequence | None) -> TableSpec:
        """This spec with its flat branches fixed to a trained model's layout (the
        ``flat_layout`` a run records), unless it names them already: another dataset's
        table then pools exactly the branches, in the order, the model was trained on."""
        if not flat_layout or self.flat_branches is not None:
            return self
        from dataclasses import replace

        return replace(self, flat_branches=tuple(entry[0] for entry in flat_layout))

    def to_json(self) -> dict:
        return {
            "flat_branches": None if self.flat_branches is None else list(self.flat_branches),
            "n_frames": self.n_frames,
            "nan_policy": self.nan_policy,
            "clip_frames": self.clip_frames,
        }

    @classmethod
    def from_json(cls, data: Mapping) -> TableSpec:
        fb = data.get("flat_branches")
        return cls(
            flat_branches=None if fb is None else tuple(fb),
            n_frames=int(data.get("n_frames", 16)),
            nan_policy=str(data.get("nan_policy", "drop")),
            clip_frames=int(data.get("clip_frames", 32)),
        )


def _pool_flat(branch: str, array: str, rows: np.ndarray, video_id: str) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float64)
    if rows.ndim == 1:
        rows = rows[None]
    if len(rows) == 0:
        raise FeatureError(f"video '{video_id}' has no rows in '{branch}/{array}'")
    rows = rows.reshape(len(rows), -1)
    how = FLAT_SOURCES.get(branch, (IMPORTED_ARRAY, "mean"))[1]
    if how == "mean_std":
        return np.concatenate([rows.mean(axis=0), rows.std(axis=0)])
    return rows.mean(axis=0)


def _role_value(role: str, rows: np.ndarray, spec: TableSpec, video_id: str) -> np.ndarray:
    if role in (FRAMES, FRAME_COUNTS):
        if rows.ndim != 2 or len(rows) == 0:
            raise FeatureError(
                f"video '{video_id}': semantic/frame_scores has shape {rows.shape}, "
                "expected (F, 2r) with F >= 1"
            )
        if role == FRAME_COUNTS:
            return np.array(len(rows), dtype=np.int64)
        return np.asarray(rows, dtype=np.float32)
    if role == SEQUENCE:
        if rows.ndim != 2:
            raise FeatureError(
                f"video '{video_id}': semantic/frame_scores has shape {rows.shape}, "
                "expected (F, 2r)"
            )
        return resample_time(rows, spec.n_frames)
    if role in (CLIP_FRAMES, CLIP_KEYS):
        rows = np.asarray(rows)
        want = 2 if role == CLIP_FRAMES else 3
        if rows.ndim != want:
            raise FeatureError(
                f"video '{video_id}': role '{role}' needs per-frame rows of {want - 1} axes, "
                f"got an array of shape {rows.shape}"
            )
        if len(rows) == 0:
            raise FeatureError(f"video '{video_id}' has no frames for role '{role}'")
        return rows[tsn_indices(len(rows), spec.clip_frames)]
    if role in (SPATIAL_MAPS, SPATIAL_POOLED):
        if len(rows) == 0:
            raise FeatureError(f"video '{video_id}' has no spatial clips")
        return np.asarray(rows, dtype=np.float32).mean(axis=0)
    if role == SPATIAL_CLIP_MAPS:
        if len(rows) == 0:
            raise FeatureError(f"video '{video_id}' has no spatial clips")
        return np.asarray(rows, dtype=np.float16)
    raise FeatureError(f"unknown role {role!r}")


def _clip_maps_array(store: Any, branch: str, array: str, ids: list[str],
                     spec: TableSpec) -> np.ndarray:
    """The ``spatial_clip_maps`` rows of ``ids`` in one preallocated float16 array, filled
    part by part (no second copy of the whole table)."""
    position = {v: i for i, v in enumerate(ids)}
    out: np.ndarray | None = None
    for vid, rows_v in iter_video_rows(store, branch, array, ids):
        value = _role_value(SPATIAL_CLIP_MAPS, rows_v, spec, vid)
        if out is None:
            out = np.empty((len(ids),) + value.shape, dtype=np.float16)
        elif value.shape != out.shape[1:]:
            raise FeatureError(
                f"'{branch}/{array}' gives videos of different shapes {value.shape} and "
                f"{out.shape[1:]} (video '{vid}') in store {store.path}"
            )
        out[position[vid]] = value
    assert out is not None
    return out


def iter_video_rows(store: Any, branch: str, array: str, video_ids: Iterable[str]):
    """Yield ``(video_id, rows)`` for the given done videos, in store order.

    One pass over the store's parts (:meth:`FeatureStore.iter_rows`): each part's offsets are
    checked against its status and array shapes, and only the wanted rows are read, so a large
    array (``clip_maps``) is never held whole and the cost is linear in the number of parts.
    """
    ids = list(video_ids)
    found = set()
    for vid, rows in store.iter_rows(branch, array, ids):
        found.add(vid)
        yield vid, rows
    missing = [v for v in ids if v not in found]
    if missing:
        raise FeatureError(
            f"{len(missing)} videos have no '{branch}/{array}' rows in {store.path}: {missing[:5]}"
        )


def _store_arrays(store: Any, branch: str) -> dict:
    """The branch's arrays; the caller has checked the branch exists, so a StoreError here is
    damage and goes up as it is (naming the file and the fix)."""
    return store.arrays(branch)


def load_table(
    store: Any,
    manifest: str | Path,
    roles: Iterable[str],
    spec: TableSpec | None = None,
    *,
    dataset: str | None = None,
    who: str = "the regressor",
) -> FeatureTable:
    """Join a feature store to a manifest's MOS and build the inputs of ``roles``.

    Args:
        store: a :class:`~vqa_pipe.pipeline.store.FeatureStore` or the path of one.
        manifest: the manifest CSV the store was made from (gives MOS and scale per video).
        roles: the roles to build (see the module docstring).
        spec: flat branches, T and the NaN policy.
        dataset: a name for messages and reports (default: the manifest's file stem).
        who: what asks for the features, for error messages (e.g. "regressor 'mlp'").

    Raises:
        FeatureError: a branch or array a role needs is missing (the message names it and
            lists what the store has), store videos are not in the manifest, NaN features
            under ``nan_policy='error'``, or no labelled video has features.
    """
    from vqa_pipe.pipeline.manifest import read_manifest
    from vqa_pipe.pipeline.store import FeatureStore

    spec = spec or TableSpec()
    roles = list(dict.fromkeys(roles))
    unknown = [r for r in roles if r not in ROLES]
    if unknown:
        raise FeatureError(f"unknown roles {unknown}; known: {', '.join(ROLES)}")
    if not isinstance(store, FeatureStore):
        store = FeatureStore.open(store)
    manifest = Path(manifest)
    rows = {row.video_id: row for row in read_manifest(manifest)}
    name = dataset or manifest.stem
    notes: list[str] = []
    if store.random_weights:
        notes.append(
            f"RANDOM WEIGHTS: {store.path} holds features from untrained models; "
            "these results are meaningless"
        )

    not_in_manifest = [v for v in store.video_ids if v not in rows]
    if not_in_manifest:
        raise FeatureError(
            f"{len(not_in_manifest)} videos of store {store.path} are not in manifest "
            f"{manifest} (e.g. {not_in_manifest[:5]}); was the store made from another manifest?"
        )
    in_store = set(store.video_ids)
    not_extracted = [v for v, r in rows.items() if v not in in_store and r.mos is not None]
    if not_extracted:
        notes.append(
            f"{len(not_extracted)} labelled videos of {manifest} are not in store {store.path} "
            f"yet (e.g. {not_extracted[:3]}) and are left out: run `vqa-pipe extract` again to "
            "add them"
        )

    # Which (branch, array) pairs each role needs, checked against the store up front.
    available = store.branches()
    needs: dict[str, list[tuple[str, str]]] = {}
    for role in roles:
        if role == FLAT:
            branches = list(spec.flat_branches) if spec.flat_branches else list(available)
            if not branches:
                raise FeatureError(f"store {store.path} has no feature branches yet")
            pairs = []
            for branch in branches:
                array = FLAT_SOURCES.get(branch, (IMPORTED_ARRAY, "mean"))[0]
                pairs.append((branch, array))
            needs[role] = pairs
        elif role == CLIP_KEYS:
            needs[role] = [_clip_keys_source(store, available)]
        elif role == LEVEL_TEXT:
            needs[role] = []  # a branch-wide array, checked here
            _level_text(store, available, who)
        else:
            needs[role] = [ROLE_SOURCES[role]]
    for role, pairs in needs.items():
        for branch, array in pairs:
            if branch not in available:
                raise FeatureError(
                    f"{who} needs the '{branch}' branch (array '{array}', role '{role}'), but "
                    f"store {store.path} has only: {', '.join(available) or 'no branches'}"
                )
            arrays = _store_arrays(store, branch)
            if arrays and array not in arrays:
                extra = (
                    " (clip maps are optional in the spatial branch config; re-extract with"
                    " them enabled)" if array == "clip_maps" else ""
                )
                raise FeatureError(
                    f"{who} needs array '{array}' of the '{branch}' branch (role '{role}'), "
                    f"but store {store.path} has only: {', '.join(arrays)}{extra}"
                )

    # Labelled videos with features in every needed branch, in store order.
    labelled = [v for v in store.video_ids if rows[v].mos is not None]
    n_unlabelled = len(store.video_ids) - len(labelled)
    if n_unlabelled:
        notes.append(f"{n_unlabelled} videos have no MOS and are left out")
    keep = set(labelled)
    used_branches = list(dict.fromkeys(b for pairs in needs.values() for b, _ in pairs))
    for branch in used_branches:
        status = store.status(branch)
        missing = [v for v in labelled if v in keep and status[v].state != "done"]
        if missing:
            failed = [v for v in missing if status[v].state == "failed"]
            reasons = "; ".join(f"{v}: {status[v].reason}" for v in failed[:3])
            notes.append(
                f"{len(missing)} labelled videos have no '{branch}' features "
                f"({len(failed)} failed, {len(missing) - len(failed)} pending)"
                + (f", e.g. {reasons}" if reasons else "")
            )
            keep -= set(missing)
    ids = [v for v in labelled if v in keep]
    if not ids:
        raise FeatureError(
            f"no labelled video of {manifest} has features in store {store.path}"
            + (f" ({'; '.join(notes)})" if notes else "")
        )

    # Read part by part and reduce each video right away, into one preallocated array per
    # (role, branch): the table is built once, never as a list of rows copied again.
    inputs: dict[str, np.ndarray] = {}
    layout: list[list[Any]] = []
    role_sources: dict[str, str] = {}
    position = {v: i for i, v in enumerate(ids)}
    for role, pairs in needs.items():
        if role == LEVEL_TEXT:
            text = _level_text(store, available, who)
            inputs[role] = np.repeat(text[None], len(ids), axis=0)
            role_sources[role] = "meta/{}/{}".format(*ROLE_SOURCES[LEVEL_TEXT])
            continue
        if role in (CLIP_FRAMES, CLIP_KEYS):
            (branch, array), = pairs
            inputs[role] = _stack_role(store, branch, array, role, ids, spec)
            role_sources[role] = f"{branch}/{array}"
            continue
        blocks = []
        for branch, array in pairs:
            if role == SPATIAL_CLIP_MAPS:
                blocks.append(_clip_maps_array(store, branch, array, ids, spec))
                continue
            stacked: np.ndarray | None = None
            for vid, rows_v in iter_video_rows(store, branch, array, ids):
                if role == FLAT:
                    value = _pool_flat(branch, array, rows_v, vid)
                else:
                    value = _role_value(role, rows_v, spec, vid)
                if role in VARIABLE_AXES:  # padded below, once the longest video is known
                    if stacked is None:
                        stacked = np.empty(len(ids), dtype=object)
                    stacked[position[vid]] = value
                    continue
                if stacked is None:
                    dtype = np.int64 if role == FRAME_COUNTS else np.float32
                    stacked = np.empty((len(ids),) + value.shape, dtype=dtype)
                elif value.shape != stacked.shape[1:]:
                    shapes = sorted({value.shape, stacked.shape[1:]})
                    raise FeatureError(
                        f"'{branch}/{array}' gives videos of different shapes {shapes} "
                        f"in store {store.path} (e.g. '{vid}')"
                    )
                stacked[position[vid]] = value
            assert stacked is not None  # iter_video_rows yields every id or raises
            if role in VARIABLE_AXES:
                shapes = {v.shape[1:] for v in stacked}
                if len(shapes) != 1:
                    raise FeatureError(
                        f"'{branch}/{array}' gives videos of different shapes {sorted(shapes)} "
                        f"in store {store.path}"
                    )
                stacked = pad_frames(list(stacked))
            blocks.append(stacked)
            if role == FLAT:
                layout.append([branch, array, int(stacked.shape[1])])
        inputs[role] = blocks[0] if len(blocks) == 1 else np.concatenate(blocks, axis=1)

    table = FeatureTable(
        video_ids=ids,
        mos=np.array([rows[v].mos for v in ids], dtype=np.float64),
        scales=[rows[v].mos_scale for v in ids],
        inputs=inputs,
        dataset=name,
        notes=notes,
        info={"spec": spec.to_json(), "flat_layout": layout, "store": str(store.path),
              "manifest": str(manifest), "role_sources": role_sources,
              "branch_configs": {b: store.branch_config(b) for b in used_branches}},
    )
    table = apply_nan_policy(table, spec.nan_policy)
    for note in table.notes:
        log.info("%s: %s", name, note)
    return table


def _clip_keys_source(store: Any, available: Sequence[str]) -> tuple[str, str]:
    """``semantic/frame_tokens`` when the store has them, else ``semantic/window_embeddings``."""
    branch, tokens = ROLE_SOURCES[CLIP_KEYS]
    if branch in available and tokens in _store_arrays(store, branch):
        return branch, tokens
    return CLIP_KEYS_FALLBACK


def _level_text(store: Any, available: Sequence[str], who: str) -> np.ndarray:
    """The (K, D) level-word text embeddings of the semantic branch."""
    branch, name = ROLE_SOURCES[LEVEL_TEXT]
    if branch not in available:
        raise FeatureError(
            f"{who} needs the '{branch}' branch (its '{name}'), but store {store.path} has "
            f"only: {', '.join(available) or 'no branches'}"
        )
    try:
        text = np.asarray(store.branch_array(branch, name), dtype=np.float32)
    except VqaPipeError:
        raise FeatureError(
            f"{who} needs the quality-level text embeddings '{name}' of the '{branch}' branch, "
            f"which store {store.path} lacks; re-extract with the frame view enabled"
        ) from None
    if text.ndim != 2:
        raise FeatureError(f"'{branch}/{name}' in {store.path} has shape {text.shape}, "
                           "expected (levels, D)")
    return text


def _stack_role(store: Any, branch: str, array: str, role: str, ids: Sequence[str],
                spec: TableSpec) -> np.ndarray:
    """One clip role for ``ids``, filled into one preallocated array (never two copies)."""
    out = None
    position = {v: i for i, v in enumerate(ids)}
    for vid, rows_v in iter_video_rows(store, branch, array, ids):
        value = _role_value(role, rows_v, spec, vid)
        if out is None:
            dtype = value.dtype if role in _KEEP_DTYPE else np.float32
            out = np.empty((len(ids),) + value.shape, dtype=dtype)
        if value.shape != out.shape[1:]:
            raise FeatureError(
                f"'{branch}/{array}' gives videos of different shapes {out.shape[1:]} and "
                f"{value.shape} (video '{vid}') in store {store.path}"
            )
        out[position[vid]] = value
    return out


def _finite_rows(arr: np.ndarray, chunk: int = 32) -> np.ndarray:
    """True for each video (row) whose values are all finite, ``chunk`` videos at a time."""
    ok = np.empty(len(arr), dtype=bool)
    for start in range(0, len(arr), chunk):
        block = arr[start:start + chunk]
        ok[start:start + chunk] = np.isfinite(block.reshape(len(block), -1)).all(axis=1)
    return ok


def apply_nan_policy(table: FeatureTable, policy: str) -> FeatureTable:
    """Handle videos with NaN (or inf) features as ``policy`` says, noting what was done."""
    if policy not in NAN_POLICIES:
        raise FeatureError(
            f"unknown NaN policy {policy!r}; choose one of {', '.join(NAN_POLICIES)}"
        )
    bad = np.zeros(len(table), dtype=bool)
    for arr in table.inputs.values():
        bad |= ~_finite_rows(arr)
    table.info["nan_policy"] = policy
    if not bad.any():
        return table
    ids = [v for v, b in zip(table.video_ids, bad) if b]
    what = f"{len(ids)} of {len(table)} videos{' of ' + table.dataset if table.dataset else ''}"
    if policy == "error":
        raise FeatureError(
            f"{what} have NaN or inf features (e.g. {ids[:5]}); choose a NaN policy "
            "(drop, zero or mean) to drop or impute them"
        )
    if policy == "drop":
        keep = np.flatnonzero(~bad)
        if not len(keep):
            raise FeatureError(f"all {len(table)} videos have NaN features; nothing left to use")
        out = table.take(keep)
        out.notes.append(f"dropped {len(ids)} videos with NaN features (e.g. {ids[:3]})")
        out.info["nan_dropped"] = ids
        return out
    if policy == "zero":
        for role, arr in table.inputs.items():
            table.inputs[role] = np.where(np.isfinite(arr), arr, 0).astype(arr.dtype)
        table.notes.append(f"imputed 0 for the NaN features of {len(ids)} videos")
    else:  # mean: regressors fill NaN with training-part means
        for role, arr in table.inputs.items():
            table.inputs[role] = np.where(np.isinf(arr), np.nan, arr).astype(arr.dtype)
        table.notes.append(
            f"{len(ids)} videos have NaN features, imputed with training-part means"
        )
    table.info["nan_imputed"] = ids
    return table


def configuration_differences(train_configs: Mapping, other_configs: Mapping) -> list[str]:
    """``branch.key: train -> other`` for each difference in the definitions of the branches
    both tables were built from (see :func:`feature_definition`)."""
    from vqa_pipe.pipeline.store import config_differences, feature_definition

    diffs = []
    for branch in train_configs:
        if branch in other_configs:
            diffs.extend(f"{branch}.{d}" for d in config_differences(
                feature_definition(train_configs[branch]),
                feature_definition(other_configs[branch])))
    return diffs


def mismatch_note(test: str, train: str, diffs: Sequence[str]) -> str:
    """The note every output of a run carries when it tests on other-configured features."""
    shown = "; ".join(diffs[:6]) + (f" (and {len(diffs) - 6} more)" if len(diffs) > 6 else "")
    return (f"CONFIGURATION MISMATCH ALLOWED: {test}'s features were extracted with another "
            f"configuration than {train}'s ({shown}); its scores compare unlike features")


def check_compatible(train: FeatureTable, other: FeatureTable, roles: Iterable[str], *,
                     allow_config_mismatch: bool = False) -> list[str]:
    """Refuse to apply a model trained on ``train`` to ``other`` when input shapes differ, or
    when the features were extracted with another configuration (grid, softmax, prompts,
    model, weights, sampling...: the same shapes can mean other things).

    With ``allow_config_mismatch`` the configuration differences are returned instead (the
    caller announces them in every output); shapes must still agree.
    """
    for role in roles:
        a = train.require(role)
        b = other.require(role)
        if not shapes_match(role, a.shape[1:], b.shape[1:]):
            raise FeatureError(
                f"role '{role}': {train.dataset or 'training'} features have shape "
                f"{a.shape[1:]} but {other.dataset or 'test'} features have {b.shape[1:]}; "
                "they were extracted with different configurations"
            )
    diffs = configuration_differences(train.info.get("branch_configs", {}),
                                      other.info.get("branch_configs", {}))
    if diffs and not allow_config_mismatch:
        raise FeatureError(
            f"the features of {other.dataset or 'the test set'} were extracted with another "
            f"configuration than {train.dataset or 'the training set'}'s: "
            + "; ".join(diffs[:8]) + (f" (and {len(diffs) - 8} more)" if len(diffs) > 8 else "")
            + ". Extract it with the same settings, or pass --allow-config-mismatch (every "
            "output then says so)"
        )
    return diffs
