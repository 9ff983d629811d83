"""GPU utilisation and memory as Prometheus gauges, read through NVML at each scrape.

NVML comes with the NVIDIA driver; ``nvidia-ml-py`` (the ``gpu`` extra) is its Python binding.
Without either, nothing is registered and the server runs as before. NVML counts every GPU the
driver sees, and ``CUDA_VISIBLE_DEVICES`` does not hide any of them from it, so the gauges
carry the GPU's index and UUID, which operators can match against the devices a pod was given.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)
_LABELS = ("gpu", "uuid", "name")


class GpuCollector(Collector):
    """Reads every GPU's utilisation and memory from ``nvml`` (the ``pynvml`` module, or any
    object with its functions) when Prometheus scrapes."""

    def __init__(self, nvml: Any) -> None:
        self._nvml = nvml

    def collect(self) -> Iterator[GaugeMetricFamily]:
        nvml = self._nvml
        utilization = GaugeMetricFamily(
            "infership_gpu_utilization_ratio",
            "Share of the last sample period in which a kernel ran on the GPU (0-1).",
            labels=_LABELS,
        )
        used = GaugeMetricFamily(
            "infership_gpu_memory_used_bytes", "GPU memory in use, all processes.", labels=_LABELS
        )
        total = GaugeMetricFamily(
            "infership_gpu_memory_total_bytes", "GPU memory installed.", labels=_LABELS
        )
        try:
            for index in range(nvml.nvmlDeviceGetCount()):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                labels = [str(index), _text(nvml.nvmlDeviceGetUUID(handle)),
                          _text(nvml.nvmlDeviceGetName(handle))]  # fmt: skip
                rates = nvml.nvmlDeviceGetUtilizationRates(handle)
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                utilization.add_metric(labels, rates.gpu / 100)
                used.add_metric(labels, float(memory.used))
                total.add_metric(labels, float(memory.total))
        except Exception as exc:  # a GPU lost mid-scrape must not fail the whole /metrics page
            log.warning("could not read GPU metrics from NVML: %s", exc)
            return
        yield from (utilization, used, total)


def register_gpu_metrics(registry: CollectorRegistry, nvml: Any = None) -> bool:
    """Add GPU gauges to ``registry`` when NVML answers; return whether it did."""
    if nvml is None:
        try:
            import pynvml
        except ImportError:
            return False
        nvml = pynvml
    try:
        nvml.nvmlInit()
        count = nvml.nvmlDeviceGetCount()
    except Exception as exc:  # NVMLError_LibraryNotFound, _DriverNotLoaded, ...: no GPU here
        log.debug("no GPU metrics: %s", exc)
        return False
    registry.register(GpuCollector(nvml))
    log.info("exporting metrics for %d GPUs from NVML", count)
    return True


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
