"""MLServer as its docs write a custom inference runtime: an ``MLModel`` with ``load`` and
``predict``, served by ``mlserver start`` on a model repository (``mlserver/image`` or
``mlserver/add``, one ``model-settings.json`` each) with its adaptive batching on
(max_batch_size 8, max_batch_time 10 ms, as performance-anchors.md measured) and its default of
one parallel inference worker process. The suite starts it (``common.request``); there is no
``__main__`` here."""

from __future__ import annotations

import common
import numpy as np
from mlserver import MLModel
from mlserver.codecs import Base64Codec, NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput


class Classifier(MLModel):
    """``image``: a BYTES tensor of JPEGs (base64 in OIP JSON) → top-5 ``label`` and
    ``probability``, as infership's example answers."""

    async def load(self) -> bool:
        self.session = common.session()
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        images = Base64Codec.decode_input(payload.inputs[0])
        rows = common.classify(self.session, images)
        shape = [len(rows), 5]
        labels = [p["label"] for row in rows for p in row]
        probabilities = [p["probability"] for row in rows for p in row]
        return InferenceResponse(model_name=self.name, outputs=[
            ResponseOutput(name="label", datatype="BYTES", shape=shape, data=labels),
            ResponseOutput(name="probability", datatype="FP32", shape=shape, data=probabilities),
        ])  # fmt: skip


class Adder(MLModel):
    """``add``: FP32 ``x`` [N, 16] → ``y`` = x + 1."""

    async def load(self) -> bool:
        self.session = common.session()
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32)
        (y,) = self.session.run(["y"], {"x": x})
        return InferenceResponse(model_name=self.name, outputs=[NumpyCodec.encode_output("y", y)])
