"""Request ids and the W3C traceparent header."""

from __future__ import annotations

import pytest

from infership.observability import TraceParent, request_id_for

HEADER = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_traceparent_is_parsed() -> None:
    assert TraceParent.parse(HEADER) == TraceParent(
        "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", sampled=True
    )
    assert TraceParent.parse(HEADER[:-2] + "00") is not None
    assert not TraceParent.parse(HEADER[:-2] + "00").sampled  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "garbage",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # forbidden version
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # all-zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # all-zero parent
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  # upper case
    ],
)
def test_malformed_traceparent_is_ignored(header: str | None) -> None:
    assert TraceParent.parse(header) is None


def test_request_id_prefers_the_callers_then_the_trace_then_a_new_one() -> None:
    trace = TraceParent.parse(HEADER)
    assert request_id_for("abc-123", trace) == "abc-123"
    assert request_id_for(None, trace) == trace.trace_id  # type: ignore[union-attr]
    made = {request_id_for(None, None) for _ in range(3)}
    assert len(made) == 3
    assert all(len(i) == 32 for i in made)


@pytest.mark.parametrize("unusable", ["", "a b", "x" * 129, "id\nforged log line", "é"])
def test_unusable_request_ids_are_replaced(unusable: str) -> None:
    replaced = request_id_for(unusable, None)
    assert replaced != unusable
    assert len(replaced) == 32
