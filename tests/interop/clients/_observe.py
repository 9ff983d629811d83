"""Helpers every interop client uses; plain Python, no client library imported here.

Each client prints one JSON object of what it observed; the pytest side decides pass or fail.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any


def arguments() -> SimpleNamespace:
    """What to talk to, from ``INTEROP_*`` environment variables. Not argv: importing kserve
    parses ``sys.argv`` for its own server's options and exits on ones it does not know."""
    names = ("rest", "grpc", "image", "model", "half")
    return SimpleNamespace(**{name: os.environ[f"INTEROP_{name.upper()}"] for name in names})


def error_of(call: Callable[[], Any], status: Callable[[BaseException], str]) -> str:
    """The status an erroring call ends with, as the client library reports it."""
    try:
        call()
    except Exception as exc:
        return status(exc)
    return "no error"


def report(observed: dict[str, Any]) -> None:
    json.dump(observed, sys.stdout, default=_plain)
    sys.stdout.write("\n")


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot report {type(value).__name__}")
