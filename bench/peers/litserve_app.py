"""LitServe as its docs write a batched server: a LitAPI with batch/unbatch, its own dynamic
batching (max_batch_size 8, batch_timeout 10 ms, as performance-anchors.md measured)."""

from __future__ import annotations

import common
import litserve as ls


class Api(ls.LitAPI):
    def setup(self, device: str) -> None:
        self.session = common.session()

    def decode_request(self, request):  # type: ignore[no-untyped-def]
        if common.MODE == "image":
            return request["img"].file.read()  # multipart: LitServe passes the form
        return request["x"]

    def predict(self, batch):  # type: ignore[no-untyped-def]
        if common.MODE == "image":
            return common.classify(self.session, list(batch))
        return common.add(self.session, list(batch))

    def encode_response(self, output):  # type: ignore[no-untyped-def]
        return {"predictions": output} if common.MODE == "image" else {"y": output}


if __name__ == "__main__":
    server = ls.LitServer(Api(max_batch_size=8, batch_timeout=0.01), healthcheck_path="/health")
    server.run(port=common.PORT, host="127.0.0.1", generate_client_file=False)
