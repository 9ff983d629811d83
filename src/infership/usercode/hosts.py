"""Where a model's Python runs: in the server's threads, or in worker processes.

Both hosts answer the same blocking ``call(method, arrays)``, made from the server's worker
threads (the scheduler's compute threads, the pre-processing pool), never from the event loop.
They turn what the code raised into the server's errors: ``InputError`` into InvalidRequest
(400), anything else into InferenceFailed (500), its traceback logged here and sent nowhere.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from infership.errors import InvalidRequest, ModelCodeFailed, ModelLoadError
from infership.repository.manifest import PythonCode
from infership.types import Array, TensorSpec
from infership.usercode.contract import CodeFailed, UserCode
from infership.usercode.transport import Arena, Channel, Slot, pack, unpack

log = logging.getLogger(__name__)

LOAD_TIMEOUT_S = 300.0
"""Longest a worker may take to import the module and build the class (weights included)."""
STOP_TIMEOUT_S = 10.0


class CodeHost(ABC):
    """A loaded class: which methods it has, what it declares, and calls into it."""

    methods: frozenset[str]
    signatures: Mapping[str, tuple[TensorSpec, ...] | None]
    concurrency: int
    """Calls that can run at once (worker processes, or 1 for the server's own threads,
    which may still overlap when the code releases the GIL)."""

    def __init__(self, label: str) -> None:
        self.label = label

    @abstractmethod
    def call(self, method: str, arrays: dict[str, Array]) -> dict[str, Array]:
        """``method``'s result (not checked against a signature). Blocking."""

    @abstractmethod
    def close(self) -> None:
        """Unload the class (``unload``) and release its threads or processes."""

    def _failed(self, failed: CodeFailed) -> Exception:
        if failed.client:
            return InvalidRequest(failed.message)
        log.error("%s: %s\n%s", self.label, failed.message, failed.trace.rstrip())
        # The exception's text and traceback stay in the log: they may hold anything.
        return ModelCodeFailed(f"{self.label}: {failed.summary}")


class ThreadHost(CodeHost):
    """One instance in the server process: no copy and no IPC per call. Its methods run on the
    server's threads, so code that holds the GIL shares one core with the server."""

    concurrency = 1

    def __init__(self, label: str, folder: Path, code: PythonCode, source: bytes | None) -> None:
        super().__init__(label)
        try:
            self._code = UserCode(folder, code.module, code.class_name, code.options, source=source)
        except CodeFailed as failed:
            log.error("%s: %s\n%s", label, failed.message, failed.trace.rstrip())
            raise ModelLoadError(f"{label}: {failed.message}") from None
        self.methods = self._code.methods
        self.signatures = self._code.signatures

    def call(self, method: str, arrays: dict[str, Array]) -> dict[str, Array]:
        try:
            return self._code.call(method, arrays)
        except CodeFailed as failed:
            raise self._failed(failed) from None

    def close(self) -> None:
        try:
            self._code.close()
        except CodeFailed as failed:
            log.warning("%s: %s\n%s", self.label, failed.message, failed.trace.rstrip())


class ProcessHost(CodeHost):
    """``workers`` processes, each with its own instance; a call goes to whichever is free.
    Code that holds the GIL then uses as many cores as there are workers. A worker that dies
    fails the call it was computing (500) and is replaced.

    Batches (``predict``, ``postprocess``) go before per-request ``preprocess`` calls when both
    wait for a worker: a batch answers many requests, and its requests were admitted first."""

    BATCH_METHODS = frozenset(("predict", "postprocess"))

    def __init__(
        self, label: str, folder: Path, code: PythonCode, source: bytes | None, workers: int
    ) -> None:
        super().__init__(label)
        self._start_args = (str(folder), code.module, code.class_name, dict(code.options), source)
        self.concurrency = workers
        self._free: list[_Worker] = []
        self._all: list[_Worker] = []
        self._turns = threading.Condition()
        self._batches_waiting = 0
        self._closed = False
        try:
            first = [self._spawn() for _ in range(workers)]
            for each in first:  # started together, awaited in turn: they load in parallel
                ready = each.wait_ready()
                self._free.append(each)
        except BaseException:
            self.close()
            raise
        self.methods, self.signatures = ready

    def call(self, method: str, arrays: dict[str, Array]) -> dict[str, Array]:
        with self._worker(method in self.BATCH_METHODS) as each:
            try:
                return each.call(method, arrays)
            except CodeFailed as failed:
                raise self._failed(failed) from None

    @contextmanager
    def _worker(self, batch: bool) -> Iterator[_Worker]:
        with self._turns:
            self._batches_waiting += batch
            try:
                while not self._free or (not batch and self._batches_waiting):
                    if not self._all or self._closed:
                        raise ModelCodeFailed(f"{self.label}: no worker process is running")
                    self._turns.wait()
                each = self._free.pop()
            finally:
                self._batches_waiting -= batch
        try:
            yield each
        finally:
            back = each if each.alive else self._replace(each)
            with self._turns:
                if back is not None:
                    self._free.append(back)
                self._turns.notify_all()

    def _replace(self, dead: _Worker) -> _Worker | None:
        dead.stop()
        with self._turns:
            if self._closed:
                return None
            self._all.remove(dead)
        log.warning("%s: a worker process exited (%s); starting another", self.label, dead.exit)
        fresh = self._spawn()
        try:
            fresh.wait_ready()
        except ModelLoadError as exc:
            log.error("%s: could not replace the worker: %s", self.label, exc)
            with self._turns:
                if fresh in self._all:  # unless close() took them all meanwhile
                    self._all.remove(fresh)
            return None
        return fresh

    def _spawn(self) -> _Worker:
        each = _Worker(self.label, self._start_args)
        with self._turns:
            self._all.append(each)
        return each

    def close(self) -> None:
        with self._turns:
            self._closed = True
            workers, self._all = self._all, []
            self._turns.notify_all()
        for each in workers:
            each.stop()


