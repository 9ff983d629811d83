"""Time decoding one [1, 3, 224, 224] FP32 tensor sent as OIP JSON (1.6 MB), in-process.

Prints the median of 60 decodes in milliseconds. Run it alternately against two checkouts
(``PYTHONPATH=<checkout>/src python bench/json_decode.py``) to compare JSON parsers; the result
for orjson against the pysimdjson it replaced is in BENCHMARKS.md.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import orjson

from infership.protocols.rest.codec import decode_infer_request


def main() -> None:
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    tensor = {"name": "input", "datatype": "FP32", "shape": [1, 3, 224, 224], "data": x.ravel()}
    body = orjson.dumps({"inputs": [tensor]}, option=orjson.OPT_SERIALIZE_NUMPY)
    times = []
    for _ in range(60):
        started = time.perf_counter()
        request = decode_infer_request(body, header_length=None, max_body_bytes=1 << 26)
        times.append(time.perf_counter() - started)
    assert request.inputs["input"].tobytes() == x.tobytes()
    print(f"{statistics.median(times) * 1000:.2f}")


if __name__ == "__main__":
    main()
