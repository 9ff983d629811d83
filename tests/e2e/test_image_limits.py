"""Image decoding on a real server (issue 16, F2 and F5): 16-bit grey is classified, not white;
a thin image is refused before decoding; and the costliest images the limits admit, four at a
time, keep the server's memory and an ordinary request's latency bounded.

The worst admitted images were measured per format and mode (BENCHMARKS.md, "Image decode
limits"): a textured RGB PNG just under ``max_image_decode_bytes`` decodes slowest (about
0.3 s), an uncompressed RGB BMP of the same size needs the most memory (the body and the
decoded pixels, about 70 MB each).
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from conftest import RunningServer, start_server, stop_server

pytestmark = pytest.mark.e2e

CHELSEA = Path(__file__).parents[1] / "testdata/images/chelsea.jpg"
RSS_ALLOWANCE_MB = 300
ORDINARY_LATENCY_S = 1.0


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    running = start_server()  # the default limits
    yield running
    stop_server(running)


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def textured(side: int) -> Image.Image:
    """A gradient with per-pixel noise: realistic for compression, slow to inflate."""
    rng = np.random.default_rng(16)
    ramp = np.linspace(0, 240, side, dtype=np.float32)
    pixels = np.stack(np.broadcast_arrays(ramp[:, None], ramp[None, :], 120), axis=-1)
    pixels = pixels.astype(np.uint8) ^ rng.integers(0, 16, (side, side, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def predict(server: RunningServer, name: str, data: bytes, timeout: float = 60) -> httpx.Response:
    return httpx.post(
        f"{server.url}/predict", files={"img": (name, data, "image/*")}, timeout=timeout
    )


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def test_16_bit_grey_png_is_classified_like_the_photo(server: RunningServer) -> None:
    grey = np.asarray(Image.open(CHELSEA).convert("L"), dtype=np.uint16) * 257
    response = predict(server, "chelsea-16.png", encode(Image.fromarray(grey), "PNG"))
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["top_k"][0]["label"] == "Egyptian cat"


def test_one_by_forty_million_png_is_refused_with_413_at_once(server: RunningServer) -> None:
    thin = encode(Image.new("L", (1, 39_999_999)), "PNG")  # 155 KB; cost 1.5 GB and 5 s
    start = time.perf_counter()
    response = predict(server, "thin.png", thin)
    assert time.perf_counter() - start < 1.0
    assert response.status_code == 413
    assert response.headers["content-type"].startswith("application/json")
    assert "image 0 is 1x39999999: its longer side is over the limit" in response.json()["error"]


WORST: dict[str, Callable[[], bytes]] = {
    # Just under the 40 MiB decode budget (4 bytes per pixel): 3100 x 3100 = 9.6 Mpx.
    "png-rgb-slowest": lambda: encode(textured(3100), "PNG", compress_level=1),
    "bmp-rgb-largest": lambda: encode(textured(3100), "BMP"),
}


@pytest.mark.parametrize("worst", WORST)
def test_worst_admitted_images_four_at_a_time_bound_memory_and_latency(
    server: RunningServer, worst: str
) -> None:
    pid = server.process.pid
    chelsea = CHELSEA.read_bytes()
    heavy = WORST[worst]()
    assert predict(server, worst, heavy).status_code == 200  # admitted, and warms the path
    for _ in range(3):
        assert predict(server, "chelsea.jpg", chelsea).status_code == 200
    time.sleep(0.5)
    idle_kib = status_kib(pid, "VmRSS")
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset VmHWM to the current RSS

    # Sample RSS as well, in case the kernel does not reset VmHWM.
    peak_kib, done = idle_kib, threading.Event()

    def sample() -> None:
        nonlocal peak_kib
        while not done.is_set():
            peak_kib = max(peak_kib, status_kib(pid, "VmRSS"))
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        with ThreadPoolExecutor(4) as pool:
            loads = [pool.submit(predict, server, worst, heavy) for _ in range(4)]
            time.sleep(0.2)  # the four bodies are in and queued for decoding
            start = time.perf_counter()
            ordinary = predict(server, "chelsea.jpg", chelsea, timeout=30)
            latency = time.perf_counter() - start
            statuses = [load.result().status_code for load in loads]
    finally:
        done.set()
        sampler.join()
    peak_kib = max(peak_kib, status_kib(pid, "VmHWM"))
    growth_mb = (peak_kib - idle_kib) / 1024
    print(
        f"{worst}: {len(heavy) / 1e6:.1f} MB file; idle RSS {idle_kib / 1024:.0f} MB, "
        f"peak {peak_kib / 1024:.0f} MB (+{growth_mb:.0f}); ordinary request {latency:.2f} s"
    )
    assert statuses == [200] * 4
    assert ordinary.status_code == 200
    assert ordinary.json()["predictions"][0]["top_k"][0]["label"] == "Egyptian cat"
    assert growth_mb < RSS_ALLOWANCE_MB
    assert latency < ORDINARY_LATENCY_S
