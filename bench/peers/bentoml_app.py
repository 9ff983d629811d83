"""BentoML as its docs write a service: a ``@bentoml.service`` class with the model loaded in
``__init__`` and a ``batchable`` ``@bentoml.api``, so its adaptive batching dispatcher groups
requests (max_batch_size 8, max_latency_ms 1000 as in its adaptive-batching guide; the dispatcher
chooses the wait itself). One worker, its default; access logs off, as the other peers run
without them. The suite starts it with ``bentoml serve``
(``common.request``): ``Classifier`` for the image, ``Adder`` for the trivial model."""

from __future__ import annotations

from pathlib import Path

import bentoml
import common
import numpy as np


@bentoml.service(logging={"access": {"enabled": False}})
class Classifier:
    def __init__(self) -> None:
        self.session = common.session()

    @bentoml.api(batchable=True, max_batch_size=8, max_latency_ms=1000)
    def predict(self, img: list[Path]) -> list[dict[str, object]]:
        rows = common.classify(self.session, [path.read_bytes() for path in img])
        return [{"predictions": row} for row in rows]


@bentoml.service(logging={"access": {"enabled": False}})
class Adder:
    def __init__(self) -> None:
        self.session = common.session()

    @bentoml.api(batchable=True, max_batch_size=8, max_latency_ms=1000)
    def add(self, x: np.ndarray) -> np.ndarray:
        (y,) = self.session.run(["y"], {"x": x.astype(np.float32)})
        return y  # type: ignore[no-any-return]
