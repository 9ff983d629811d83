"""UTF-8 strings → token ids and attention mask, as model.yaml's ``preprocess.text`` says.

Tokenisation is the Hugging Face ``tokenizers`` library (Rust; it releases the GIL), reading the
``tokenizer.json`` shipped in the model version folder, so the server tokenises exactly as the
model was trained. Runs in the pre-processing thread pool.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from infership.errors import ConfigError, InvalidRequest
from infership.processing.base import Preprocessor, encoded_items
from infership.repository.manifest import TextPreprocess
from infership.types import Array, TensorSpec


class TextPreprocessor(Preprocessor):
    """Tokenises a batch of texts for one model.

    >>> pre = TextPreprocessor(config, Path("1/tokenizer.json"))
    >>> pre.batch([b"A man is eating food."])["input_ids"].shape
    (1, 16)
    """

    def __init__(self, config: TextPreprocess, tokenizer_path: Path) -> None:
        self.config = config
        self.takes = (TensorSpec(config.public_input, "BYTES", (-1,)),)
        try:
            # Imported here, not at the top: text models are an extra, and the image and
            # server must start without it.
            from tokenizers import Tokenizer
        except ImportError:
            raise ConfigError(
                f"{tokenizer_path}: field 'preprocess.text' needs the tokenizers library: "
                "pip install 'infership[text]'"
            ) from None
        try:
            tokenizer = Tokenizer.from_file(str(tokenizer_path))
        except Exception as exc:  # tokenizers raises plain Exception for unreadable files
            raise ConfigError(
                f"{tokenizer_path}: field 'preprocess.text.tokenizer': not a tokenizers file: {exc}"
            ) from exc
        padding = tokenizer.padding or {}
        pad_token = padding.get("pad_token", "[PAD]")
        pad_id = padding.get("pad_id", tokenizer.token_to_id(pad_token))
        if pad_id is None:
            raise ConfigError(
                f"{tokenizer_path}: the tokenizer has no padding token ({pad_token!r} is unknown)"
            )
        tokenizer.enable_truncation(max_length=config.max_length)
        # Pad to the longest text of the request, not to a fixed length: short texts stay cheap.
        tokenizer.enable_padding(
            pad_id=pad_id, pad_token=pad_token, pad_to_multiple_of=config.pad_to_multiple_of
        )
        self._tokenizer = tokenizer
        optional = (config.attention_mask, config.token_type_ids)
        self.feeds = (config.input_ids, *(name for name in optional if name is not None))

    def check(self, inputs: Mapping[str, Array], max_rows: int, owner: str) -> None:
        name = self.config.public_input
        encoded_items(name, inputs[name], max_rows, "texts", owner)

    def __call__(self, inputs: dict[str, Array]) -> dict[str, Array]:
        name = self.config.public_input
        return self.batch(encoded_items(name, inputs[name], len(inputs[name]), "texts"))

    def batch(self, texts: Sequence[bytes | str]) -> dict[str, Array]:
        """Tokenise texts into INT64 [n, sequence] arrays, one per entry of ``feeds``."""
        strings = [_text(t, i) for i, t in enumerate(texts)]
        encodings = self._tokenizer.encode_batch(strings)
        c = self.config
        out: dict[str, Array] = {c.input_ids: np.array([e.ids for e in encodings], dtype=np.int64)}
        if c.attention_mask is not None:
            out[c.attention_mask] = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        if c.token_type_ids is not None:
            out[c.token_type_ids] = np.array([e.type_ids for e in encodings], dtype=np.int64)
        return out


def _text(value: bytes | str, index: int) -> str:
    if isinstance(value, str):
        return value
    if not isinstance(value, bytes):
        raise InvalidRequest(f"text {index}: expected a string, got {type(value).__name__}")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(f"text {index}: not valid UTF-8: {exc.reason} at {exc.start}") from exc
