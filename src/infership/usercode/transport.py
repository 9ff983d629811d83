"""Named numpy arrays between the server and a worker process, through shared memory.

Each side owns one :class:`Arena` it writes into (the server: the inputs of a call; the worker:
its results), an anonymous ``memfd`` both processes map. A call's message on the pipe carries
only names, dtypes, shapes and offsets: tensor bytes are copied once into the arena and read in
place on the other side, never pickled. BYTES tensors (Python objects) travel in the message.
An arena too small for a call is replaced by one twice the size, whose descriptor rides on the
message (:class:`Channel`): no file in /dev/shm, nothing to clean up after a crash, and no size
limit but memory (a container's /dev/shm is often 64 MB).
"""

from __future__ import annotations

import array
import mmap
import os
import pickle
import socket
import struct
from typing import Any, Final

import numpy as np

from infership.types import Array

_ALIGN: Final = 64
_FIRST_SIZE: Final = 1 << 20


Slot = tuple[str, str, tuple[int, ...], int, list[bytes] | None]
"""Where one array lies: (name, dtype, shape, offset, items): a fixed-size dtype at ``offset``
in the arena, or (dtype "O") its elements, as bytes, in ``items``. A plain tuple: it is pickled
with every call, and a named tuple pickles at several times the cost."""

_LENGTH: Final = struct.Struct("<I")


class Channel:
    """Messages (pickled) over a Unix stream socket, strictly one answer per message, each with
    at most one file descriptor riding on it (SCM_RIGHTS): an arena's memfd arrives with the
    call or the result that first uses it. One ``sendmsg`` and usually one ``recvmsg`` per
    message: multiprocessing's Connection, with ``send_handle`` beside it, cost twice the
    system calls and about 35 µs more per round trip."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def send(self, message: object, fd: int | None = None) -> None:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        payload = _LENGTH.pack(len(data)) + data
        if fd is None:
            self.sock.sendall(payload)
            return
        rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))]
        sent = self.sock.sendmsg([payload], rights)
        if sent < len(payload):
            self.sock.sendall(payload[sent:])

    def recv(self, timeout: float | None = None) -> tuple[Any, int | None]:
        """The next message and the descriptor that came with it (None). EOFError when the
        peer is gone; TimeoutError when ``timeout`` passes first."""
        if timeout is not None:  # only then: each change of mode costs system calls
            self.sock.settimeout(timeout)
        try:
            data, fds = self._read(_LENGTH.size, [])
            (length,) = _LENGTH.unpack_from(data)
            data = data[_LENGTH.size :]
            if len(data) < length:
                more, fds = self._read(length - len(data), fds)
                data += more
        finally:
            if timeout is not None:
                self.sock.settimeout(None)
        return pickle.loads(data), (fds[0] if fds else None)

    def _read(self, at_least: int, fds: list[int]) -> tuple[bytes, list[int]]:
        chunks: list[bytes] = []
        size = 0
        while size < at_least:
            # The peer sends nothing after a message until it has our answer, so reading more
            # than one message's bytes can never happen.
            data, ancillary, _, _ = self.sock.recvmsg(
                max(at_least - size, 65536), socket.CMSG_SPACE(array.array("i").itemsize)
            )
            if not data:
                raise EOFError("the peer closed the channel")
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.extend(array.array("i", payload[: len(payload) - len(payload) % 4]))
            chunks.append(data)
            size += len(data)
        return b"".join(chunks), fds

    def close(self) -> None:
        self.sock.close()


class Arena:
    """A shared buffer of ``size`` bytes. ``fd`` given: map the peer's; else make a new one."""

    def __init__(self, size: int, fd: int | None = None) -> None:
        if fd is None:
            fd = os.memfd_create("infership-tensors", os.MFD_CLOEXEC)
            os.ftruncate(fd, size)
        self.fd = fd
        self.size = size
        self.map = mmap.mmap(fd, size)

    def close(self) -> None:
        self.map.close()
        os.close(self.fd)


def pack(arrays: dict[str, Array], arena: Arena | None) -> tuple[list[Slot], Arena | None]:
    """Write ``arrays`` into ``arena``; returns their slots, and a new, larger arena when the
    given one (or none) was too small: the caller sends its ``fd`` to the peer and closes the
    old one. Raises TypeError for an object array whose elements are not bytes or str."""
    sizes = {n: a.nbytes for n, a in arrays.items() if a.dtype.kind != "O"}
    needed = sum(_aligned(s) for s in sizes.values())
    new = None
    if arena is None or needed > arena.size:
        new = arena = Arena(max(_FIRST_SIZE, 2 * needed, arena.size * 2 if arena else 0))
    slots: list[Slot] = []
    offset = 0
    for name, tensor in arrays.items():
        if tensor.dtype.kind == "O":
            slots.append((name, "O", tensor.shape, 0, _items(name, tensor)))
            continue
        size = sizes[name]
        target = np.ndarray(tensor.shape, tensor.dtype, buffer=arena.map, offset=offset)
        target[...] = tensor
        slots.append((name, tensor.dtype.str, tensor.shape, offset, None))
        offset += _aligned(size)
    return slots, new


def unpack(slots: list[Slot], arena: Arena | None, *, copy: bool) -> dict[str, Array]:
    """The arrays of ``slots``: read-only views into ``arena`` (valid until its owner writes
    the next call), or copies of their own."""
    arrays: dict[str, Array] = {}
    for name, dtype, shape, offset, items in slots:
        if items is not None:
            flat = np.empty(len(items), dtype=object)
            flat[:] = items
            arrays[name] = flat.reshape(shape)
            continue
        assert arena is not None
        view: Array = np.ndarray(shape, np.dtype(dtype), arena.map, offset)
        if copy:
            arrays[name] = view.copy()
        else:
            view.flags.writeable = False
            arrays[name] = view
    return arrays


def _items(name: str, tensor: Array) -> list[bytes]:
    items: list[bytes] = []
    for item in tensor.reshape(-1).tolist():
        if isinstance(item, str):
            item = item.encode()
        elif not isinstance(item, bytes):
            raise TypeError(
                f"{name!r} holds a {type(item).__name__}; BYTES tensors hold bytes or str"
            )
        items.append(item)
    return items


def _aligned(size: int) -> int:
    return -(-size // _ALIGN) * _ALIGN
