"""tritonclient.grpc against a live server; prints what it observed."""

from __future__ import annotations

import queue
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
from _observe import arguments, error_of, report
from _triton import HALF, status


def image_input(image: bytes) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([image], dtype=object))
    return tensor


def half_input(shape: tuple[int, ...] = HALF.shape) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput("x", list(shape), "FP16")
    tensor.set_data_from_numpy(HALF.reshape(shape))
    return tensor


def main() -> None:
    args = arguments()
    image = open(args.image, "rb").read()  # noqa: SIM115 - a short script
    client = grpcclient.InferenceServerClient(args.grpc)
    seen: dict[str, Any] = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "server_name": client.get_server_metadata().name,
        "model_inputs": [t.name for t in client.get_model_metadata(args.model).inputs],
        "model_ready": client.is_model_ready(args.model),
        "unknown_model_ready": client.is_model_ready("no-such-model"),
    }
    result = client.infer(args.model, [image_input(image)], request_id="r-1")
    seen["label"] = result.as_numpy("label")[0][0]
    seen["id"] = result.get_response().id
    wanted = [grpcclient.InferRequestedOutput("class_index")]
    result = client.infer(args.model, [image_input(image)], outputs=wanted)
    seen["requested_outputs"] = [o.name for o in result.get_response().outputs]
    seen["class_index"] = result.as_numpy("class_index")[0][0]
    result = client.infer(args.half, [half_input()], parameters={"note": "passed through"})
    seen["fp16_raw"] = result.as_numpy("y")
    seen["fp16_dtype"] = str(result.as_numpy("y").dtype)

    seen["repository"] = sorted(m.name for m in client.get_model_repository_index().models)
    client.unload_model(args.half)
    seen["ready_after_unload"] = client.is_model_ready(args.half)
    client.load_model(args.half)
    seen["ready_after_load"] = client.is_model_ready(args.half)

    bad_dtype = grpcclient.InferInput("image", [1], "FP32")
    bad_dtype.set_data_from_numpy(np.array([1.0], dtype=np.float32))
    seen["errors"] = {
        "unknown_model": error_of(lambda: client.infer("no-such-model", [half_input()]), status),
        "bad_shape": error_of(lambda: client.infer(args.half, [half_input((2, 2))]), status),
        "bad_dtype": error_of(lambda: client.infer(args.model, [bad_dtype]), status),
    }

    seen["stream"] = stream(client, args.half)
    client.close()
    report(seen)


def stream(client: grpcclient.InferenceServerClient, model: str) -> dict[str, Any]:
    """tritonclient's streaming API: requests sent back to back on one ModelStreamInfer
    call, a bad one among them; every answer arrives through the callback."""
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    for i in range(8):
        client.async_stream_infer(model, [half_input()], request_id=f"s-{i}")
    client.async_stream_infer(model, [half_input((2, 2))], request_id="s-bad")
    results, errors = {}, []
    for _ in range(9):
        result, error = answers.get(timeout=30)
        if error is not None:
            errors.append(str(error))
        else:
            results[result.get_response().id] = result.as_numpy("y").tolist()
    client.stop_stream()
    return {"results": results, "errors": errors}


if __name__ == "__main__":
    main()
