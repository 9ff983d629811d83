"""The processing seam: every step between the wire and the model, built in or the user's own.

A model is a runtime with steps around it::

    request inputs ─► Preprocessor … (per request) ─► scheduler (batches) ─► runtime
                  ◄─ response outputs ◄─ Postprocessor … (per batch) ◄──────┘

- A :class:`Preprocessor` takes some public inputs of one request (encoded images, texts, a
  user's raw fields) and makes model inputs from them. It runs in the pre-processing pool, off
  the event loop, before the request joins a batch. A client may also send the model inputs
  themselves; the step then does not run.
- A :class:`Postprocessor` reads model outputs of a whole batch and adds public outputs (top-k
  labels, boxes after NMS, ...). It runs on the compute thread right after the runtime, so its
  per-batch work is batched too.

The model (``model.py``) knows only this interface; a new pipeline is one module implementing it,
built by the loader from ``model.yaml``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Final

from infership.errors import InvalidRequest, PayloadTooLarge
from infership.types import Array, TensorSpec


class Preprocessor(ABC):
    """Per request: the public inputs ``takes`` → the model inputs ``feeds``."""

    takes: tuple[TensorSpec, ...]
    """Public inputs it reads; the request holds at least one of them when it runs."""
    feeds: tuple[str, ...]
    """Model inputs it makes (they leave the public signature unless also in ``takes``)."""

    def check(self, inputs: Mapping[str, Array], max_rows: int, owner: str) -> None:  # noqa: B027
        """Cheap checks, on the event loop, before any work is queued (counts, shapes): a
        request refused here costs nothing. ``max_rows`` is the model's batch limit, ``owner``
        names the model in messages ("model 'm'")."""

    @abstractmethod
    def __call__(self, inputs: dict[str, Array]) -> dict[str, Array]:
        """The model inputs made from ``inputs`` (those of ``takes`` the request holds).
        Blocking; raises InvalidRequest (400) for what the client got wrong."""


class Postprocessor(ABC):
    """Per batch: the model outputs ``reads`` → the public outputs ``gives``."""

    reads: tuple[str, ...]
    """Model outputs it needs."""
    gives: tuple[TensorSpec, ...]
    """Public outputs it adds, batch-major like the model's."""
    hides_model_outputs: bool = False
    """Whether the model's own outputs leave the public signature (a user's postprocess
    replaces them; a classifier keeps the raw scores available on request)."""

    @abstractmethod
    def __call__(self, outputs: dict[str, Array]) -> dict[str, Array]:
        """The outputs ``gives`` made from a batch's ``outputs``. Blocking, on the compute
        thread; raising fails the whole batch (500)."""


ITEMS: Final = {"images": "encoded images", "texts": "UTF-8 strings"}
"""What each kind of BYTES item is, as error messages say it."""


def encoded_items(
    name: str, array: Array, max_items: int, what: str, owner: str = "the model"
) -> list[bytes]:
    """The elements of a BYTES input of shape [n] or [n, 1] (``what``: images, texts), refused
    with a clear error when it is not one, is empty, or holds more than ``max_items``."""
    if array.dtype != object:
        raise InvalidRequest(f"input {name!r} must be BYTES ({ITEMS.get(what, what)})")
    if array.ndim not in (1, 2) or (array.ndim == 2 and array.shape[1] != 1):
        raise InvalidRequest(
            f"input {name!r} must have shape [n] or [n, 1], got {list(array.shape)}"
        )
    flat = array.reshape(-1)
    if len(flat) == 0:
        raise InvalidRequest(f"input {name!r} holds no {what}")
    if len(flat) > max_items:
        raise PayloadTooLarge(
            f"input {name!r} holds {len(flat)} {what}; {owner} takes at most {max_items} per "
            "request"
        )
    items: list[bytes] = flat.tolist()
    return items
