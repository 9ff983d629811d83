"""BatchPolicy: defaults, strict validation, frozen."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from infership.batching import BatchPolicy


def test_defaults_are_greedy_batching() -> None:
    policy = BatchPolicy()
    assert policy.max_batch_size == 8
    assert policy.max_queue_delay_ms == 0.0
    assert policy.preferred_batch_sizes == ()
    assert policy.max_queue_size == 64
    assert policy.parallel_executions == 1
    assert policy.default_timeout_ms is None


def test_reads_yaml_shaped_values() -> None:
    policy = BatchPolicy.model_validate(
        {"max_batch_size": 16, "max_queue_delay_ms": 2, "preferred_batch_sizes": [4, 16]}
    )
    assert policy.preferred_batch_sizes == (4, 16)
    assert policy.max_queue_delay_ms == 2.0
    assert BatchPolicy.model_validate_json(policy.model_dump_json()) == policy


def test_fields_are_documented() -> None:
    assert all(field.description for field in BatchPolicy.model_fields.values())


def test_is_frozen() -> None:
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        BatchPolicy().max_batch_size = 4  # type: ignore[misc]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"max_batch_size": 0}, "max_batch_size\n.*greater than or equal to 1"),
        ({"max_batch_size": True}, "max_batch_size\n.*valid integer"),
        ({"max_batch_size": "8"}, "max_batch_size\n.*valid integer"),
        ({"max_queue_delay_ms": -1.0}, "max_queue_delay_ms\n.*greater than or equal to 0"),
        ({"max_queue_delay_ms": float("nan")}, "max_queue_delay_ms\n.*finite"),
        ({"max_queue_size": 0}, "max_queue_size\n.*greater than or equal to 1"),
        ({"parallel_executions": 0}, "parallel_executions\n.*greater than or equal to 1"),
        ({"default_timeout_ms": 0}, "default_timeout_ms\n.*greater than 0"),
        ({"max_batch_sise": 8}, "max_batch_sise\n.*Extra inputs"),
        (
            {"max_batch_size": 8, "preferred_batch_sizes": [4, 16]},
            r"between 1 and max_batch_size \(8\); got \[4, 16\]",
        ),
        ({"preferred_batch_sizes": [0]}, "between 1 and max_batch_size"),
        (
            {"preferred_batch_sizes": [8, 4, 4]},
            r"ascending without repeats; got \[8, 4, 4\], write \[4, 8\]",
        ),
    ],
)
def test_invalid_values_are_refused_naming_the_field(values: dict[str, Any], message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=message):
        BatchPolicy.model_validate(values)
