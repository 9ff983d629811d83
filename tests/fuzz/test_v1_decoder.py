"""Property tests of the v1 translator: whatever body arrives, ``decode_predict`` answers with a
request or one of our client errors; whatever a model returns, ``encode_predict`` writes JSON
that Python reads back to the same values."""

from __future__ import annotations

import contextlib
import json

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from infership.errors import ClientError
from infership.protocols.rest import v1
from infership.types import InferenceResponse, TensorSpec

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SIGNATURES = [
    [TensorSpec("x", "FP32", (-1, 2))],
    [TensorSpec("image", "BYTES", (-1,))],
    [
        TensorSpec("tag", "BYTES", (-1,)),
        TensorSpec("signal", "INT32", (-1, 5)),
        TensorSpec("flag", "BOOL", (-1,)),
        TensorSpec("half", "FP16", (-1,)),
        TensorSpec("big", "UINT64", (-1,)),
    ],
]
NAMES = ["x", "image", "tag", "signal", "flag", "half", "big", "b64", "instances"]

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=6)
    | st.builds(lambda s: {"b64": s}, st.text("AQZaz09+/=_-\n", max_size=8))
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.sampled_from(NAMES), children, max_size=3)
    ),
    max_leaves=25,
)
bodies = st.one_of(
    values,
    st.fixed_dictionaries({"instances": values}),
    st.fixed_dictionaries({"inputs": values}),
    st.fixed_dictionaries(
        {"signature_name": st.sampled_from(["serving_default", "", "x"]), "instances": values}
    ),
)


@FUZZ
@given(bodies, st.sampled_from(SIGNATURES))
def test_any_body_is_a_request_or_a_client_error(body: object, inputs: list[TensorSpec]) -> None:
    raw = json.dumps(body).encode()  # NaN and Infinity included, as TF Serving allows
    try:
        prediction = v1.decode_predict(raw, inputs)
    except ClientError:
        return
    specs = {spec.name: spec for spec in inputs}
    for name, array in prediction.request.inputs.items():
        assert name in specs
        assert isinstance(array, np.ndarray)


@FUZZ
@given(st.binary(max_size=64), st.sampled_from(SIGNATURES))
def test_any_bytes_are_a_request_or_a_client_error(raw: bytes, inputs: list[TensorSpec]) -> None:
    with contextlib.suppress(ClientError):
        v1.decode_predict(raw, inputs)


dtypes = st.sampled_from(
    [np.bool_, np.uint8, np.int32, np.int64, np.uint64, np.float16, np.float32, np.float64]
)
arrays = hnp.arrays(dtypes, hnp.array_shapes(min_dims=1, max_dims=3, max_side=3))
byte_arrays = hnp.arrays(
    object, hnp.array_shapes(min_dims=1, max_dims=2, max_side=3), elements=st.binary(max_size=4)
)


def same(written: object, array: np.ndarray) -> bool:
    """Whether the JSON read back is ``array``'s values in its datatype (strings and b64 are
    the unit tests' business)."""
    if array.dtype == object:
        return True
    back = np.array(written, dtype=array.dtype)
    return back.shape == array.shape and bool(
        np.array_equal(back, array, equal_nan=array.dtype.kind == "f")
    )


@FUZZ
@given(st.dictionaries(st.sampled_from(["a", "b", "c_bytes"]), arrays | byte_arrays, min_size=1))
def test_any_outputs_are_written_as_json_python_reads(outputs: dict[str, np.ndarray]) -> None:
    response = InferenceResponse("m", "1", outputs)
    doc = json.loads(v1.encode_predict(response, "inputs"))["outputs"]
    for name, array in outputs.items():
        value = doc if len(outputs) == 1 else doc[name]
        assert same(value, array), (name, value, array)
    try:
        rows = json.loads(v1.encode_predict(response, "instances"))["predictions"]
    except ClientError:
        assert len({a.shape[0] for a in outputs.values()}) > 1
        return
    assert len(rows) == next(iter(outputs.values())).shape[0]
