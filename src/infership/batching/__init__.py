"""Dynamic batching: the per-model scheduler every inference goes through, and its policy."""

from __future__ import annotations

from infership.batching.policy import BatchPolicy
from infership.batching.scheduler import BatchScheduler, ExecuteFn, SchedulerObserver

__all__ = ["BatchPolicy", "BatchScheduler", "ExecuteFn", "SchedulerObserver"]
