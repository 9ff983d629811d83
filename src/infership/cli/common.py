"""What every subcommand shares: running a coroutine, logging set-up, failing cleanly."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any, NoReturn

import click


def run(coro: Any) -> None:
    """Run ``coro`` to completion on uvloop when it is installed."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is part of uvicorn[standard]
        asyncio.run(coro)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(coro)


def configure_logging(level: str, log_format: str = "text") -> None:
    """Log to stderr at ``level``, as text lines or (``json``) one JSON object per line."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        from infership.observability.logs import JsonFormatter

        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler])


def fail(message: str, code: int) -> NoReturn:
    """Print ``error: message`` on stderr and exit: 2 for bad configuration, 1 otherwise."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)
