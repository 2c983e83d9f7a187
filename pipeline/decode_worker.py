"""The background decoder behind :func:`vqa_pipe.pipeline.decode.decode_in_background`.

One worker process (``spawn``) decodes the videos in order and sends messages
through a bounded queue: ``("ready",)`` once, then per video ``("info", seq,
VideoInfo, backend, reason)``, ``("frame", seq, Frame)``, ``("backend", seq, name,
reason)`` on a fallback, and ``("end", seq)`` or ``("error", seq, DecodeError)``;
``("retired", seq)`` when it leaves after ``restart_every`` videos.

The parent waits with a deadline: when nothing arrives for ``timeout_s`` the
worker is killed (a decoder that holds the GIL cannot be stopped any other way), a
fresh one takes the remaining videos, and the video it was on fails with
:class:`DecodeTimeout`.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from vqa_pipe.pipeline.decode import (
    DecodeError,
    DecodeTimeout,
    Frame,
    FramePlan,
    VideoFrames,
    check_backend,
    iter_frames,
    probe,
)

LOOKAHEAD = 2  # videos handed to the worker ahead of the one being consumed
STARTUP_GRACE_S = 60.0  # extra patience for a fresh worker's imports
POLL_S = 0.25  # how often the parent checks that the worker is still alive
STOP_GRACE_S = 2.0  # how long a stopping worker may take before it is killed


@dataclass(frozen=True)
class _Task:
    seq: int
    key: str
    path: str


class _Shared:
    """Counters shared with one worker (raw shared memory, no locks needed)."""

    def __init__(self, ctx: Any) -> None:
        self.current = ctx.Value("q", -1, lock=False)  # seq the worker is on
        self.cancel = ctx.Value("q", -1, lock=False)  # seqs <= this are abandoned
        self.stop = ctx.Value("b", 0, lock=False)
        self.produced = ctx.Value("q", 0, lock=False)  # frames put into the queue


# ---------------------------------------------------------------- worker process


def _worker_main(tasks, results, shared: _Shared, plan, backend: str,
                 restart_every: int | None, parent_pid: int, threads: int = 0) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business
    from vqa_pipe.pipeline import decode_backends

    decode_backends.DECODE_THREADS = int(threads)

    def parent_gone() -> bool:
        return shared.stop.value != 0 or os.getppid() != parent_pid

    def send(message: tuple, seq: int | None = None) -> bool:
        """Put ``message``, waiting for room; False when abandoned or stopping."""
        while True:
            if parent_gone() or (seq is not None and shared.cancel.value >= seq):
                return False
            try:
                results.put(message, timeout=POLL_S)
                return True
            except queue.Full:
                continue

    send(("ready",))
    handled = 0
    while not parent_gone():
        try:
            task = tasks.get(timeout=POLL_S)
        except queue.Empty:
            continue
        if task is None:
            break
        shared.current.value = task.seq
        _decode_one(task, plan, backend, shared, send)
        handled += 1
        if restart_every and handled >= restart_every:
            send(("retired", task.seq))
            break
    if parent_gone():
        results.cancel_join_thread()  # nobody will read what is left
    results.close()
    results.join_thread()


def _decode_one(task: _Task, plan, backend: str, shared: _Shared, send) -> None:
    seq = task.seq
    try:
        info = probe(task.path)
    except Exception as err:  # a DecodeError, or a bug: this video fails with the reason
        send(("error", seq, _as_decode_error(task, err)))
        return
    started: list[tuple[str, str | None]] = []
    frames: Iterator[Frame] = iter(())
    first, error = None, None
    try:  # the first frame settles the backend (decord may refuse) before "info" goes out
        frames = iter_frames(task.path, plan, backend=backend, info=info,
                             on_backend=lambda name, reason: started.append((name, reason)))
        first = next(frames, None)
    except Exception as err:
        error = _as_decode_error(task, err)
    name, reason = started[-1] if started else ("none", None)
    if not send(("info", seq, info, name, reason), seq):
        return
    if error is not None:
        send(("error", seq, error), seq)
        return
    announced = len(started)
    frame = first
    try:
        while frame is not None:
            for name, reason in started[announced:]:
                if not send(("backend", seq, name, reason), seq):
                    return
            announced = len(started)
            if not send(("frame", seq, frame), seq):
                return
            shared.produced.value += 1
            frame = next(frames, None)
    except Exception as err:
        send(("error", seq, _as_decode_error(task, err)), seq)
        return
    send(("end", seq), seq)


def _as_decode_error(task: _Task, err: Exception) -> DecodeError:
    if isinstance(err, DecodeError):
        return err
    # a bad plan (ValueError) or a bug: fail this video with the reason, keep going
    return DecodeError(task.path, f"{type(err).__name__}: {err}")


# ---------------------------------------------------------------- parent side


class _Worker:
    def __init__(self, ctx: Any, prefetch_frames: int, plan, backend: str,
                 restart_every: int | None, threads: int = 0) -> None:
        self.results = ctx.Queue(maxsize=prefetch_frames)
        self.tasks = ctx.Queue()
        self.shared = _Shared(ctx)
        self.received = 0
        self.ready = False
        self.process = ctx.Process(
            target=_worker_main,
            args=(self.tasks, self.results, self.shared, plan, backend, restart_every,
                  os.getpid(), threads),
            name="vqa-pipe-decoder",
            daemon=True,
        )
        self.process.start()

    def send(self, task: _Task) -> None:
        self.tasks.put(task)

    def stop(self, *, kill: bool = False) -> None:
        self.shared.stop.value = 1
        if not kill and self.process.is_alive():
            try:
                self.tasks.put(None)
            except (ValueError, OSError):
                pass
            self.process.join(STOP_GRACE_S)
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        for q in (self.tasks, self.results):
            q.cancel_join_thread()
            q.close()
        self.process.close()


class BackgroundDecoder(Iterator[VideoFrames]):
    """Iterator of :class:`VideoFrames` fed by a worker process; see ``decode_in_background``.

    Not thread-safe: iterate it (and the ``frames`` it yields) from one thread. The
    ``frames`` iterators refer to an internal core, not to this object, so dropping
    the last reference to it (a loop left by an exception) stops the worker at once.
    """

    def __init__(
        self,
        items: Iterable[tuple[str, str | os.PathLike]],
        plan: FramePlan | Sequence[int],
        *,
        timeout_s: float = 60.0,
        prefetch_frames: int = 32,
        backend: str = "auto",
        restart_every: int | None = 200,
        threads: int = 0,
    ) -> None:
        check_backend(backend)
        if not (isinstance(prefetch_frames, int) and prefetch_frames >= 1):
            raise ValueError(f"prefetch_frames must be an integer >= 1, got {prefetch_frames!r}")
        if not (timeout_s > 0):
            raise ValueError(f"timeout_s must be positive, got {timeout_s!r}")
        if restart_every is not None and restart_every < 1:
            raise ValueError(f"restart_every must be >= 1 or None, got {restart_every!r}")
        if not isinstance(plan, FramePlan):
            plan = list(plan)  # explicit indices: validated per video by iter_frames
        if mp.current_process().daemon:
            raise RuntimeError(
                "decode_in_background needs a worker process, and this process is daemonic "
                "(daemons may not have children); for dask set distributed.worker.daemon=False"
            )
        self._core = _Core(items, plan, float(timeout_s), prefetch_frames, backend, restart_every,
                           int(threads))
        self._gen = self._core.run()

    def __next__(self) -> VideoFrames:
        return next(self._gen)

    def __enter__(self) -> BackgroundDecoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop and join the worker; further iteration ends at once."""
        core = self._core
        if core.closed:
            return
        core.closed = True
        try:
            self._gen.close()
        except ValueError:
            # another thread is inside the generator: it sees ``closed`` within POLL_S and
            # stops, and its own ``finally`` shuts the worker down
            return
        core.shutdown()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    @property
    def timeout_s(self) -> float:
        return self._core.timeout_s

    @property
    def restarts(self) -> int:
        """How many times the worker process was replaced (hang, crash or ``restart_every``)."""
        return self._core.restarts

    @property
    def frames_in_flight(self) -> int:
        """Frames the worker has queued that this side has not taken yet."""
        w = self._core.worker
        return 0 if w is None else w.shared.produced.value - w.received

    @property
    def worker_pid(self) -> int | None:
        w = self._core.worker
        return None if w is None else w.process.pid


