"""Manifest rows and the manifest CSV file.

A manifest lists the videos of one dataset, one row per video, with the columns::

    video_id,path,mos,mos_scale,width,height,fps,duration_s,n_frames

``mos_scale`` is ``1-5``, ``0-100`` or empty (no label). Unknown numbers are empty. A relative
``path`` is resolved against the folder that holds the manifest file; :func:`write_manifest`
writes paths relative to that folder when the video lies inside it (so a manifest moves with
its data) and absolute otherwise.

Every error names the file and the line (line 1 is the header).

Label files and manifests are read as UTF-8 (a byte-order mark is dropped). Any other encoding is
refused naming the first line that is not UTF-8: a byte above 0x7F in a Latin-1 file is just as
valid in Windows-1252, Latin-9 or Mac Roman, so guessing could turn ``café.mp4`` into a file
name that does not exist, or, worse, into another video id, without a word.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

from vqa_pipe.pipeline.errors import VqaPipeError

MOS_SCALES: dict[str, tuple[float, float]] = {"1-5": (1.0, 5.0), "0-100": (0.0, 100.0)}
COLUMNS: tuple[str, ...] = (
    "video_id",
    "path",
    "mos",
    "mos_scale",
    "width",
    "height",
    "fps",
    "duration_s",
    "n_frames",
)
REQUIRED_COLUMNS: tuple[str, ...] = ("video_id", "path")
_INT_FIELDS = ("width", "height", "n_frames")
_FLOAT_FIELDS = ("fps", "duration_s")


class ManifestError(VqaPipeError):
    """A manifest or label file is malformed; the message names the file and the line."""


class MissingVideosError(ManifestError):
    """Some video files listed in a label file do not exist; ``missing`` holds their rows."""

    def __init__(self, message: str, missing: Sequence[ManifestRow]) -> None:
        super().__init__(message)
        self.missing = list(missing)


@dataclass(frozen=True)
class ManifestRow:
    """One video of a dataset. ``mos`` and ``mos_scale`` are both set or both ``None``."""

    video_id: str
    path: Path
    mos: float | None
    mos_scale: str | None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    duration_s: float | None = None
    n_frames: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.path, Path):
            object.__setattr__(self, "path", Path(self.path))
        problem = _row_problem(self)
        if problem:
            raise ManifestError(f"video {self.video_id!r}: {problem}")


def _row_problem(row: ManifestRow) -> str | None:
    """What is wrong with ``row``, or ``None``."""
    if not isinstance(row.video_id, str) or not row.video_id.strip():
        return "video_id is empty"
    if row.video_id != row.video_id.strip():
        return "video_id has leading or trailing spaces"
    if not str(row.path) or str(row.path) == ".":
        return "path is empty"
    if row.mos_scale is not None and row.mos_scale not in MOS_SCALES:
        return f"mos_scale {row.mos_scale!r} is not one of {', '.join(MOS_SCALES)} (or empty)"
    if (row.mos is None) != (row.mos_scale is None):
        return "mos and mos_scale must both be given or both be empty"
    if row.mos is not None:
        if not math.isfinite(row.mos):
            return f"MOS {row.mos!r} is not a finite number"
        low, high = MOS_SCALES[row.mos_scale]
        if not low <= row.mos <= high:
            return f"MOS {row.mos:g} is outside the {row.mos_scale} scale"
    for name in _INT_FIELDS:
        value = getattr(row, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value <= 0):
            return f"{name} must be a positive integer, got {value!r}"
    for name in _FLOAT_FIELDS:
        value = getattr(row, name)
        if value is not None and not (math.isfinite(value) and value > 0):
            return f"{name} must be a positive number, got {value!r}"
    return None


def parse_float(text: str) -> float | None:
    """A float from a CSV cell; ``None`` for an empty cell. ``ValueError`` if not a number."""
    text = text.strip()
    if not text:
        return None
    return float(text)


def parse_optional_number(text: str, kind: type) -> float | int | None:
    """A metadata number: empty, ``NaN`` or a non-positive placeholder (``-1``) mean unknown.

    Raises ``ValueError`` for text that is not a number.
    """
    value = parse_float(text)
    if value is None or not math.isfinite(value) or value <= 0:
        return None
    if kind is int:
        if value != int(value):
            raise ValueError(f"{text.strip()!r} is not a whole number")
        return int(value)
    return value


def read_utf8_text(path: str | os.PathLike[str], what: str = "file") -> str:
    """The text of a UTF-8 ``path`` (a leading byte-order mark is dropped).

    Raises:
        ManifestError: the file cannot be read, or it is not UTF-8 text (UTF-16, Latin-1 and
            other 8-bit encodings, binary files); the message names the file, the line and
            how to convert it. ``what`` names the kind of file in the message.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ManifestError(f"cannot read {what} {path}: {err.strerror or err}") from None
    convert = (
        f"save it as UTF-8 (from Latin-1 or Windows-1252: iconv -f cp1252 -t utf-8 "
        f"'{path}' > fixed; check the result)"
    )
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ManifestError(
            f"{path}:1: this {what} is UTF-16 text (it starts with a UTF-16 byte-order mark); "
            f"a {what} must be UTF-8: save it as UTF-8 (iconv -f utf-16 -t utf-8 '{path}' > fixed)"
        )
    nul = data.find(b"\x00")
    if nul >= 0:
        line = data.count(b"\n", 0, nul) + 1
        raise ManifestError(
            f"{path}:{line}: holds a NUL byte: this is a binary file "
            f"or UTF-16 text, not a UTF-8 {what}; {convert}"
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - data.rfind(b"\n", 0, err.start)
        raise ManifestError(
            f"{path}:{line}: not UTF-8 text (byte 0x{data[err.start]:02x} at column {column}); "
            f"a {what} must be UTF-8, and the encoding it was written in cannot be told for "
            f"sure: {convert}"
        ) from None


def read_manifest(path: str | os.PathLike[str]) -> list[ManifestRow]:
    """Read and validate a manifest CSV; paths come back absolute.

    Raises:
        ManifestError: unknown or missing columns, a bad value, or a duplicate ``video_id``;
            the message names the file and the line.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest {path} does not exist")
    folder = path.absolute().parent
    rows: list[ManifestRow] = []
    seen: dict[str, int] = {}
    with io.StringIO(read_utf8_text(path, "manifest"), newline="") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        unknown = [c for c in header if c not in COLUMNS]
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if unknown or missing or len(set(header)) != len(header):
            raise ManifestError(
                f"{path}:1: bad header {','.join(header) or '(empty file)'}; "
                + (f"unknown columns {', '.join(unknown)}; " if unknown else "")
                + (f"missing columns {', '.join(missing)}; " if missing else "")
                + f"a manifest has the columns {','.join(COLUMNS)}"
            )
        for record in reader:
            line = reader.line_num
            where = f"{path}:{line}"
            if None in record:
                raise ManifestError(f"{where}: more cells than header columns")
            try:
                row = _row_from_record(record, folder)
            except (ManifestError, ValueError) as err:
                raise ManifestError(f"{where}: {err}") from None
            if row.video_id in seen:
                raise ManifestError(
                    f"{where}: duplicate video_id {row.video_id!r} (first on line "
                    f"{seen[row.video_id]})"
                )
            seen[row.video_id] = line
            rows.append(row)
    return rows


def _row_from_record(record: dict[str, str | None], folder: Path) -> ManifestRow:
    def cell(name: str) -> str:
        return (record.get(name) or "").strip()

    values: dict[str, object] = {"video_id": cell("video_id")}
    if not cell("path"):
        raise ManifestError("path is empty")
    values["path"] = Path(os.path.normpath(folder / cell("path")))
    try:
        mos = parse_float(cell("mos"))
    except ValueError:
        raise ManifestError(f"MOS {cell('mos')!r} is not a number") from None
    values["mos"] = mos
    values["mos_scale"] = cell("mos_scale") or None
    for name in _INT_FIELDS + _FLOAT_FIELDS:
        text = cell(name)
        if not text:
            values[name] = None
            continue
        try:
            number = float(text)
        except ValueError:
            raise ManifestError(f"{name} {text!r} is not a number") from None
        if name in _INT_FIELDS:
            if not math.isfinite(number) or number != int(number):
                raise ManifestError(f"{name} {text!r} is not a whole number")
            number = int(number)
        values[name] = number
    return ManifestRow(**values)  # type: ignore[arg-type]


def _format(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def manifest_path_text(video: Path, folder: Path) -> str:
    """How ``video`` is written in a manifest that lives in ``folder``."""
    video = Path(os.path.normpath(Path(video).absolute()))
    folder = Path(os.path.normpath(Path(folder).absolute()))
    try:
        return video.relative_to(folder).as_posix()
    except ValueError:
        return str(video)


def write_manifest(rows: Iterable[ManifestRow], path: str | os.PathLike[str]) -> Path:
    """Write ``rows`` as a manifest CSV (atomically) and return its path.

    Paths inside the manifest's folder are written relative to it, others absolute.

    Raises:
        ManifestError: two rows share a ``video_id``, or ``path`` cannot be written (a folder,
            a folder that cannot be created or written to, a full disk); the message names
            ``path``.
    """
    path = Path(path)
    if path.is_dir():
        _cannot_write(path, "it is a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            _cannot_write(path, f"{blocker} is a file, not a folder")
        _cannot_write(path, f"its folder cannot be created ({_reason(err)})")
    folder = path.absolute().parent
    seen: set[str] = set()
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(COLUMNS)
            for index, row in enumerate(rows):
                if row.video_id in seen:
                    raise ManifestError(
                        f"cannot write {path}: duplicate video_id {row.video_id!r} "
                        f"(row {index + 1})"
                    )
                seen.add(row.video_id)
                cells = {f.name: getattr(row, f.name) for f in fields(row)}
                cells["path"] = manifest_path_text(row.path, folder)
                writer.writerow([_format(cells[name]) for name in COLUMNS])
        os.replace(tmp, path)
    except OSError as err:
        _cannot_write(path, _reason(err))
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
    return path


def _reason(err: OSError) -> str:
    return err.strerror or str(err)


def _cannot_write(path: Path, reason: str) -> None:
    raise ManifestError(
        f"cannot write the manifest {path}: {reason}; choose another output file (--out)"
    ) from None


def find_missing(rows: Iterable[ManifestRow]) -> list[ManifestRow]:
    """The rows whose video file does not exist."""
    return [row for row in rows if not row.path.is_file()]
