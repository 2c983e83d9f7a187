"""Registry of dataset label readers: label file → manifest rows.

Each dataset reads the label files it is really distributed with, in either form:

* the FAST-VQA / DOVER ``labels.txt`` table: no header, one line per video,
  ``relative/path, duration_s or -1, fps or -1, MOS``, paths relative to the dataset root;
* the dataset's metadata CSV with a header (see the table below); video files are looked for
  under the root at a few usual places, the first that exists wins (the first listed is used,
  and reported missing, when none does).

=================  =====  ==============================================  =====================
dataset            scale  label files looked for under ``root``           video id
=================  =====  ==============================================  =====================
konvid             1-5    labels.txt, KONVID_1K_metadata.csv              flickr id (file stem)
live_vqc           0-100  labels.txt, LIVE_VQC_metadata.csv               file stem (``A001``)
youtube_ugc        1-5    labels.txt, YOUTUBE_UGC_metadata.csv            ``vid`` (stem without
                                                                          ``_crf_10_ss_00_t_20.0``)
lsvq_train         0-100  train_labels.txt, labels_train.txt,            LSVQ ``name``: path
                          LSVQ_whole_train.csv                            without suffix
lsvq_test          0-100  labels_test.txt, LSVQ_whole_test.csv            as lsvq_train
lsvq_test_1080p    0-100  labels_1080p.txt, LSVQ_whole_test_1080p.csv     as lsvq_train
csv                given  labels.csv (columns ``path,mos``)               ``video_id`` or stem
demo               1-5    labels.csv written by ``make_demo_dataset``     file stem
=================  =====  ==============================================  =====================

LSVQ file stems repeat across its ``yfcc-batch*`` / ``ia-batch*`` folders, so its id keeps the
folder (``yfcc-batch1/747``), as LSVQ's own ``name`` column does.

Rows with a NaN MOS are rejected naming their lines, or dropped (and counted) with
``drop_nan=True``; a non-numeric MOS, a MOS outside the scale and a duplicate id are always
rejected naming the line.

Video paths must stay inside ``root``: a label path such as ``../../../etc/passwd`` or an
absolute path elsewhere is rejected naming its line, unless ``allow_outside_root=True``. The
check is on the path as written (``..`` resolved lexically, the way the manifest will hold it),
so a symbolic link inside the root is accepted wherever it points: linking a dataset's videos in
from another disk is the usual way to assemble a root, and making the link took a decision by
whoever owns the root.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vqa_pipe.pipeline.manifest import (
    MOS_SCALES,
    ManifestError,
    ManifestRow,
    parse_optional_number,
    read_utf8_text,
)
from vqa_pipe.pipeline.registry import Registry

_MAX_LISTED = 20


@dataclass(frozen=True)
class LabelTable:
    """What a label reader found: the rows, and the lines dropped for a NaN MOS."""

    source: Path
    rows: list[ManifestRow]
    nan_lines: list[int] = field(default_factory=list)
    mos_scale: str | None = None
    outside_root: list[tuple[int, Path]] = field(default_factory=list)
    """(line, path) of the rows whose video path lies outside the root (they are in ``rows``)."""


@dataclass(frozen=True)
class _Record:
    """One parsed label line before MOS checks: candidate paths relative to the root."""

    line: int
    video_id: str
    candidates: tuple[str, ...]
    mos_text: str
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    duration_s: float | None = None
    n_frames: int | None = None


@dataclass(frozen=True)
class MetadataColumns:
    """Column names of a dataset's metadata CSV (``None``: the CSV has no such column)."""

    id: str
    mos: str
    candidates: Callable[[dict[str, str]], tuple[str, ...]]
    video_id: Callable[[dict[str, str]], str]
    width: str | None = "width"
    height: str | None = "height"
    fps: str | None = "framerate"
    n_frames: str | None = "nb_frames"


Reader = Callable[[Path, Path, bool, "str | None"], LabelTable]


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: its MOS scale, usual label files and reader."""

    name: str
    title: str
    mos_scale: str | None
    label_files: tuple[str, ...]
    reader: Reader

    def find_label_file(self, root: Path) -> Path:
        """The first of the usual label files present under ``root``."""
        for name in self.label_files:
            candidate = Path(root) / name
            if candidate.is_file():
                return candidate
        raise ManifestError(
            f"no label file for dataset {self.name!r} under {root}: looked for "
            f"{', '.join(self.label_files)}; pass the file with --labels"
        )


DATASETS: Registry[DatasetSpec] = Registry("dataset", error=ManifestError)


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Add ``spec`` to the registry (names are unique)."""
    if spec.mos_scale is not None and spec.mos_scale not in MOS_SCALES:
        raise ManifestError(f"dataset {spec.name!r}: unknown MOS scale {spec.mos_scale!r}")
    return DATASETS.register(spec.name, spec)


