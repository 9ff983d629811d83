"""Plain FastAPI, as its tutorials write a model server: no batching, sync handlers run in
FastAPI's thread pool, the model loaded once at import."""

from __future__ import annotations

import common
import uvicorn
from fastapi import FastAPI, File, UploadFile
from pydantic import BaseModel

app = FastAPI()
session = common.session()


class AddRequest(BaseModel):
    x: list[float]


@app.get("/health")
def health() -> dict[str, bool]:
    return {"ok": True}


if common.MODE == "image":

    @app.post("/predict")
    def predict(img: UploadFile = File(...)) -> dict[str, object]:  # noqa: B008 - FastAPI's idiom
        return {"predictions": common.classify(session, [img.file.read()])}

else:

    @app.post("/add")
    def add(request: AddRequest) -> dict[str, object]:
        return {"y": common.add(session, [request.x])[0]}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=common.PORT, log_level="warning")