class _Worker:
    """One worker process and the server's end of its pipe.

    Started as ``python -m infership.usercode.worker FD`` rather than by multiprocessing's
    ``spawn``, which re-runs the server's ``__main__`` in the child (a script, a notebook,
    stdin): the worker imports numpy and this package, nothing else of the server's."""

    def __init__(self, label: str, args: tuple[Any, ...]) -> None:
        self.label = label
        ours, theirs = socket.socketpair()
        with theirs:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "infership.usercode.worker", str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
            )
        self._conn = Channel(ours)
        self._conn.send(args)
        self._arena: Arena | None = None  # ours: the inputs of each call
        self._results: Arena | None = None  # the worker's
        self.alive = True

    @property
    def exit(self) -> str:
        code = self._process.poll()
        return "still running" if code is None else f"exit code {code}"

    def wait_ready(self) -> tuple[frozenset[str], dict[str, tuple[TensorSpec, ...] | None]]:
        try:
            message, _ = self._conn.recv(timeout=LOAD_TIMEOUT_S)
        except TimeoutError:
            self.stop()
            raise ModelLoadError(
                f"{self.label}: the worker did not load in {LOAD_TIMEOUT_S:g} s"
            ) from None
        except (EOFError, OSError):
            self.alive = False
            self._wait(STOP_TIMEOUT_S)
            raise ModelLoadError(
                f"{self.label}: the worker process exited while loading ({self.exit})"
            ) from None
        if message[0] == "failed":
            _, text, trace = message
            log.error("%s: %s\n%s", self.label, text, trace.rstrip())
            self.stop()
            raise ModelLoadError(f"{self.label}: {text}")
        _, methods, declared = message
        signatures = {
            name: None if specs is None else tuple(TensorSpec(*spec) for spec in specs)
            for name, specs in declared.items()
        }
        return frozenset(methods), signatures

    def call(self, method: str, arrays: dict[str, Array]) -> dict[str, Array]:
        slots, grown = pack(arrays, self._arena)
        try:
            if grown is None:
                self._conn.send(("call", method, slots, None))
            else:  # a larger arena: its descriptor rides on the call
                self._conn.send(("call", method, slots, grown.size), grown.fd)
                if self._arena is not None:
                    self._arena.close()
                self._arena = grown
            reply, fd = self._conn.recv()
            if reply[0] == "error":
                _, text, trace, client, summary = reply
                raise CodeFailed(text, trace, client=client, summary=summary)
            _, results, new_size = reply
            results_slots: list[Slot] = results
            if new_size is not None and fd is not None:
                if self._results is not None:
                    self._results.close()
                self._results = Arena(new_size, fd)
            return unpack(results_slots, self._results, copy=True)
        except (EOFError, OSError) as exc:
            self.alive = False
            self._wait(1)
            raise CodeFailed(
                f"its worker process died while computing {method} ({self.exit})", repr(exc)
            ) from None

    def stop(self) -> None:
        if self.alive and self._process.poll() is None:
            try:
                self._conn.send(("stop",))
                (_, text, trace), _ = self._conn.recv(timeout=STOP_TIMEOUT_S)
                if text is not None:
                    log.warning("%s: %s\n%s", self.label, text, trace.rstrip())
            except (EOFError, OSError, TimeoutError):
                pass
        self.alive = False
        if not self._wait(STOP_TIMEOUT_S):
            self._process.kill()
            self._process.wait()
        self._conn.close()
        for arena in (self._arena, self._results):
            if arena is not None:
                arena.close()
        self._arena = self._results = None

    def _wait(self, seconds: float) -> bool:
        try:
            self._process.wait(seconds)
        except subprocess.TimeoutExpired:
            return False
        return True


def load_code(label: str, folder: Path, code: PythonCode, source: bytes | None) -> CodeHost:
    """The model's class, loaded as ``code.execution`` says (``code`` is model.yaml's
    ``python`` section). Raises ModelLoadError naming the model when it cannot be loaded."""
    if code.execution == "thread":
        return ThreadHost(label, folder, code, source)
    return ProcessHost(label, folder, code, source, code.workers or os.cpu_count() or 1)