def list_datasets() -> list[str]:
    """Names of the registered datasets, in registration order."""
    return DATASETS.names()


def get_dataset(name: str) -> DatasetSpec:
    """The registered dataset ``name``; the error lists the valid names."""
    return DATASETS.get(name)


def read_labels(
    name: str,
    root: str | os.PathLike[str],
    labels: str | os.PathLike[str] | None = None,
    *,
    drop_nan: bool = False,
    mos_scale: str | None = None,
    allow_outside_root: bool = False,
) -> LabelTable:
    """Read the label file of dataset ``name`` into manifest rows (paths under ``root``).

    Args:
        name: a registered dataset (see :func:`list_datasets`).
        root: folder the video paths are relative to.
        labels: the label file; by default the first usual one found under ``root``.
        drop_nan: drop rows whose MOS is NaN instead of rejecting the file.
        mos_scale: the scale of a ``csv`` dataset (inferred from the values when ``None``);
            other datasets have a fixed scale and refuse a different one.
        allow_outside_root: accept video paths that lead outside ``root`` (``..``, absolute
            paths); they are listed in ``outside_root`` either way.

    Raises:
        ManifestError: the file is missing or malformed, or (without ``allow_outside_root``)
            a video path leaves ``root``; the message names file and lines.
    """
    spec = get_dataset(name)
    root = Path(root)
    if mos_scale is not None and mos_scale not in MOS_SCALES:
        raise ManifestError(
            f"unknown MOS scale {mos_scale!r}; valid: {', '.join(MOS_SCALES)}"
        )
    if mos_scale is not None and spec.mos_scale is not None and mos_scale != spec.mos_scale:
        raise ManifestError(
            f"dataset {name!r} has MOS scale {spec.mos_scale}, not {mos_scale}"
        )
    path = Path(labels) if labels is not None else spec.find_label_file(root)
    if not path.is_file():
        raise ManifestError(f"label file {path} does not exist")
    table = spec.reader(path, root, drop_nan, mos_scale or spec.mos_scale)
    if table.outside_root and not allow_outside_root:
        _raise_problems(
            path,
            [f"line {line}: {video} is outside the dataset root" for line, video in
             table.outside_root],
            hint=f"video paths must stay inside the dataset root {os.path.abspath(root)}; "
            "allow_outside_root (--allow-outside-root) accepts them",
        )
    return table


def outside_root(path: str | os.PathLike[str], root: str | os.PathLike[str]) -> bool:
    """Whether ``path`` (relative to ``root`` or absolute) leads outside ``root``.

    Lexical: ``..`` is resolved on the text, symbolic links are not followed.
    """
    base = os.path.normpath(os.path.abspath(root))
    target = os.path.normpath(os.path.join(base, os.fspath(path)))
    return os.path.commonpath([base, target]) != base


# --------------------------------------------------------------------------- parsing helpers


def _read_lines(path: Path) -> list[str]:
    return read_utf8_text(path, "label file").splitlines()


def _open_text(path: Path) -> io.StringIO:
    """A label file's text as a stream for :mod:`csv` (UTF-8 only, see ``read_utf8_text``)."""
    return io.StringIO(read_utf8_text(path, "label file"), newline="")


def _looks_like_labels_txt(first_line: str) -> bool:
    parts = [p.strip() for p in first_line.split(",")]
    if len(parts) != 4 or not parts[0]:
        return False
    try:
        [float(p) for p in parts[1:]]
    except ValueError:
        return False
    return True


def _parse_labels_txt(path: Path, video_id: Callable[[str], str]) -> list[_Record]:
    """FAST-VQA ``labels.txt``: ``relative/path, duration_s or -1, fps or -1, MOS``."""
    records = []
    problems = []
    for number, text in enumerate(_read_lines(path), start=1):
        if not text.strip():
            continue
        parts = [p.strip() for p in text.split(",")]
        if len(parts) != 4 or not parts[0]:
            problems.append(
                f"line {number}: expected 'path, duration_s, fps, MOS', got {text.strip()!r}"
            )
            continue
        rel, duration_text, fps_text, mos_text = parts
        try:
            duration = parse_optional_number(duration_text, float)
            fps = parse_optional_number(fps_text, float)
        except ValueError:
            problems.append(
                f"line {number}: duration {duration_text!r} or fps {fps_text!r} "
                "is not a number"
            )
            continue
        records.append(
            _Record(
                line=number,
                video_id=video_id(rel),
                candidates=(rel,),
                mos_text=mos_text,
                fps=fps,
                duration_s=duration,
            )
        )
    _raise_problems(path, problems)
    return records


