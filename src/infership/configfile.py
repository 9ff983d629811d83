"""Reading a YAML settings file into a pydantic model, with errors that name file and field."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from infership.errors import ConfigError
from infership.safeyaml import read_yaml

M = TypeVar("M", bound=BaseModel)


def load_yaml(path: Path, model: type[M]) -> M:
    """Parse ``path`` and validate it as ``model``. Raises ConfigError, e.g.
    ``keys.yaml: field 'keys.0.scopes.0': Input should be 'infer', 'metrics' or 'admin'``."""
    raw: Any = read_yaml(path)  # bounded and plain: keys.yaml is re-read while serving
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, got {type(raw).__name__}")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {describe(exc)}") from exc


def describe(exc: ValidationError) -> str:
    """Every problem of ``exc`` as ``field 'a.b': message``, joined with "; "."""
    problems = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"]) or "(top level)"
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        problems.append(f"field '{where}': {message}")
    return "; ".join(problems)
