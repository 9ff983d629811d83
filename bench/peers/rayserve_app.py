"""Ray Serve as its docs write a batched HTTP deployment: a ``@serve.deployment`` class whose
``__call__`` takes the Starlette request and awaits a ``@serve.batch`` method (max_batch_size 8,
batch_wait_timeout_s 10 ms, as performance-anchors.md measured). ``max_ongoing_requests`` is
raised from its default of 5 to 32: the batching guide asks for at least the batch size, and
below it Ray Serve collapsed at concurrency 32 (performance-anchors.md). One replica; access logs
off, as the other peers run without them.

``python rayserve_app.py`` starts a local Ray (no dashboard: nothing here reads it, and it takes
memory and CPU from the model on 2 cores), serves on ``$PORT`` and shuts Ray down on SIGTERM.
``GET`` on any path answers ``{"ok": true}`` once the deployment is up (the suite's readiness)."""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any

import common
import ray
from ray import serve
from starlette.requests import Request


@serve.deployment(max_ongoing_requests=32, logging_config={"enable_access_log": False})
class Model:
    def __init__(self) -> None:
        self.session = common.session()

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def classify(self, images: list[bytes]) -> list[dict[str, Any]]:
        return [{"predictions": row} for row in common.classify(self.session, images)]

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def add(self, rows: list[list[float]]) -> list[dict[str, Any]]:
        return [{"y": y} for y in common.add(self.session, rows)]

    async def __call__(self, request: Request) -> dict[str, Any]:
        if request.method == "GET":
            return {"ok": True}
        if common.MODE == "image":
            form = await request.form()
            return await self.classify(await form["img"].read())  # type: ignore[union-attr]
        return await self.add((await request.json())["x"])


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report from a benchmark
    ray.init(include_dashboard=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": common.PORT})
        serve.run(Model.bind(), route_prefix="/")
        while True:
            time.sleep(3600)
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
