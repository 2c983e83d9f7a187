"""One writer per feature store at a time.

An extraction (serial, or the client of a dask run) holds an exclusive lock on
``<store>.lock``, a small file beside the store, for as long as it writes. A second
``vqa-pipe extract`` on the same store stops at once with a message naming the process that
holds it, instead of redoing the same work and racing it on the same shards. The lock is an
``fcntl.flock``: the operating system releases it when the holder exits, however it exits
(kill -9 included), so a crashed run never leaves a stale lock behind. On filesystems where
``flock`` is not shared between machines (some NFS set-ups), run one extraction per store.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vqa_pipe.pipeline.errors import VqaPipeError


class StoreBusyError(VqaPipeError):
    """Another process is writing this store."""


def lock_path(store_path: str | Path) -> Path:
    store_path = Path(store_path)
    return store_path.with_name(store_path.name + ".lock")


@contextmanager
def writer_lock(store_path: str | Path) -> Iterator[None]:
    """Hold the store's writer lock, or raise :class:`StoreBusyError` naming its holder."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock (documented)
        yield
        return
    path = lock_path(store_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            raise StoreBusyError(
                f"{store_path} is being written by another vqa-pipe process ({holder}); "
                "wait for it to finish, or write another store with --store"
            ) from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info["since"])))
        return f"pid {info['pid']} on {info['host']}, since {since}"
    except (ValueError, KeyError, TypeError, OSError):
        return "holder unknown"