def _parse_metadata_csv(path: Path, columns: MetadataColumns) -> list[_Record]:
    records = []
    problems = []
    with _open_text(path) as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        reader.fieldnames = header
        needed = [columns.id, columns.mos]
        absent = [c for c in needed if c not in header]
        if absent:
            raise ManifestError(
                f"{path}:1: missing column(s) {', '.join(absent)}; this reader needs "
                f"{', '.join(needed)} and found {', '.join(header) or 'no header'}"
            )
        for number, row in _csv_rows(reader, problems):
            if not row[columns.id]:
                problems.append(f"line {number}: empty {columns.id}")
                continue
            numbers: dict[str, float | int | None] = {}
            bad = None
            for attr, kind in (("width", int), ("height", int), ("fps", float),
                               ("n_frames", int)):
                column = getattr(columns, attr)
                text = row.get(column, "") if column else ""
                try:
                    numbers[attr] = parse_optional_number(text, kind)
                except ValueError:
                    bad = f"line {number}: {column} {text!r} is not a number"
                    break
            if bad:
                problems.append(bad)
                continue
            records.append(
                _Record(
                    line=number,
                    video_id=columns.video_id(row),
                    candidates=columns.candidates(row),
                    mos_text=row[columns.mos],
                    **numbers,  # type: ignore[arg-type]
                )
            )
    _raise_problems(path, problems)
    return records


def _raise_problems(path: Path, problems: Sequence[str], hint: str = "") -> None:
    if not problems:
        return
    shown = list(problems[:_MAX_LISTED])
    if len(problems) > _MAX_LISTED:
        shown.append(f"... and {len(problems) - _MAX_LISTED} more")
    head = f"{path}: {len(problems)} bad line(s)" + (f" ({hint})" if hint else "") + ":"
    raise ManifestError("\n  ".join([head, *shown]))


def _pick_path(root: Path, candidates: Sequence[str]) -> Path:
    """The first candidate that exists under ``root``, else the first one."""
    base = os.fspath(root)
    if len(candidates) > 1:
        for rel in candidates:
            path = os.path.normpath(os.path.join(base, rel))
            if os.path.isfile(path):
                return Path(path)
    return Path(os.path.normpath(os.path.join(base, candidates[0])))


def _infer_scale(path: Path, values: Sequence[float]) -> str:
    if values and all(1.0 <= v <= 5.0 for v in values):
        return "1-5"
    if all(0.0 <= v <= 100.0 for v in values):
        return "0-100"
    raise ManifestError(
        f"{path}: cannot infer the MOS scale (values from {min(values):g} to {max(values):g} "
        f"fit neither {' nor '.join(MOS_SCALES)}); rescale the MOS or pass --mos-scale"
    )


