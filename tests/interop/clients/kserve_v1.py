"""kserve's InferenceRESTClient speaking the v1 protocol (TF Serving's REST API) to a live
server; prints what it observed."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import httpx
from _observe import arguments, report
from kserve import InferenceRESTClient, RESTConfig


async def observe(base: str, model: str, image: bytes) -> dict[str, Any]:
    client = InferenceRESTClient(RESTConfig(protocol="v1"))
    seen: dict[str, Any] = {
        "live": await client.is_server_live(base),
        "model_ready": await client.is_model_ready(base, model),
    }
    encoded = base64.b64encode(image).decode()
    answer = await client.infer(base, {"instances": [{"image": {"b64": encoded}}]}, model)
    seen["label"] = answer["predictions"][0]["label"][0]
    seen["class_index"] = answer["predictions"][0]["class_index"][0]
    columns = await client.infer(base, {"inputs": [{"b64": encoded}, {"b64": encoded}]}, model)
    seen["columns"] = columns["outputs"]["class_index"][1][0]
    errors = {
        "unknown_model": ("no-such-model", {"instances": [{"b64": encoded}]}),
        "not_an_image": (model, {"instances": [{"b64": "bm90IGFuIGltYWdl"}]}),
        "not_base64": (model, {"instances": [{"b64": "***"}]}),
    }
    seen["errors"] = {}
    for case, (name, body) in errors.items():
        try:
            await client.infer(base, body, name)
            seen["errors"][case] = "no error"
        except httpx.HTTPStatusError as exc:
            seen["errors"][case] = [exc.response.status_code, str(exc)]
    try:
        await client.is_model_ready(base, "no-such-model")
        seen["unknown_model_ready"] = "no error"
    except httpx.HTTPStatusError as exc:
        seen["unknown_model_ready"] = exc.response.status_code
    await client.close()
    return seen


def main() -> None:
    args = arguments()
    with open(args.image, "rb") as file:
        image = file.read()
    report(asyncio.run(observe(f"http://{args.rest}", args.model, image)))


if __name__ == "__main__":
    main()