class _Core:
    """State and generators of a :class:`BackgroundDecoder`."""

    def __init__(self, items, plan, timeout_s: float, prefetch: int, backend: str,
                 restart_every: int | None, threads: int = 0) -> None:
        self.timeout_s = timeout_s
        self._threads = threads
        self._plan = plan
        self._backend = backend
        self._prefetch = prefetch
        self._restart_every = restart_every
        self._ctx = mp.get_context("spawn")
        self._items = iter(items)
        self.worker: _Worker | None = None
        self._sent: deque[_Task] = deque()  # handed out, not finished from our side
        self._finished: set[int] = set()
        self._active = -1
        self._next_seq = 0
        self.closed = False
        self.restarts = 0

    # -- internals ----------------------------------------------------------

    def shutdown(self) -> None:
        if self.worker is not None:
            self.worker.stop()
            self.worker = None

    def _start_worker(self, resend_from: int) -> None:
        if self.worker is not None:
            self.worker.stop(kill=True)
            self.restarts += 1
        self.worker = _Worker(self._ctx, self._prefetch, self._plan, self._backend,
                               self._restart_every, self._threads)
        for task in self._sent:
            if task.seq >= resend_from:
                self.worker.send(task)

    def _top_up(self) -> None:
        while len(self._sent) < LOOKAHEAD:
            try:
                item = next(self._items)
            except StopIteration:
                return
            task = self._make_task(item)
            self._sent.append(task)
            if self.worker is None:
                self._start_worker(task.seq)
            else:
                self.worker.send(task)

    def _make_task(self, item: Any) -> _Task:
        seq = self._next_seq
        self._next_seq += 1
        try:
            key, path = item
            path = os.fspath(path)
        except (TypeError, ValueError):
            raise ValueError(
                f"item #{seq} must be a (key, path) pair, got {item!r}"
            ) from None
        return _Task(seq, str(key), path)

    def run(self) -> Iterator[VideoFrames]:
        try:
            self._top_up()
            while self._sent:
                task = self._sent[0]
                self._active = task.seq
                message = self._receive(task)
                if message[0] == "info":
                    _, _, info, name, reason = message
                    video = VideoFrames(task.key, task.path, info, iter(()), name,
                                        fallback_reason=reason)
                    video.frames = self._frames(task, video)
                else:  # "error"
                    error = message[2]
                    self._finished.add(task.seq)
                    video = VideoFrames(task.key, task.path, None, _raising(error), "none",
                                        error=error)
                yield video
                if task.seq not in self._finished:
                    self._finished.add(task.seq)
                    if self.worker is not None:
                        self.worker.shared.cancel.value = task.seq
                self._sent.popleft()
                self._top_up()
        finally:
            self._active = -1
            self.shutdown()

    def _frames(self, task: _Task, video: VideoFrames) -> Iterator[Frame]:
        while True:
            if self.closed:
                raise RuntimeError(f"frames of {task.key!r} ({task.path}) are gone: "
                                   "the background decoder was closed")
            if self._active != task.seq or task.seq in self._finished:
                if task.seq in self._finished and self._active == task.seq:
                    return
                raise RuntimeError(
                    f"frames of {task.key!r} ({task.path}) are gone: the decoder has moved on "
                    "to the next video"
                )
            message = self._receive(task)
            kind = message[0]
            if kind == "frame":
                yield message[2]
            elif kind == "backend":
                video.backend, video.fallback_reason = message[2], message[3]
            elif kind == "end":
                self._finished.add(task.seq)
                return
            elif kind == "error":
                self._finished.add(task.seq)
                video.error = message[2]
                raise message[2]
            else:
                raise RuntimeError(f"decoder protocol error: unexpected {kind!r} for {task.path}")

    def _receive(self, task: _Task, *, blame_anyway: bool = False) -> tuple:
        """The next message about ``task``; restarts the worker on a hang or a crash."""
        while True:
            worker = self.worker
            assert worker is not None
            grace = 0.0 if worker.ready else STARTUP_GRACE_S
            deadline = time.monotonic() + self.timeout_s + grace
            message = None
            while message is None:
                if self.closed:  # closed from another thread: stop waiting, never restart
                    raise RuntimeError(f"decoding of {task.path} stopped: the background "
                                       "decoder was closed")
                try:
                    message = worker.results.get(timeout=POLL_S)
                except queue.Empty:
                    if not worker.process.is_alive():
                        try:  # what it flushed just before exiting
                            message = worker.results.get(timeout=POLL_S)
                            break
                        except queue.Empty:
                            return self._recover(task, worker, True, blame_anyway)
                    if time.monotonic() >= deadline:
                        return self._recover(task, worker, False, blame_anyway)
            kind = message[0]
            if kind == "ready":
                worker.ready = True
                continue
            if kind == "retired":
                self._start_worker(resend_from=message[1] + 1)
                continue
            if kind == "frame":
                worker.received += 1
            seq = message[1]
            if seq < task.seq:
                continue  # leftovers of a video the consumer moved past
            if seq > task.seq:
                raise RuntimeError(f"decoder protocol error: got news of #{seq} before #{task.seq}")
            return message

    def _recover(self, task: _Task, worker: _Worker, died: bool, blame_anyway: bool) -> tuple:
        """Replace a dead or stuck worker; the error message for ``task`` if it was the culprit."""
        code = worker.process.exitcode
        if not worker.ready:
            worker.stop(kill=True)
            self.worker = None
            what = f"exited with code {code}" if died else "did not start"
            raise RuntimeError(f"the decoder worker process {what}; cannot decode anything")
        if worker.shared.current.value < task.seq and not blame_anyway:
            # stuck on a video the consumer already left: not this one's fault; one retry
            self._start_worker(resend_from=task.seq)
            return self._receive(task, blame_anyway=True)
        self._start_worker(resend_from=task.seq + 1)
        if died:
            error: DecodeError = DecodeError(
                task.path, f"the decoder process died (exit code {code}) while decoding it"
            )
        else:
            error = DecodeTimeout(
                task.path,
                f"no progress for {self.timeout_s:g} s; the decoder process was killed",
            )
        return ("error", task.seq, error)


def _raising(error: BaseException) -> Iterator[Frame]:
    raise error
    yield  # pragma: no cover  (makes this a generator)