def _finish(
    path: Path,
    root: Path,
    records: Sequence[_Record],
    drop_nan: bool,
    mos_scale: str | None,
    *,
    allow_unlabelled: bool = False,
) -> LabelTable:
    """MOS parsing, NaN handling, duplicate ids and scale checks shared by every reader."""
    problems: list[str] = []
    nan_lines: list[int] = []
    kept: list[tuple[_Record, float | None]] = []
    for rec in records:
        text = rec.mos_text
        if not text and allow_unlabelled:
            kept.append((rec, None))
            continue
        try:
            mos = float(text)
        except ValueError:
            problems.append(f"line {rec.line}: MOS {text!r} is not a number")
            continue
        if math.isnan(mos):
            nan_lines.append(rec.line)
            continue
        if math.isinf(mos):
            problems.append(f"line {rec.line}: MOS {text!r} is not finite")
            continue
        kept.append((rec, mos))
    _raise_problems(path, problems)
    if nan_lines and not drop_nan:
        _raise_problems(
            path,
            [f"line {n}: MOS is NaN" for n in nan_lines],
            hint=f"{len(nan_lines)} row(s) with a NaN MOS; drop_nan / --drop-nan drops them",
        )

    labelled = [mos for _, mos in kept if mos is not None]
    if mos_scale is None and labelled:
        mos_scale = _infer_scale(path, labelled)

    seen: dict[str, int] = {}
    rows: list[ManifestRow] = []
    outside: list[tuple[int, Path]] = []
    for rec, mos in kept:
        if rec.video_id in seen:
            problems.append(
                f"line {rec.line}: duplicate video id {rec.video_id!r} "
                f"(first on line {seen[rec.video_id]})"
            )
            continue
        seen[rec.video_id] = rec.line
        if mos is not None:
            low, high = MOS_SCALES[mos_scale]  # type: ignore[index]
            if not low <= mos <= high:
                problems.append(
                    f"line {rec.line}: MOS {mos:g} is outside the {mos_scale} scale "
                    "(is this the right dataset?)"
                )
                continue
        video = _pick_path(root, rec.candidates)
        if outside_root(video, root):
            outside.append((rec.line, video))
        try:
            rows.append(
                ManifestRow(
                    video_id=rec.video_id,
                    path=video,
                    mos=mos,
                    mos_scale=mos_scale if mos is not None else None,
                    width=rec.width,
                    height=rec.height,
                    fps=rec.fps,
                    duration_s=rec.duration_s,
                    n_frames=rec.n_frames,
                )
            )
        except ManifestError as err:
            problems.append(f"line {rec.line}: {err}")
    _raise_problems(path, problems)
    return LabelTable(source=path, rows=rows, nan_lines=nan_lines, mos_scale=mos_scale,
                      outside_root=outside)


# --------------------------------------------------------------------------- readers


def _stem(rel: str) -> str:
    return os.path.splitext(os.path.basename(rel.replace("\\", "/")))[0]


def _without_suffix(rel: str) -> str:
    head, tail = os.path.split(rel.replace("\\", "/"))
    stem = os.path.splitext(tail)[0]
    return f"{head}/{stem}" if head else stem


def label_reader(
    id_from_path: Callable[[str], str], columns: MetadataColumns
) -> Reader:
    """A reader accepting a FAST-VQA ``labels.txt`` or the dataset's metadata CSV.

    Args:
        id_from_path: the video id of a ``labels.txt`` path (e.g. its file stem).
        columns: where the metadata CSV keeps the id, the MOS and the video's path candidates.
    """

    def read(path: Path, root: Path, drop_nan: bool, mos_scale: str | None) -> LabelTable:
        lines = _read_lines(path)
        first = next((line for line in lines if line.strip()), "")
        header = [h.strip() for h in next(csv.reader([first]), [])]
        if columns.id in header:
            records = _parse_metadata_csv(path, columns)
        elif _looks_like_labels_txt(first):
            records = _parse_labels_txt(path, id_from_path)
        else:
            raise ManifestError(
                f"{path}:1: cannot tell the format: expected a FAST-VQA labels.txt line "
                f"'path, duration_s, fps, MOS' or a CSV header with columns "
                f"{columns.id},{columns.mos}; got {first.strip()[:80]!r}"
            )
        return _finish(path, root, records, drop_nan, mos_scale)

    return read


_UGC_SUFFIX = re.compile(r"^(?P<vid>.+?)_crf_\d+_ss_\d+_t_[\d.]+$")


def _ugc_id(rel: str) -> str:
    stem = _stem(rel)
    match = _UGC_SUFFIX.match(stem)
    return match.group("vid") if match else stem


def _ugc_candidates(row: dict[str, str]) -> tuple[str, ...]:
    vid = row["vid"]
    names = [
        f"{vid}.mkv",
        f"{vid}_crf_10_ss_00_t_20.0.mp4",
        f"{vid}.mp4",
        f"original_videos_h264/{vid}_crf_10_ss_00_t_20.0.mp4",
    ]
    category, resolution = row.get("category", ""), row.get("resolution", "")
    if category and resolution:
        names.append(f"original_videos/{category}/{resolution}P/{vid}.mkv")
    return tuple(names)


def _lsvq_columns() -> MetadataColumns:
    return MetadataColumns(
        id="name",
        mos="mos",
        candidates=lambda r: (f"{r['name']}.mp4",),
        video_id=lambda r: r["name"],
        fps=None,
        n_frames="frame_number",
    )


