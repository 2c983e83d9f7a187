"""Cheap file fingerprints, to notice a video that changed under the same id.

A :class:`FileFingerprint` holds the file's size, its modification time (``st_mtime_ns``)
and, by default, a SHA-256 digest of three samples of its bytes: the first, middle and last
:data:`SAMPLE_BYTES` (the whole file when it is smaller than the three together), with the size
mixed in. Recording one costs a ``stat`` and reading at most 3 × 64 KiB.

:func:`compare_fingerprint` tells what happened to a file since its fingerprint was recorded:

``"unchanged"``
    same size and modification time. Decided from ``stat`` alone: the file is not read.
``"touched"``
    same size and same sampled bytes, another modification time (a ``touch``, a copy that did
    not keep times, a dataset restored from a backup). Treat as unchanged: re-extracting would
    give the same features.
``"changed"``
    another size, or other sampled bytes; or another modification time when no digest was
    recorded (``sample=False``), since then nothing can show the content is the same.
``"missing"``
    the file is gone.

What it cannot see: an edit that keeps the size, touches none of the three samples and also
restores the modification time. Re-encoding, trimming, re-muxing or replacing a video changes
the size or the container header at the start or end of the file, so in practice the samples
catch what the size does not. A full hash would be certain and would read every byte of every
video on every run; this is the cheap building block the store keeps per video.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from vqa_pipe.pipeline.errors import VqaPipeError

SAMPLE_BYTES = 64 * 1024
"""Bytes read at the start, the middle and the end of a file for its digest."""

Change = Literal["unchanged", "touched", "changed", "missing"]


class FingerprintError(VqaPipeError):
    """A file could not be fingerprinted (missing, unreadable); the message names it."""


@dataclass(frozen=True)
class FileFingerprint:
    """Size, modification time and (optionally) a digest of sampled bytes of one file."""

    size: int
    mtime_ns: int
    sample_sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping (store attributes, manifests)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FileFingerprint:
        """The fingerprint :meth:`to_dict` wrote."""
        digest = data.get("sample_sha256")
        return cls(int(data["size"]), int(data["mtime_ns"]),
                   None if digest is None else str(digest))


def sample_digest(path: str | os.PathLike[str], size: int,
                  sample_bytes: int = SAMPLE_BYTES) -> str:
    """SHA-256 of the size and the first, middle and last ``sample_bytes`` of ``path``."""
    digest = hashlib.sha256(str(size).encode("ascii") + b"\0")
    with open(path, "rb") as fh:
        if size <= 3 * sample_bytes:
            digest.update(fh.read())
        else:
            for offset in (0, (size - sample_bytes) // 2, size - sample_bytes):
                fh.seek(offset)
                digest.update(fh.read(sample_bytes))
    return digest.hexdigest()


def file_fingerprint(path: str | os.PathLike[str], *, sample: bool = True) -> FileFingerprint:
    """The fingerprint of ``path`` now; ``sample=False`` skips the digest (``stat`` only).

    Raises:
        FingerprintError: the file is missing, not a regular file, or cannot be read.
    """
    path = Path(path)
    try:
        st = path.stat()
        if not path.is_file():
            raise FingerprintError(f"cannot fingerprint {path}: not a regular file")
        digest = sample_digest(path, st.st_size) if sample else None
    except OSError as err:
        raise FingerprintError(
            f"cannot fingerprint {path}: {err.strerror or err}"
        ) from None
    return FileFingerprint(st.st_size, st.st_mtime_ns, digest)


def compare_fingerprint(recorded: FileFingerprint, path: str | os.PathLike[str]) -> Change:
    """What happened to ``path`` since ``recorded`` was taken (see the module docstring)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "missing"
    except OSError as err:
        raise FingerprintError(f"cannot fingerprint {path}: {err.strerror or err}") from None
    if st.st_size != recorded.size:
        return "changed"
    if st.st_mtime_ns == recorded.mtime_ns:
        return "unchanged"
    if recorded.sample_sha256 is None:
        return "changed"
    try:
        digest = sample_digest(path, st.st_size)
    except OSError as err:
        raise FingerprintError(f"cannot fingerprint {path}: {err.strerror or err}") from None
    return "touched" if digest == recorded.sample_sha256 else "changed"
