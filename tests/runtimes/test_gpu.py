"""GPU gauges from NVML: registered only where NVML answers; values read at each scrape."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from infership.runtimes.gpu import register_gpu_metrics


def nvml_answers() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return False
    return True


HAS_NVML = nvml_answers()


class FakeNvml:
    """Two GPUs as NVML describes them (the shapes pynvml returns), the second busy."""

    def __init__(self) -> None:
        self.fail_reads = False

    def nvmlInit(self) -> None:  # noqa: N802
        pass

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802
        return 2

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:  # noqa: N802
        if self.fail_reads:
            raise RuntimeError("GPU is lost")
        return index

    def nvmlDeviceGetUUID(self, handle: int) -> str:  # noqa: N802
        return f"GPU-{handle}"

    def nvmlDeviceGetName(self, handle: int) -> bytes:  # noqa: N802
        return b"NVIDIA H100"

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> Any:  # noqa: N802
        return SimpleNamespace(gpu=[0, 85][handle], memory=0)

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any:  # noqa: N802
        return SimpleNamespace(used=[0, 2**30][handle], total=80 * 2**30, free=0)


class BrokenNvml(FakeNvml):
    def nvmlInit(self) -> None:  # noqa: N802
        raise RuntimeError("NVML Shared Library Not Found")


def test_gauges_report_each_gpu_at_scrape_time() -> None:
    registry = CollectorRegistry()
    assert register_gpu_metrics(registry, FakeNvml())
    assert registry.get_sample_value(
        "infership_gpu_utilization_ratio", {"gpu": "1", "uuid": "GPU-1", "name": "NVIDIA H100"}
    ) == pytest.approx(0.85)
    labels = {"gpu": "1", "uuid": "GPU-1", "name": "NVIDIA H100"}
    assert registry.get_sample_value("infership_gpu_memory_used_bytes", labels) == 2**30
    assert registry.get_sample_value("infership_gpu_memory_total_bytes", labels) == 80 * 2**30


def test_without_nvml_nothing_is_registered() -> None:
    registry = CollectorRegistry()
    assert not register_gpu_metrics(registry, BrokenNvml())
    assert b"infership_gpu" not in generate_latest(registry)


def test_a_gpu_lost_mid_scrape_leaves_the_rest_of_metrics_working(
    caplog: pytest.LogCaptureFixture,
) -> None:
    nvml = FakeNvml()
    registry = CollectorRegistry()
    register_gpu_metrics(registry, nvml)
    nvml.fail_reads = True
    assert b"infership_gpu" not in generate_latest(registry)
    assert "could not read GPU metrics" in caplog.text


@pytest.mark.skipif(HAS_NVML, reason="checks the fallback on machines without an NVIDIA driver")
def test_the_real_binding_registers_nothing_without_a_driver() -> None:
    assert not register_gpu_metrics(CollectorRegistry())


@pytest.mark.skipif(not HAS_NVML, reason="needs an NVIDIA driver (NVML); none on this machine")
def test_the_real_binding_reports_this_machines_gpus() -> None:
    registry = CollectorRegistry()
    assert register_gpu_metrics(registry)
    assert registry.get_sample_value(
        "infership_gpu_memory_total_bytes", {"gpu": "0", **_first_gpu_labels(registry)}
    )


def _first_gpu_labels(registry: CollectorRegistry) -> dict[str, str]:
    for family in registry.collect():
        for sample in family.samples:
            if sample.labels.get("gpu") == "0":
                return {k: v for k, v in sample.labels.items() if k != "gpu"}
    raise AssertionError("no GPU 0 in the metrics")
