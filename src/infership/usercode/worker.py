"""The worker process of ``execution: process``: one instance of the model's class, serving
the calls its server sends over a pipe, tensors in shared memory (``transport``).

Started as ``python -m infership.usercode.worker FD`` (a fresh interpreter: forking a server
with threads is unsafe), FD its end of a socket pair. It imports only numpy and this package,
ignores SIGINT and SIGTERM (the server stops it once the admitted requests are done) and ends
when its server does (the pipe's end of file).
"""

from __future__ import annotations

import signal
import socket
import sys
from pathlib import Path
from typing import Any

from infership.usercode.contract import CodeFailed, UserCode
from infership.usercode.transport import Arena, Channel, pack, unpack


def main(
    conn: Channel,
    folder: str,
    module: str,
    class_name: str,
    options: dict[str, Any],
    source: bytes | None,
) -> None:
    """Load the class, say ``ready`` (or ``failed``), then answer calls until ``stop``."""
    _detach_from_signals()
    try:
        code = UserCode(Path(folder), module, class_name, options, source=source)
    except CodeFailed as failed:
        conn.send(("failed", failed.message, failed.trace))
        return
    signatures = {
        name: None if specs is None else [(s.name, s.datatype, s.shape) for s in specs]
        for name, specs in code.signatures.items()
    }
    conn.send(("ready", sorted(code.methods), signatures))
    inbox: Arena | None = None  # the server's arena: the inputs of each call
    outbox: Arena | None = None  # ours: the results
    while True:
        try:
            message, fd = conn.recv()
        except (EOFError, OSError):  # the server is gone
            return
        if message[0] == "stop":
            try:
                code.close()
            except CodeFailed as failed:
                conn.send(("stopped", failed.message, failed.trace))
            else:
                conn.send(("stopped", None, None))
            return
        _, method, slots, new_inbox = message
        if new_inbox is not None and fd is not None:  # the call's arena is new: map it
            if inbox is not None:
                inbox.close()
            inbox = Arena(new_inbox, fd)
        try:
            result = code.call(method, unpack(slots, inbox, copy=False))
            out, grown = pack(result, outbox)
        except CodeFailed as failed:
            conn.send(("error", failed.message, failed.trace, failed.client, failed.summary))
            continue
        except TypeError as exc:  # an object array pack() cannot send
            conn.send(("error", f"{method} returned {exc}", "", False, None))
            continue
        if grown is None:
            conn.send(("ok", out, None))
            continue
        conn.send(("ok", out, grown.size), grown.fd)
        if outbox is not None:
            outbox.close()
        outbox = grown


def _detach_from_signals() -> None:
    # Ctrl-C reaches the whole process group; the server must be the one to stop its workers,
    # after it has answered what it admitted.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


if __name__ == "__main__":
    channel = Channel(socket.socket(fileno=int(sys.argv[1])))
    arguments, _ = channel.recv()
    main(channel, *arguments)
