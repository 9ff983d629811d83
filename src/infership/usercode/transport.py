"""Named numpy arrays between the server and a worker process, through shared memory.

Each side owns one :class:`Arena` it writes into (the server: the inputs of a call; the worker:
its results), an anonymous ``memfd`` both processes map. A call's message on the pipe carries
only names, dtypes, shapes and offsets: tensor bytes are copied once into the arena and read in
place on the other side, never pickled. BYTES tensors (Python objects) travel in the message.
An arena too small for a call is replaced by one twice the size, whose descriptor follows the
message (``send_handle``): no file in /dev/shm, nothing to clean up after a crash, and no size
limit but memory (a container's /dev/shm is often 64 MB).
"""

from __future__ import annotations

import mmap
import os
from typing import Final, NamedTuple

import numpy as np

from infership.types import Array

_ALIGN: Final = 64
_FIRST_SIZE: Final = 1 << 20


class Slot(NamedTuple):
    """Where one array lies: a fixed-size dtype in the arena, or (``dtype`` "O") its
    elements, as bytes, in ``items``."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int
    items: list[bytes] | None


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
    slots = []
    offset = 0
    for name, array in arrays.items():
        if array.dtype.kind == "O":
            slots.append(Slot(name, "O", array.shape, 0, _items(name, array)))
            continue
        size = sizes[name]
        target = np.ndarray(array.shape, array.dtype, buffer=arena.map, offset=offset)
        target[...] = array
        slots.append(Slot(name, array.dtype.str, array.shape, offset, None))
        offset += _aligned(size)
    return slots, new


def unpack(slots: list[Slot], arena: Arena | None, *, copy: bool) -> dict[str, Array]:
    """The arrays of ``slots``: read-only views into ``arena`` (valid until its owner writes
    the next call), or copies of their own."""
    arrays: dict[str, Array] = {}
    for slot in slots:
        if slot.items is not None:
            flat = np.empty(len(slot.items), dtype=object)
            flat[:] = slot.items
            arrays[slot.name] = flat.reshape(slot.shape)
            continue
        assert arena is not None
        view: Array = np.ndarray(slot.shape, np.dtype(slot.dtype), arena.map, slot.offset)
        if copy:
            arrays[slot.name] = view.copy()
        else:
            view.flags.writeable = False
            arrays[slot.name] = view
    return arrays


def _items(name: str, array: Array) -> list[bytes]:
    items: list[bytes] = []
    for item in array.reshape(-1).tolist():
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
