"""Prometheus metrics, in a registry per server so tests and embedded servers don't collide."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Latency buckets from 0.5 ms to 10 s: CPU models answer in milliseconds, queues add seconds.
# Finer from 100 to 500 ms, where latency budgets and SLOs usually sit: a p99 read from the
# buckets is only as exact as the bucket that holds it.
_LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2,
            0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)  # fmt: skip
_BATCH = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128)
_MODEL = ("model", "version")
OUTCOMES = ("success", "client_error", "capacity_error", "server_error", "cancelled")


class Metrics:
    """Every metric the server exports. ``model(name, version)`` gives a per-model view."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "infership_requests", "Inference requests by outcome.", (*_MODEL, "outcome"),
            registry=r,
        )  # fmt: skip
        self.request_seconds = Histogram(
            "infership_request_duration_seconds", "Inference time from parsed request to result.",
            _MODEL, buckets=_LATENCY, registry=r,
        )  # fmt: skip
        self.queue_seconds = Histogram(
            "infership_queue_duration_seconds", "Time requests wait in the batching queue.",
            _MODEL, buckets=_LATENCY, registry=r,
        )  # fmt: skip
        self.preprocess_seconds = Histogram(
            "infership_preprocess_duration_seconds", "Image decoding and resizing, per request.",
            _MODEL, buckets=_LATENCY, registry=r,
        )  # fmt: skip
        self.inference_seconds = Histogram(
            "infership_inference_duration_seconds", "Model compute time per batch.",
            _MODEL, buckets=_LATENCY, registry=r,
        )  # fmt: skip
        self.postprocess_seconds = Histogram(
            "infership_postprocess_duration_seconds",
            "Post-processing (classification) time, per request that had any.",
            _MODEL, buckets=_LATENCY, registry=r,
        )  # fmt: skip
        self.batch_size = Histogram(
            "infership_batch_size", "Rows per executed batch.", _MODEL, buckets=_BATCH, registry=r
        )
        self.queue_depth = Gauge(
            "infership_queue_depth", "Requests waiting in the batching queue.", _MODEL, registry=r
        )
        self.in_flight = Gauge(
            "infership_inflight_requests", "Inference requests being handled.", _MODEL, registry=r
        )
        self.model_ready = Gauge(
            "infership_model_ready", "1 when the model version serves requests.", _MODEL,
            registry=r,
        )  # fmt: skip

        self.http_requests = Counter(
            "infership_http_requests", "HTTP requests by route template and status code; counts "
            "what never reaches a model too (bad bodies, unknown models, limits).",
            ("method", "route", "status"), registry=r,
        )  # fmt: skip
        self.http_request_seconds = Histogram(
            "infership_http_request_duration_seconds", "Time from routing an HTTP request to its "
            "response, by route template and status code: how fast refusals (503) and errors "
            "are answered, as well as successes.",
            ("method", "route", "status"), buckets=_LATENCY, registry=r,
        )  # fmt: skip

        self._http_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

        self.drain_started: float | None = None
        """``time.monotonic()`` when the drain began; None while serving normally."""
        Gauge(
            "infership_drain_seconds", "Seconds since SIGTERM started the drain; 0 while serving.",
            registry=r,
        ).set_function(self._drain_seconds)  # fmt: skip

    def http_answered(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count and time one HTTP answer. ``route`` is a template, never a raw path."""
        key = (method, route, status)
        children = self._http_children.get(key)
        if children is None:  # labels() takes a lock and builds a tuple: once per key
            labels = (method, route, str(status))
            children = self.http_requests.labels(*labels), self.http_request_seconds.labels(*labels)
            self._http_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def model(self, name: str, version: str) -> ModelMetrics:
        return ModelMetrics(self, name, version)

    def _drain_seconds(self) -> float:
        return 0.0 if self.drain_started is None else time.monotonic() - self.drain_started

    def start_drain(self) -> None:
        if self.drain_started is None:
            self.drain_started = time.monotonic()


class ModelMetrics:
    """Metrics bound to one model version; also the batching scheduler's observer."""

    def __init__(self, metrics: Metrics, name: str, version: str) -> None:
        labels = (name, version)
        self._metrics = metrics
        self._labels = labels
        self.request_seconds = metrics.request_seconds.labels(*labels)
        self.preprocess_seconds = metrics.preprocess_seconds.labels(*labels)
        self.postprocess_seconds = metrics.postprocess_seconds.labels(*labels)
        self.in_flight = metrics.in_flight.labels(*labels)
        self.ready = metrics.model_ready.labels(*labels)
        self._queue = metrics.queue_seconds.labels(*labels)
        self._inference = metrics.inference_seconds.labels(*labels)
        self._batch = metrics.batch_size.labels(*labels)
        self._depth = metrics.queue_depth.labels(*labels)
        self._outcomes = {
            outcome: metrics.requests.labels(*labels, outcome) for outcome in OUTCOMES
        }

    def outcome(self, outcome: str) -> None:
        self._outcomes[outcome].inc()

    # SchedulerObserver
    def queue_wait(self, seconds: float) -> None:
        self._queue.observe(seconds)

    def batch_done(self, rows: int, requests: int, seconds: float) -> None:
        self._batch.observe(rows)
        self._inference.observe(seconds)

    def queue_depth(self, requests: int) -> None:
        self._depth.set(requests)


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """The ``q`` quantile of a cumulative histogram, as Prometheus' ``histogram_quantile``.

    Linear interpolation within the bucket that holds the rank; the first bucket starts at 0;
    a rank in the ``+Inf`` bucket answers the highest finite bound. None without
    observations.
    """
    bounds = sorted(buckets)
    if not bounds or bounds[-1] != math.inf:
        return None
    total = buckets[math.inf]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for upper in bounds:
        count = buckets[upper]
        if count >= rank:
            if upper == math.inf:
                return lower
            if count == below:
                return upper
            return lower + (upper - lower) * (rank - below) / (count - below)
        lower, below = upper, count
    return lower  # pragma: no cover - the +Inf bucket holds every observation
