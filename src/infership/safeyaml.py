"""Reading a YAML file the server is given (model.yaml, keys.yaml, settings): bounded, plain,
UTF-8.

``model.yaml`` is read again on every load through the repository API and ``keys.yaml``
whenever it changes, so whatever those files hold reaches the server while it serves. PyYAML's
``safe_load`` refuses code-running tags but not the rest of what a hostile or broken file can
do; here every one of these is a ConfigError
naming the file, never a crash or an exception nobody expected:

- over ``MAX_BYTES``, or not UTF-8 text;
- nested deeper than ``MAX_DEPTH`` (PyYAML's composer recurses: a few thousand ``[`` end in
  RecursionError), or more than ``MAX_NODES`` nodes once aliases are expanded (the "billion
  laughs": a few hundred bytes of anchors that validation would walk as billions of values);
- an alias inside the node it names (a cycle), a key given twice, a tag other than YAML's plain
  types (``!!python/object``), or a number Python will not convert (over 4300 digits).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from infership.errors import ConfigError

MAX_BYTES = 256 * 1024
"""A model.yaml is a few hundred bytes; this leaves room for 2,800 digests. The pure-Python
parser holds the GIL about a second for the worst 256 KiB (alias upon alias)."""
MAX_DEPTH = 32
"""model.yaml nests five levels at most (preprocess.image.mean.0)."""
MAX_NODES = 100_000
"""Values after alias expansion: what validation walks."""
_MERGE = "tag:yaml.org,2002:merge"


def read_yaml(path: Path) -> Any:
    """The document in ``path`` as plain Python values (None when empty). Raises ConfigError
    naming ``path`` and the problem; see the module docstring for what is refused."""
    text = _read_text(path)
    loader = None
    try:
        loader = _Loader(text)  # checks the characters first: a NUL is a ReaderError
        node = loader.get_single_node()
        if node is None:
            return None
        _measure(node, 1, {}, set())
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    except _Refused as exc:
        raise ConfigError(f"{path}: refused: {exc}") from exc
    except RecursionError as exc:  # a path PyYAML walks recursively that the limits missed
        raise ConfigError(f"{path}: refused: nested too deeply") from exc
    except ValueError as exc:  # int() of a 5000-digit number, and the like
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    finally:
        if loader is not None:
            loader.dispose()


def _read_text(path: Path) -> str:
    try:
        with path.open("rb") as stream:
            data = stream.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    except ValueError as exc:  # a NUL byte in the path
        raise ConfigError(f"{path}: cannot read: {exc}") from exc
    if len(data) > MAX_BYTES:
        raise ConfigError(f"{path}: refused: larger than {MAX_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start} "
            f"({exc.reason}); save the file as UTF-8"
        ) from exc


class _Refused(Exception):
    """A limit of this module, before any value is built."""


class _Loader(yaml.SafeLoader):
    """SafeLoader with a depth bound while composing and no duplicate keys while constructing.
    The pure-Python loader, not CSafeLoader: only it lets ``compose_node`` be bounded."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                line = self.peek_event().start_mark.line + 1  # type: ignore[no-untyped-call]
                raise _Refused(f"nested deeper than {MAX_DEPTH} levels (line {line})")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag == _MERGE:
                continue  # merge keys (<<) may override; non-scalar keys are refused below
            key = self.construct_object(key_node)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {_short(key)} given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def _measure(node: Node, level: int, sizes: dict[int, tuple[int, int]], open_: set[int]) -> int:
    """Expanded node count under ``node``; raises _Refused past the limits or on a cycle.
    ``sizes`` remembers (count, height) per node, so a node many aliases name is walked once."""
    if level > MAX_DEPTH:  # checked on the way down: this walk recurses too
        raise _Refused(f"nested deeper than {MAX_DEPTH} levels once aliases are expanded")
    key = id(node)
    if key in open_:
        raise _Refused("an alias refers to a node that contains it")
    if key in sizes:
        count, height = sizes[key]
    else:
        open_.add(key)
        children: list[Node] = []
        if isinstance(node, SequenceNode):
            children = list(node.value)
        elif isinstance(node, MappingNode):
            children = [part for pair in node.value for part in pair]
        count, height = 1, 1
        for child in children:
            count += _measure(child, level + 1, sizes, open_)
            height = max(height, 1 + sizes[id(child)][1])
            if count > MAX_NODES:
                break
        open_.discard(key)
        sizes[key] = (count, height)
    if count > MAX_NODES:
        raise _Refused(f"more than {MAX_NODES} values once aliases are expanded")
    if level - 1 + height > MAX_DEPTH:
        raise _Refused(f"nested deeper than {MAX_DEPTH} levels once aliases are expanded")
    return count


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
