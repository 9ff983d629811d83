"""stack / split / batch_key / count_rows: pure numpy, no scheduler."""

from __future__ import annotations

import numpy as np
import pytest

from infership.batching.assemble import batch_key, count_rows, split, stack
from infership.errors import InvalidRequest
from infership.types import Array


def texts(*items: bytes) -> Array:
    array = np.empty(len(items), dtype=object)
    array[:] = list(items)
    return array


def test_stack_concatenates_along_axis_0_and_counts_rows() -> None:
    a: dict[str, Array] = {"x": np.zeros((1, 3), np.float32), "ids": np.array([[1]])}
    b: dict[str, Array] = {"x": np.ones((2, 3), np.float32), "ids": np.array([[2], [3]])}
    batch, counts = stack([a, b])
    assert counts == [1, 2]
    assert batch["x"].shape == (3, 3)
    assert batch["x"].dtype == np.float32
    assert batch["ids"].ravel().tolist() == [1, 2, 3]


def test_stack_of_one_request_does_not_copy() -> None:
    x = np.zeros((2, 3))
    batch, counts = stack([{"x": x}])
    assert batch["x"] is x
    assert counts == [2]


def test_stack_and_split_bytes_tensors() -> None:
    batch, counts = stack([{"t": texts(b"a")}, {"t": texts(b"bb", b"\x00")}])
    assert batch["t"].dtype == object
    assert batch["t"].tolist() == [b"a", b"bb", b"\x00"]
    parts = split(batch, counts)
    assert [part["t"].tolist() for part in parts] == [[b"a"], [b"bb", b"\x00"]]


def test_stack_refuses_requests_with_different_names() -> None:
    with pytest.raises(ValueError, match="different input names"):
        stack([{"x": np.zeros((1, 2))}, {"z": np.zeros((1, 2))}])
    with pytest.raises(ValueError, match="at least one"):
        stack([])


def test_split_returns_views_in_request_order() -> None:
    y = np.arange(12).reshape(6, 2)
    parts = split({"y": y}, [1, 3, 2])
    assert [part["y"][:, 0].tolist() for part in parts] == [[0], [2, 4, 6], [8, 10]]
    assert all(np.shares_memory(part["y"], y) for part in parts)


@pytest.mark.parametrize(
    ("outputs", "message"),
    [
        ({"y": np.zeros((2, 1))}, r"'y' has shape \(2, 1\); .* 3 rows"),
        ({"y": np.array(1.0)}, r"'y' has shape \(\)"),
        ({"y": [1, 2, 3]}, "'y' has list"),
    ],
)
def test_split_refuses_outputs_that_do_not_match_the_batch(
    outputs: dict[str, Array], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        split(outputs, [1, 2])


def test_batch_key_ignores_rows_and_name_order_but_not_dtype_or_shape() -> None:
    def key(**inputs: Array) -> object:
        return batch_key(inputs)

    base = key(x=np.zeros((1, 3), np.float32), m=np.zeros((1,), np.int64))
    assert base == key(m=np.zeros((5,), np.int64), x=np.zeros((5, 3), np.float32))
    assert base != key(x=np.zeros((1, 3), np.float64), m=np.zeros((1,), np.int64))
    assert base != key(x=np.zeros((1, 4), np.float32), m=np.zeros((1,), np.int64))
    assert base != key(x=np.zeros((1, 3), np.float32))
    assert key(t=texts(b"a")) == key(t=texts(b"bb", b"c"))
    hash(base)


def test_count_rows() -> None:
    assert count_rows({"x": np.zeros((4, 2)), "t": texts(*[b""] * 4)}) == 4
    with pytest.raises(InvalidRequest, match="no inputs"):
        count_rows({})
    with pytest.raises(InvalidRequest, match=r"\['x'\] are scalars"):
        count_rows({"x": np.array(1.0)})
    with pytest.raises(InvalidRequest, match="disagree"):
        count_rows({"x": np.zeros((2,)), "z": np.zeros((3,))})
    with pytest.raises(InvalidRequest, match="0 rows"):
        count_rows({"x": np.zeros((0, 2))})
