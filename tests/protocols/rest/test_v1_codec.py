"""``protocols/rest/v1.py`` with no I/O: v1 predict bodies in, ``InferenceRequest`` out, and
responses back to ``predictions`` / ``outputs``; status and metadata documents."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import orjson
import pytest

from infership.errors import InvalidRequest, ModelNotFound, PayloadTooLarge, VersionNotFound
from infership.protocols.rest import v1
from infership.protocols.rest.codec import MAX_JSON_VALUES
from infership.types import InferenceResponse, TensorSpec

ADD = [TensorSpec("x", "FP32", (-1, 16))]
# TF Serving's own multi-input example: tag, signal, sensor.
MULTI = [
    TensorSpec("tag", "BYTES", (-1,)),
    TensorSpec("signal", "INT32", (-1, 5)),
    TensorSpec("sensor", "FP32", (-1, 2, 2)),
]
IMAGE = [TensorSpec("image", "BYTES", (-1,))]


def decode(doc: Any, inputs: list[TensorSpec] = MULTI) -> v1.Prediction:
    return v1.decode_predict(orjson.dumps(doc), inputs)


def refused(doc: Any, inputs: list[TensorSpec] = MULTI) -> str:
    body = doc if isinstance(doc, bytes) else orjson.dumps(doc)
    with pytest.raises(InvalidRequest) as caught:
        v1.decode_predict(body, inputs)
    assert type(caught.value) is InvalidRequest  # a 400, not a 413
    return caught.value.message


# --- requests as TF Serving's REST documentation writes them ---------------------------------


def test_rows_of_a_single_input_are_the_rows_of_its_tensor() -> None:
    prediction = v1.decode_predict(
        b'{"instances": [1.0, 2.0, 5.0]}', [TensorSpec("x", "FP32", (-1,))]
    )
    assert prediction.format == "instances"
    x = prediction.request.inputs["x"]
    assert x.dtype == np.float32
    assert x.tolist() == [1.0, 2.0, 5.0]


def test_rows_of_several_inputs_are_objects_keyed_by_input_name() -> None:
    prediction = decode(
        {
            "instances": [
                {"tag": "foo", "signal": [1, 2, 3, 4, 5], "sensor": [[1, 2], [3, 4]]},
                {"tag": "bar", "signal": [3, 4, 1, 2, 5], "sensor": [[4, 5], [6, 8]]},
            ]
        }
    )
    inputs = prediction.request.inputs
    assert inputs["tag"].tolist() == [b"foo", b"bar"]
    assert inputs["signal"].dtype == np.int32
    assert inputs["signal"].shape == (2, 5)
    assert inputs["sensor"].dtype == np.float32
    assert inputs["sensor"].tolist() == [[[1, 2], [3, 4]], [[4, 5], [6, 8]]]


def test_columns_are_an_object_of_tensors_in_their_natural_nesting() -> None:
    prediction = decode(
        {
            "inputs": {
                "tag": ["foo", "bar"],
                "signal": [[1, 2, 3, 4, 5], [3, 4, 1, 2, 5]],
                "sensor": [[[1, 2], [3, 4]], [[4, 5], [6, 8]]],
            }
        }
    )
    assert prediction.format == "inputs"
    assert prediction.request.inputs["signal"].tolist()[1] == [3, 4, 1, 2, 5]
    assert prediction.request.inputs["sensor"].shape == (2, 2, 2)


def test_a_single_input_takes_its_tensor_unnamed_or_named() -> None:
    row = list(range(16))
    for doc in (
        {"inputs": [row]},
        {"inputs": {"x": [row]}},
        {"instances": [row]},
        {"instances": [{"x": row}]},
        {"signature_name": "serving_default", "instances": [row]},
    ):
        assert decode(doc, ADD).request.inputs["x"].shape == (1, 16), doc


def test_b64_values_are_binary_bytes_standard_or_url_safe_with_or_without_padding() -> None:
    blob = bytes(range(256)) + b"\xfb\xff"
    for text in (
        base64.b64encode(blob).decode(),
        base64.urlsafe_b64encode(blob).decode(),
        base64.b64encode(blob).decode().rstrip("="),
        base64.encodebytes(blob).decode(),  # line breaks every 76 characters, as `base64` does
    ):
        inputs = decode({"instances": [{"b64": text}]}, IMAGE).request.inputs
        assert inputs["image"].tolist() == [blob]
    # KServe's image examples name the input; columns too.
    named = decode({"instances": [{"image": {"b64": "aGk="}}]}, IMAGE).request.inputs
    assert named["image"].tolist() == [b"hi"]
    columns = decode({"inputs": {"image": [{"b64": "aGk="}, "text"]}}, IMAGE).request.inputs
    assert columns["image"].tolist() == [b"hi", b"text"]


def test_non_finite_tokens_are_read_as_tf_serving_writes_them() -> None:
    spec = [TensorSpec("x", "FP32", (-1,))]
    x = v1.decode_predict(b'{"instances": [NaN, Infinity, -Infinity, 1]}', spec)
    values = x.request.inputs["x"]
    assert np.isnan(values[0])
    assert values[1:].tolist() == [np.inf, -np.inf, 1.0]


# --- refusals: each says what is wrong --------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"", "empty request body"),
        (b"  \n", "empty request body"),
        (b"{", "not valid JSON"),
        (b'{"instances": [NaN}', "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object, got an array"),
        (b"null", "must be a JSON object, got null"),
        (b'{"instances": [1e400]}', "not valid JSON"),
        (b"[" * 5000 + b"]" * 5000, "not valid JSON"),
        (b'{"instances": ' + b"[" * 5000 + b"]" * 5000 + b", NaN: 1}", "not valid JSON"),
    ],
)
def test_bodies_that_are_not_a_json_object_are_refused(body: bytes, says: str) -> None:
    assert says in refused(body)


@pytest.mark.parametrize(
    ("doc", "says"),
    [
        ({}, "needs 'instances' (rows) or 'inputs' (columns)"),
        ({"instances": None}, "needs 'instances'"),
        ({"instances": [[0] * 16], "inputs": [[0] * 16]}, "not both"),
        ({"instance": [[0] * 16]}, "unknown key(s) 'instance'"),
        ({"instances": [[0] * 16], "outputs": ["y"]}, "unknown key(s) 'outputs'"),
        ({"signature_name": "predict_images", "instances": [[0] * 16]}, "unknown signature_name"),
        ({"signature_name": 3, "instances": [[0] * 16]}, "unknown signature_name a number"),
        (
            b'{"signature_name": ' + b"[" * 1000 + b"]" * 1000 + b', "instances": [[0]]}',
            "unknown signature_name an array",
        ),
        ({"instances": []}, "non-empty list"),
        ({"instances": {"x": [[0] * 16]}}, "non-empty list"),
        ({"instances": 5}, "non-empty list"),
        ({"inputs": {}}, "empty object"),
        ({"instances": [{"y": [0] * 16}]}, "no input 'y'; its inputs are ['x']"),
        ({"inputs": {"x": [[0] * 16], "z": 1}}, "no input 'z'"),
        ({"instances": [[0] * 15 + [True]]}, "FP32 data must be JSON numbers"),
        ({"instances": [[0] * 15 + ["1.5"]]}, "FP32 data must be JSON numbers"),
        ({"instances": [[0] * 15 + [None]]}, "FP32 data must be JSON numbers"),
        ({"instances": [[0] * 15 + [{"a": 1}]]}, "FP32 data must be JSON numbers"),
        ({"instances": [{"b64": "AAAA"}]}, "b64 values are for BYTES inputs; this is FP32"),
        ({"instances": [[0] * 16, [0] * 15]}, "ragged"),
        ({"instances": [[0] * 16, 1]}, "ragged"),
        ({"instances": [[0] * 16, [[0] * 16]]}, "ragged"),
        ({"instances": [{"x": [0] * 16}, [0] * 16]}, "same inputs as instances[0]"),
        ({"instances": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}, "32"),
    ],
)
def test_requests_the_single_input_model_cannot_take_are_refused(doc: Any, says: str) -> None:
    assert says in refused(doc, ADD)


@pytest.mark.parametrize(
    ("doc", "says"),
    [
        # several inputs need names
        ({"instances": [["foo"]]}, "the model has 3 inputs ('tag', 'signal', 'sensor')"),
        ({"inputs": ["foo", "bar"]}, "'inputs' must name them"),
        ({"instances": [{"b64": "AAAA"}]}, "'instances' must name them"),
        # rows must all name the same inputs
        (
            {"instances": [{"tag": "a", "signal": [1] * 5}, {"tag": "b"}]},
            "instances[1] must be an object with the same inputs as instances[0]",
        ),
        # integers must be integers, in range
        ({"inputs": {"signal": [[1, 2, 3, 4, 5.5]]}}, "INT32 data must be JSON integers"),
        ({"inputs": {"signal": [[1, 2, 3, 4, 5.0]]}}, "INT32 data must be JSON integers"),
        ({"inputs": {"signal": [[1, 2, 3, 4, 2**31]]}}, "out of range"),
        (b'{"inputs": {"signal": [[1, 2, 3, 4, 1180591620717411303424]]}}', "JSON integers"),
        ({"inputs": {"signal": [[1, 2, 3, 4, True]]}}, "INT32 data must be JSON integers"),
        (b'{"inputs": {"signal": [[1, 2, 3, 4, NaN]]}}', "INT32 data must be JSON integers"),
        # BYTES are strings or b64 objects
        ({"inputs": {"tag": [1]}}, "BYTES values must be strings or"),
        ({"inputs": {"tag": [["a"], "b"]}}, "ragged"),
        ({"inputs": {"tag": [["a", "b"], ["c"]]}}, "ragged"),
        ({"inputs": {"tag": [{"b64": 12}]}}, "a b64 value must be a string, got a number"),
        ({"inputs": {"tag": [{"b64": "not base64!"}]}}, "not valid base64"),
        ({"inputs": {"tag": [{"b64": "QUJ=D"}]}}, "not valid base64"),
        ({"inputs": {"tag": [{"b64": "Q"}]}}, "not valid base64"),
        ({"inputs": {"tag": [{"b64": "QUJD QUJD"}]}}, "not valid base64"),
        ({"inputs": {"tag": [{"b64": "QQ==", "x": 1}]}}, "BYTES values must be strings or"),
        (
            b'{"inputs": {"tag": ["a", ' + b"[" * 900 + b'"b"' + b"]" * 900 + b"]}}",
            "a list where a value should be",
        ),
        (
            b'{"inputs": {"signal": [[1], ' + b"[" * 900 + b"2" + b"]" * 900 + b"]}}",
            "ragged",
        ),
        ({"inputs": {"tag": [{"B64": "QQ=="}]}}, "BYTES values must be strings or"),
    ],
)
def test_requests_the_multi_input_model_cannot_take_are_refused(doc: Any, says: str) -> None:
    assert says in refused(doc)


def test_a_body_with_more_json_values_than_the_limit_is_413_before_parsing() -> None:
    body = b'{"instances": [' + b"0," * MAX_JSON_VALUES + b"0]}"
    with pytest.raises(PayloadTooLarge, match="the limit is"):
        v1.decode_predict(body, [TensorSpec("x", "FP32", (-1,))])


def test_scalars_and_empty_tensors_keep_their_shape_for_the_model_to_judge() -> None:
    scalar = decode({"inputs": 3.5}, [TensorSpec("x", "FP32", (-1,))]).request.inputs["x"]
    assert scalar.shape == ()
    empty = decode({"inputs": [[]]}, ADD).request.inputs["x"]
    assert empty.shape == (1, 0)
    text = decode({"inputs": {"b64": "aGk="}}, IMAGE).request.inputs["image"]
    assert text.shape == ()


# --- responses --------------------------------------------------------------------------------


def answer(outputs: dict[str, Any], format: v1.Format) -> Any:
    response = InferenceResponse("m", "1", {k: np.asarray(v) for k, v in outputs.items()})
    return json.loads(v1.encode_predict(response, format))


def test_one_output_is_answered_unnamed() -> None:
    y = np.array([[1.5, 2.0], [3.0, 4.25]], dtype=np.float32)
    assert answer({"y": y}, "instances") == {"predictions": [[1.5, 2.0], [3.0, 4.25]]}
    assert answer({"y": y}, "inputs") == {"outputs": [[1.5, 2.0], [3.0, 4.25]]}


def test_several_outputs_are_objects_per_row_for_instances_and_one_object_for_inputs() -> None:
    outputs = {
        "label": np.array([[b"cat", b"dog"], [b"cup", b"mug"]], dtype=object),
        "probability": np.array([[0.75, 0.25], [0.5, 0.5]], dtype=np.float32),
        "class_index": np.array([[285, 1], [967, 2]], dtype=np.int64),
    }
    assert answer(outputs, "instances") == {
        "predictions": [
            {"label": ["cat", "dog"], "probability": [0.75, 0.25], "class_index": [285, 1]},
            {"label": ["cup", "mug"], "probability": [0.5, 0.5], "class_index": [967, 2]},
        ]
    }
    assert answer(outputs, "inputs") == {
        "outputs": {
            "label": [["cat", "dog"], ["cup", "mug"]],
            "probability": [[0.75, 0.25], [0.5, 0.5]],
            "class_index": [[285, 1], [967, 2]],
        }
    }


def test_binary_outputs_are_b64_objects() -> None:
    outputs = {
        "text": np.array([b"caf\xc3\xa9", b"ok"], dtype=object),
        "blob": np.array([b"\xff\x00", b"ok"], dtype=object),  # not UTF-8: all of it b64
        "image_bytes": np.array([b"abc", b"ok"], dtype=object),  # *_bytes: b64, as TF does
    }
    rows = answer(outputs, "instances")["predictions"]
    assert rows[0] == {"text": "café", "blob": {"b64": "/wA="}, "image_bytes": {"b64": "YWJj"}}
    assert rows[1] == {"text": "ok", "blob": {"b64": "b2s="}, "image_bytes": {"b64": "b2s="}}


def test_non_finite_outputs_are_written_as_tf_serving_writes_them_not_as_null() -> None:
    y = np.array([np.inf, -np.inf, np.nan, 0.5], dtype=np.float32)
    response = InferenceResponse("m", "1", {"y": y})
    body = v1.encode_predict(response, "instances")
    assert body == b'{"predictions":[Infinity,-Infinity,NaN,0.5]}'
    multi = InferenceResponse("m", "1", {"y": y, "i": np.arange(4)})
    rows = json.loads(v1.encode_predict(multi, "instances"))["predictions"]
    assert rows[0] == {"y": float("inf"), "i": 0}
    assert rows[3] == {"y": 0.5, "i": 3}


def test_every_datatype_is_written() -> None:
    outputs = {
        "b": np.array([True, False]),
        "u8": np.array([0, 255], dtype=np.uint8),
        "i64": np.array([-(2**63), 2**63 - 1], dtype=np.int64),
        "u64": np.array([0, 2**64 - 1], dtype=np.uint64),
        "f16": np.array([0.5, 1.5], dtype=np.float16),
        "f64": np.array([0.1, 1e300]),
        "big": np.array([1.0, 2.0], dtype=">f4"),  # byte-swapped: written as native
    }
    assert answer(outputs, "inputs")["outputs"] == {
        "b": [True, False],
        "u8": [0, 255],
        "i64": [-(2**63), 2**63 - 1],
        "u64": [0, 2**64 - 1],
        "f16": [0.5, 1.5],
        "f64": [0.1, 1e300],
        "big": [1.0, 2.0],
    }
    assert answer({"s": np.float32(2.5)}, "inputs") == {"outputs": 2.5}


def test_outputs_without_a_shared_batch_dimension_cannot_be_rows() -> None:
    response = InferenceResponse("m", "1", {"a": np.zeros(2), "b": np.zeros(3)})
    with pytest.raises(InvalidRequest, match="send 'inputs'"):
        v1.encode_predict(response, "instances")
    assert json.loads(v1.encode_predict(response, "inputs"))["outputs"]["b"] == [0, 0, 0]


# --- status and metadata ----------------------------------------------------------------------

INDEX = [
    {"name": "add", "version": "1", "state": "READY"},
    {"name": "add", "version": "2", "state": "READY"},
    {"name": "broken", "state": "UNAVAILABLE", "reason": "model.yaml: unknown key 'x'"},
    {"name": "gone", "version": "3", "state": "UNAVAILABLE", "reason": "unloaded"},
    {"name": "slow", "state": "LOADING"},
]


def test_model_status_is_tf_servings_with_kserves_name_and_ready() -> None:
    assert v1.model_status("add", "2", INDEX) == {
        "name": "add",
        "ready": True,
        "model_version_status": [
            {
                "version": "2",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ],
    }
    assert v1.model_status("add", "002", INDEX) == v1.model_status("add", "2", INDEX)
    assert len(v1.model_status("add", None, INDEX)["model_version_status"]) == 2
    broken = v1.model_status("broken", None, INDEX)
    assert broken["ready"] is False
    assert broken["model_version_status"] == [
        {
            "state": "END",
            "status": {"error_code": "UNKNOWN", "error_message": "model.yaml: unknown key 'x'"},
        }
    ]
    gone = v1.model_status("gone", None, INDEX)["model_version_status"][0]
    assert (gone["state"], gone["status"]["error_code"]) == ("END", "OK")
    assert v1.model_status("slow", None, INDEX)["model_version_status"][0]["state"] == "LOADING"


def test_model_status_of_an_unknown_model_or_version_is_not_found() -> None:
    with pytest.raises(ModelNotFound):
        v1.model_status("nope", None, INDEX)
    with pytest.raises(VersionNotFound):
        v1.model_status("add", "3", INDEX)
    with pytest.raises(VersionNotFound):
        v1.model_status("add", "x" * 100, INDEX)


def test_model_metadata_is_a_serving_default_signature_with_tf_datatypes() -> None:
    metadata = {
        "name": "add",
        "versions": ["2", "10"],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 16]}],
        "outputs": [{"name": "label", "datatype": "BYTES", "shape": [-1]}],
    }
    doc = v1.model_metadata(metadata)
    assert doc["model_spec"] == {"name": "add", "signature_name": "", "version": "10"}
    signature = doc["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["inputs"]["x"] == {
        "dtype": "DT_FLOAT",
        "tensor_shape": {"dim": [{"size": "-1"}, {"size": "16"}]},
        "name": "x",
    }
    assert signature["outputs"]["label"]["dtype"] == "DT_STRING"
    assert signature["method_name"] == "tensorflow/serving/predict"
    one = {**metadata, "versions": ["2"]}  # DataPlane.model_metadata of version 2
    assert v1.model_metadata(one)["model_spec"]["version"] == "2"