def _generic_csv(path: Path, root: Path, drop_nan: bool, mos_scale: str | None) -> LabelTable:
    """``path,mos`` CSV (optional ``video_id,width,height,fps,duration_s,n_frames``).

    An empty MOS cell means an unlabelled video; ``NaN`` and text are rejected.
    """
    records = []
    problems = []
    with _open_text(path) as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        reader.fieldnames = header
        absent = [c for c in ("path", "mos") if c not in header]
        if absent:
            raise ManifestError(
                f"{path}:1: missing column(s) {', '.join(absent)}; a csv label file has the "
                f"columns path,mos (and optionally video_id,width,height,fps,duration_s,"
                f"n_frames); found {', '.join(header) or 'no header'}"
            )
        for number, row in _csv_rows(reader, problems):
            if not row["path"]:
                problems.append(f"line {number}: empty path")
                continue
            numbers: dict[str, float | int | None] = {}
            try:
                for attr, kind in (("width", int), ("height", int), ("fps", float),
                                   ("duration_s", float), ("n_frames", int)):
                    numbers[attr] = parse_optional_number(row.get(attr, ""), kind)
            except ValueError as err:
                problems.append(f"line {number}: {attr}: {err}")
                continue
            records.append(
                _Record(
                    line=number,
                    video_id=row.get("video_id") or _stem(row["path"]),
                    candidates=(row["path"],),
                    mos_text=row["mos"],
                    **numbers,  # type: ignore[arg-type]
                )
            )
    _raise_problems(path, problems)
    return _finish(path, root, records, drop_nan, mos_scale, allow_unlabelled=True)


register_dataset(DatasetSpec(
    name="konvid",
    title="KoNViD-1k (1200 Flickr videos, MOS 1-5)",
    mos_scale="1-5",
    label_files=("labels.txt", "KONVID_1K_metadata.csv"),
    reader=label_reader(
        _stem,
        MetadataColumns(
            id="flickr_id",
            mos="mos",
            candidates=lambda r: (f"{r['flickr_id']}.mp4",
                                  f"KoNViD_1k_videos/{r['flickr_id']}.mp4"),
            video_id=lambda r: r["flickr_id"],
        ),
    ),
))
register_dataset(DatasetSpec(
    name="live_vqc",
    title="LIVE-VQC (585 mobile videos, MOS 0-100)",
    mos_scale="0-100",
    label_files=("labels.txt", "LIVE_VQC_metadata.csv"),
    reader=label_reader(
        _stem,
        MetadataColumns(
            id="File",
            mos="MOS",
            candidates=lambda r: (r["File"], f"Video/{r['File']}"),
            video_id=lambda r: _stem(r["File"]),
        ),
    ),
))
register_dataset(DatasetSpec(
    name="youtube_ugc",
    title="YouTube-UGC (1380 videos, 1147 in the FAST-VQA labels; MOS 1-5)",
    mos_scale="1-5",
    label_files=("labels.txt", "YOUTUBE_UGC_metadata.csv"),
    reader=label_reader(
        _ugc_id,
        MetadataColumns(
            id="vid",
            mos="MOSFull",
            candidates=_ugc_candidates,
            video_id=lambda r: r["vid"],
        ),
    ),
))
for _name, _title, _files in (
    ("lsvq_train", "LSVQ train (28056 videos, MOS 0-100)",
     ("train_labels.txt", "labels_train.txt", "LSVQ_whole_train.csv")),
    ("lsvq_test", "LSVQ test (7186 videos, MOS 0-100)",
     ("labels_test.txt", "LSVQ_whole_test.csv")),
    ("lsvq_test_1080p", "LSVQ test-1080p (3573 videos, MOS 0-100)",
     ("labels_1080p.txt", "LSVQ_whole_test_1080p.csv")),
):
    register_dataset(DatasetSpec(
        name=_name,
        title=_title,
        mos_scale="0-100",
        label_files=_files,
        reader=label_reader(_without_suffix, _lsvq_columns()),
    ))
register_dataset(DatasetSpec(
    name="csv",
    title="any videos: a CSV with columns path,mos (paths relative to --root)",
    mos_scale=None,
    label_files=("labels.csv",),
    reader=_generic_csv,
))
register_dataset(DatasetSpec(
    name="demo",
    title="the built-in demo clips (vqa_pipe.pipeline.demo_clips, MOS 1-5)",
    mos_scale="1-5",
    label_files=("labels.csv",),
    reader=_generic_csv,
))

def _csv_rows(reader: csv.DictReader, problems: list[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, stripped row) of a CSV, skipping blank rows; ragged rows go to problems."""
    for raw in reader:
        number = reader.line_num
        if None in raw:
            problems.append(f"line {number}: more cells than header columns")
            continue
        row = {k: (v or "").strip() for k, v in raw.items()}
        if any(row.values()):
            yield number, row
