"""tritonclient.http, sync and aio, against a live server; prints what it observed."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import tritonclient.http as http
import tritonclient.http.aio as aio
from _observe import arguments, error_of, report
from _triton import HALF, status
from tritonclient.utils import InferenceServerException


def image_input(image: bytes) -> http.InferInput:
    tensor = http.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([image], dtype=object))
    return tensor


def half_input(binary: bool, shape: tuple[int, ...] = HALF.shape) -> http.InferInput:
    tensor = http.InferInput("x", list(shape), "FP16")
    tensor.set_data_from_numpy(HALF.reshape(shape), binary_data=binary)
    return tensor


def sync(args: Any, image: bytes) -> dict[str, Any]:
    client = http.InferenceServerClient(args.rest)
    seen: dict[str, Any] = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "server_name": client.get_server_metadata()["name"],
        "model_inputs": [t["name"] for t in client.get_model_metadata(args.model)["inputs"]],
        "model_ready": client.is_model_ready(args.model),
        "unknown_model_ready": client.is_model_ready("no-such-model"),
    }
    result = client.infer(args.model, [image_input(image)])
    seen["label"] = result.as_numpy("label")[0][0]
    wanted = [http.InferRequestedOutput("class_index", binary_data=False)]
    result = client.infer(args.model, [image_input(image)], outputs=wanted)
    seen["requested_outputs"] = [o["name"] for o in result.get_response()["outputs"]]
    seen["class_index"] = result.as_numpy("class_index")[0][0]
    json_out = [http.InferRequestedOutput("y", binary_data=False)]
    seen["fp16_json"] = client.infer(args.half, [half_input(False)], outputs=json_out).as_numpy("y")
    result = client.infer(args.half, [half_input(True)])
    seen["fp16_binary"] = result.as_numpy("y")
    seen["fp16_dtype"] = str(result.as_numpy("y").dtype)

    seen["repository"] = sorted(m["name"] for m in client.get_model_repository_index())
    client.unload_model(args.half)
    seen["ready_after_unload"] = client.is_model_ready(args.half)
    client.load_model(args.half)
    seen["ready_after_load"] = client.is_model_ready(args.half)

    bad_dtype = http.InferInput("image", [1], "FP32")
    bad_dtype.set_data_from_numpy(np.array([1.0], dtype=np.float32))
    seen["errors"] = {
        "unknown_model": error_of(
            lambda: client.infer("no-such-model", [half_input(True)]), status
        ),
        "bad_shape": error_of(lambda: client.infer(args.half, [half_input(True, (2, 2))]), status),
        "bad_dtype": error_of(lambda: client.infer(args.model, [bad_dtype]), status),
    }
    client.close()
    return seen


async def asynchronous(args: Any, image: bytes) -> dict[str, Any]:
    client = aio.InferenceServerClient(args.rest)
    try:
        tensor = aio.InferInput("image", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([image], dtype=object))
        result = await client.infer(args.model, [tensor])
        try:
            await client.infer("no-such-model", [tensor])
            unknown = "no error"
        except InferenceServerException as exc:
            unknown = str(exc.status())
        return {
            "live": await client.is_server_live(),
            "ready": await client.is_server_ready(),
            "model_ready": await client.is_model_ready(args.model),
            "label": result.as_numpy("label")[0][0],
            "unknown_model": unknown,
        }
    finally:
        await client.close()


def main() -> None:
    args = arguments()
    image = open(args.image, "rb").read()  # noqa: SIM115 - a short script
    report({"sync": sync(args, image), "aio": asyncio.run(asynchronous(args, image))})


if __name__ == "__main__":
    main()
