"""kserve's InferenceRESTClient and InferenceGRPCClient against a live server; prints what they
observed. Lists become typed gRPC contents, numpy arrays raw bytes: both paths are exercised."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import grpc
import httpx
import numpy as np
from _observe import arguments, report
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.infer_type import RequestedOutput
from PIL import Image

HALF = np.array([[1, 2, 3, 4]], dtype=np.float16)


def pixels(jpeg: bytes) -> np.ndarray:
    """The example model's documented preprocessing: RGB, 224x224 bilinear, (x/255 - 0.5)/0.5."""
    with Image.open(io.BytesIO(jpeg)) as image:
        rgb = image.convert("RGB").resize((224, 224), Image.Resampling.BILINEAR)
    array = (np.asarray(rgb, dtype=np.float32) / 255 - 0.5) / 0.5
    return np.ascontiguousarray(array.transpose(2, 0, 1)[None])


def half_input(shape: tuple[int, ...] = HALF.shape) -> InferInput:
    tensor = InferInput("x", list(shape), "FP16")
    tensor.set_data_from_numpy(HALF.reshape(shape), binary_data=True)
    return tensor


def image_input(image: bytes, *, typed: bool) -> InferInput:
    if typed:  # a list: JSON over REST, bytes_contents over gRPC
        return InferInput("image", [1], "BYTES", data=[image])
    tensor = InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([image], dtype=object), binary_data=True)
    return tensor


def outputs(response: Any) -> dict[str, Any]:
    return {o.name: o.as_numpy() for o in response.outputs}


async def observe_errors(infer: Any, model: str, half: str) -> dict[str, str]:
    bad_dtype = InferInput("image", [1], "FP32")
    bad_dtype.set_data_from_numpy(np.array([1.0], dtype=np.float32), binary_data=True)
    cases = {
        "unknown_model": ("no-such-model", [half_input()]),
        "bad_shape": (half, [half_input((2, 2))]),
        "bad_dtype": (model, [bad_dtype]),
    }
    seen = {}
    for case, (name, inputs) in cases.items():
        try:
            await infer(InferRequest(name, inputs))
            seen[case] = "no error"
        except httpx.HTTPStatusError as exc:
            seen[case] = str(exc.response.status_code)
        except grpc.aio.AioRpcError as exc:
            seen[case] = exc.code().name
    return seen


async def rest(args: Any, image: bytes) -> dict[str, Any]:
    base = f"http://{args.rest}"
    client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0))
    try:

        async def infer(request: InferRequest) -> Any:
            return await client.infer(base, request, model_name=request.model_name)

        binary = await infer(InferRequest(args.model, [image_input(image, typed=False)]))
        raw_pixels = InferInput("input", [1, 3, 224, 224], "FP32", data=pixels(image).tolist())
        wanted = [RequestedOutput("logits", parameters={"binary_data": False})]
        as_json = await infer(InferRequest(args.model, [raw_pixels], request_outputs=wanted))
        half = await infer(InferRequest(args.half, [half_input()]))
        return {
            "live": await client.is_server_live(base),
            "ready": await client.is_server_ready(base),
            "model_ready": await client.is_model_ready(base, args.model),
            "unknown_model_ready": await client.is_model_ready(base, "no-such-model"),
            "label": outputs(binary)["label"][0][0],
            "json_outputs": [o.name for o in as_json.outputs],
            "json_argmax": int(outputs(as_json)["logits"].argmax()),
            "fp16": outputs(half)["y"],
            "fp16_dtype": str(outputs(half)["y"].dtype),
            "errors": await observe_errors(infer, args.model, args.half),
        }
    finally:
        await client.close()


async def over_grpc(args: Any, image: bytes) -> dict[str, Any]:
    client = InferenceGRPCClient(args.grpc)
    try:
        typed = await client.infer(
            InferRequest(args.model, [image_input(image, typed=True)], request_id="k-1")
        )
        wanted = [RequestedOutput("class_index")]
        raw = await client.infer(
            InferRequest(args.model, [image_input(image, typed=False)], request_outputs=wanted)
        )
        half = await client.infer(InferRequest(args.half, [half_input()]))
        return {
            "live": await client.is_server_live(),
            "ready": await client.is_server_ready(),
            "model_ready": await client.is_model_ready(args.model),
            "label": outputs(typed)["label"][0][0],
            "id": typed.id,
            "requested_outputs": [o.name for o in raw.outputs],
            "class_index": int(outputs(raw)["class_index"][0][0]),
            "fp16": outputs(half)["y"],
            "fp16_dtype": str(outputs(half)["y"].dtype),
            "errors": await observe_errors(client.infer, args.model, args.half),
        }
    finally:
        await client.close()


async def main() -> None:
    args = arguments()
    image = open(args.image, "rb").read()  # noqa: SIM115, ASYNC230 - a short script
    report({"rest": await rest(args, image), "grpc": await over_grpc(args, image)})


if __name__ == "__main__":
    asyncio.run(main())
