"""A model's own Python class: imported from its version folder, instantiated once, called.

This runs wherever the instance lives: in the server process (``execution: thread``) or in a
worker process (``execution: process``). It knows nothing of requests, batching or transports:
named numpy arrays in, named numpy arrays out, and exceptions sorted into the client's mistakes
(``infership.python.InputError``) and everything else.
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import itertools
import re
import sys
import threading
import traceback
import types
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import Any, Final

import numpy as np

from infership.python import InputError
from infership.types import Array, TensorSpec

METHODS: Final = ("preprocess", "predict", "postprocess")
"""The methods a class may define, besides ``__init__`` and ``unload``."""

SIGNATURES: Final = ("inputs", "outputs", "preprocess_inputs", "postprocess_outputs")
"""Class attributes that may declare tensors (lists of ``infership.python.Tensor``)."""

_PACKAGE: Final = "infership_user_code"
_serial = itertools.count(1)


class CodeFailed(Exception):
    """The user's code raised (or could not be loaded); ``trace`` is its traceback, for the
    server's log only. ``client`` is True for ``InputError``: the request was at fault."""

    def __init__(
        self, message: str, trace: str = "", *, client: bool = False, summary: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.trace = trace
        self.client = client
        self.summary = summary or message
        """What the client may be told: the message without the exception's own text."""


class UserCode:
    """The class named in ``python.class`` of ``python.module``, instantiated with the version
    folder and ``python.options``. Raises CodeFailed when the module or the class fails."""

    def __init__(
        self,
        folder: Path,
        module: str,
        class_name: str,
        options: Mapping[str, Any],
        *,
        source: bytes | None = None,
    ) -> None:
        self._package = f"{_PACKAGE}.m{next(_serial)}"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        try:
            namespace = _import(self._package, folder, module, source)
            cls = getattr(namespace, class_name, None)
            if not isinstance(cls, type):
                raise CodeFailed(f"{folder / module} has no class {class_name!r}")
            self.methods = frozenset(m for m in METHODS if callable(getattr(cls, m, None)))
            self.signatures = {name: _declared(cls, name) for name in SIGNATURES}
            self.instance = cls(folder, dict(options))
        except CodeFailed:
            self._forget_modules()
            raise
        except BaseException as exc:  # user code: anything, SystemExit included
            self._forget_modules()
            raise CodeFailed(
                f"{folder / module}: loading {class_name} raised {_describe(exc)}",
                traceback.format_exc(),
            ) from None
        if any(inspect.iscoroutinefunction(getattr(cls, m, None)) for m in (*METHODS, "unload")):
            self._start_loop()

    def call(self, method: str, arrays: dict[str, Array]) -> dict[str, Array]:
        """Run ``method`` on ``arrays``; its result as a dict of arrays (not yet checked
        against a signature: the caller knows which one applies)."""
        try:
            result = self._run(getattr(self.instance, method), arrays)
        except BaseException as exc:
            if isinstance(exc, InputError):
                raise CodeFailed(str(exc) or "the input is invalid", client=True) from None
            raise CodeFailed(
                f"{method} raised {_describe(exc)}",
                traceback.format_exc(),
                summary=f"{method} raised {type(exc).__name__}",
            ) from None
        if not isinstance(result, Mapping):
            raise CodeFailed(
                f"{method} returned {type(result).__name__}, not a dict of numpy arrays"
            )
        out: dict[str, Array] = {}
        for name, value in result.items():
            if not isinstance(name, str) or not isinstance(value, np.ndarray):
                raise CodeFailed(
                    f"{method} returned {type(value).__name__} for {name!r}, not a numpy array"
                )
            out[name] = value
        return out

    def close(self) -> None:
        """Call ``unload`` if the class has one, and forget the modules it was imported from.
        A failing unload is reported (CodeFailed) after everything is released."""
        failure = None
        unload = getattr(self.instance, "unload", None)
        if callable(unload):
            try:
                self._run(unload)
            except BaseException as exc:
                failure = CodeFailed(f"unload raised {_describe(exc)}", traceback.format_exc())
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            assert self._loop_thread is not None
            self._loop_thread.join(timeout=5)
            if not self._loop.is_running():
                self._loop.close()
        self._forget_modules()
        if failure is not None:
            raise failure

    def _run(self, function: Any, *args: Any) -> Any:
        result = function(*args)
        if inspect.iscoroutine(result):
            # Async methods run on the code's own event loop, never on the server's.
            assert self._loop is not None
            return asyncio.run_coroutine_threadsafe(_awaited(result), self._loop).result()
        return result

    def _start_loop(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._loop_thread = threading.Thread(
            target=loop.run_forever, name=f"{self._package}-loop", daemon=True
        )
        self._loop_thread.start()

    def _forget_modules(self) -> None:
        # A new version (hot swap) imports its own copy, never the previous one's modules.
        for name in [
            n for n in sys.modules if n == self._package or n.startswith(self._package + ".")
        ]:
            del sys.modules[name]


async def _awaited(coroutine: Coroutine[Any, Any, Any]) -> Any:
    return await coroutine


def _import(package: str, folder: Path, module: str, source: bytes | None) -> types.ModuleType:
    """Import ``folder/module`` as a submodule of a package whose path is ``folder``, so that
    ``from . import helpers`` finds its siblings and nothing else on ``sys.path`` is touched.
    ``source`` is the module's verified bytes (digest, signature, decryption), used as given."""
    if _PACKAGE not in sys.modules:
        root = types.ModuleType(_PACKAGE)
        root.__path__ = []
        sys.modules[_PACKAGE] = root
    parent = types.ModuleType(package)
    parent.__path__ = [str(folder)]
    parent.__package__ = package
    sys.modules[package] = parent
    path = folder / module
    name = f"{package}.{_identifier(Path(module).stem)}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise CodeFailed(f"{path}: not a Python module")
    namespace = importlib.util.module_from_spec(spec)
    sys.modules[name] = namespace
    code = compile(source if source is not None else path.read_bytes(), str(path), "exec")
    exec(code, namespace.__dict__)
    return namespace


def _identifier(stem: str) -> str:
    return re.sub(r"\W", "_", stem) or "model"


def _declared(cls: type, name: str) -> tuple[TensorSpec, ...] | None:
    value = getattr(cls, name, None)
    if value is None:
        return None
    if isinstance(value, TensorSpec):
        value = [value]
    try:
        specs = tuple(value)
    except TypeError:
        specs = ()
    if not specs or not all(isinstance(s, TensorSpec) for s in specs):
        raise CodeFailed(
            f"{cls.__name__}.{name} must be a list of infership.python.Tensor, got {value!r:.200}"
        )
    return specs


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text[:500]}" if text else type(exc).__name__
