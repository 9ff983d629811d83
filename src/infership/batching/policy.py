"""BatchPolicy: how one model's requests are queued and grouped into batches.

model.yaml embeds it under ``batching:``; every field has a default, so ``batching: {}`` means
"greedy batching up to 8 rows, no waiting". The scheduler's module docstring says how the fields
act together.
"""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, model_validator


class BatchPolicy(BaseModel):
    """Batching and queueing settings of one model; frozen once read.

    Example (model.yaml)::

        batching:
          max_batch_size: 8
          max_queue_delay_ms: 2
          preferred_batch_sizes: [4, 8]
    """

    # Strict types: YAML `true` must not become a batch size of 1, nor "8" a number.
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    max_batch_size: StrictInt = Field(default=8, ge=1)
    """Most rows in one batch, and so in one request. 1 turns batching across requests off."""

    max_queue_delay_ms: StrictFloat = Field(default=0.0, ge=0, allow_inf_nan=False)
    """How long a batch below the smallest preferred size (``max_batch_size`` when none are
    set) may wait for more requests, counted from its oldest request. 0 (the default) is greedy:
    whatever is queued leaves as soon as an execution slot is free, so a lone request never
    waits."""

    preferred_batch_sizes: tuple[StrictInt, ...] = ()
    """Batch sizes worth waiting for (ascending, no repeats, each 1..max_batch_size). Only
    matters with ``max_queue_delay_ms`` > 0: a batch that reaches the smallest one leaves at
    once."""

    max_queue_size: StrictInt = Field(default=64, ge=1)
    """Most requests (not rows) waiting for a slot; beyond it submit fails at once with
    QueueFull instead of letting latency grow without bound."""

    latency_budget_ms: StrictFloat | None = Field(default=None, gt=0, allow_inf_nan=False)
    """Latency budget for compute and queueing. A request is refused at once (QueueFull, 503
    with Retry-After) when, judged from recent batch times, it would be answered later than
    this: under overload the admitted requests keep their latency, and the rest learn it in
    milliseconds instead of timing out. None: only ``max_queue_size`` bounds the queue."""

    parallel_executions: StrictInt = Field(default=1, ge=1)
    """Most batches computed at the same time (worker threads busy with this model)."""

    default_timeout_ms: StrictFloat | None = Field(default=None, gt=0, allow_inf_nan=False)
    """Deadline given to requests that bring none, counted from submission. None: no deadline."""

    @model_validator(mode="after")
    def _check_preferred_batch_sizes(self) -> Self:
        sizes = list(self.preferred_batch_sizes)
        if any(size < 1 or size > self.max_batch_size for size in sizes):
            raise ValueError(
                f"preferred_batch_sizes must each be between 1 and max_batch_size "
                f"({self.max_batch_size}); got {sizes}"
            )
        if sizes != sorted(set(sizes)):
            raise ValueError(
                f"preferred_batch_sizes must be ascending without repeats; got {sizes}, "
                f"write {sorted(set(sizes))}"
            )
        return self
