from __future__ import annotations

import numpy as np
import pytest

from infership.bench import payloads
from infership.protocols.rest.codec import decode_infer_request


def _decode(request: payloads.HttpRequest):  # type: ignore[no-untyped-def]
    headers = dict(request.headers)
    return decode_infer_request(
        request.body,
        header_length=headers.get("Inference-Header-Content-Length"),
        max_body_bytes=1 << 24,
    )


def test_binary_payload_is_what_the_server_codec_decodes() -> None:
    x = payloads.parse_tensor("x:FP32:2,16")
    image = payloads.image_tensor(b"\xff\xd8not really a jpeg")
    request = payloads.oip_binary("/v2/models/m/infer", [x, image], ["y"])
    decoded = _decode(request)
    np.testing.assert_array_equal(decoded.inputs["x"], x.data)
    assert decoded.inputs["image"][0] == b"\xff\xd8not really a jpeg"
    assert [o.name for o in decoded.outputs or ()] == ["y"]
    assert decoded.parameters["binary_data_output"] is True


def test_json_payload_is_what_the_server_codec_decodes() -> None:
    x = payloads.parse_tensor("x:INT64:3")
    decoded = _decode(payloads.oip_json("/v2/models/m/infer", [x]))
    np.testing.assert_array_equal(decoded.inputs["x"], x.data)


def test_json_payload_refuses_binary_bytes_and_says_what_to_use() -> None:
    with pytest.raises(payloads.PayloadError, match="oip-binary"):
        payloads.oip_json("/p", [payloads.image_tensor(b"\xff\xd8\xff")])


def test_tensor_data_is_the_same_every_time() -> None:
    a, b = payloads.parse_tensor("x:FP32:4"), payloads.parse_tensor("x:FP32:4")
    np.testing.assert_array_equal(a.data, b.data)
    assert payloads.parse_tensor("b:BOOL:2").data.dtype == np.bool_


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("x:FP32", "NAME:DATATYPE:SHAPE"),
        ("x:FP32:a,b", "comma-separated"),
        ("x:FP99:1", "unknown datatype"),
        (":FP32:1", "needs a name"),
        ("x:BYTES:1", "--image"),
    ],
)
def test_bad_tensor_specs_are_refused_clearly(spec: str, message: str) -> None:
    with pytest.raises(payloads.PayloadError, match=message):
        payloads.parse_tensor(spec)


def test_upload_is_one_file_in_field_img_with_its_type() -> None:
    request = payloads.upload(b"JPEGDATA", "cat.jpg")
    content_type = dict(request.headers)["Content-Type"]
    boundary = content_type.split("boundary=")[1]
    assert request.body.startswith(f"--{boundary}\r\n".encode())
    assert b'name="img"; filename="cat.jpg"' in request.body
    assert b"Content-Type: image/jpeg\r\n\r\nJPEGDATA\r\n" in request.body
    assert request.body.endswith(f"--{boundary}--\r\n".encode())


def test_wire_bytes_carry_host_and_exact_length() -> None:
    wire = payloads.raw_image(b"12345", "a.png").wire("h:1")
    assert wire.startswith(b"POST /predict HTTP/1.1\r\nHost: h:1\r\n")
    assert b"Content-Type: image/png\r\n" in wire
    assert wire.endswith(b"Content-Length: 5\r\n\r\n12345")


def test_grpc_request_carries_raw_inputs() -> None:
    from infership.protocols.grpc._pb import pb

    x = payloads.parse_tensor("x:FP32:1,4")
    message = pb.ModelInferRequest.FromString(payloads.grpc_infer_request("m", [x], ["y"]))
    assert message.model_name == "m"
    assert list(message.inputs[0].shape) == [1, 4]
    assert message.raw_input_contents[0] == x.data.tobytes()
    assert [o.name for o in message.outputs] == ["y"]
