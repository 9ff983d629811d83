"""The checked-in generated code is what scripts/generate_grpc.py makes from the .proto."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).parents[3]


def test_generated_code_matches_the_proto(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location(
        "generate_grpc", ROOT / "scripts/generate_grpc.py"
    )
    assert spec is not None
    assert spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)

    fresh = script.generate(tmp_path)
    assert [p.name for p in fresh] == [
        "grpc_service_pb2.py",
        "grpc_service_pb2.pyi",
        "grpc_service_pb2_grpc.py",
        "health_pb2.py",
        "health_pb2.pyi",
        "health_pb2_grpc.py",
    ]
    checked_in = ROOT / "src" / script.PACKAGE
    for path in fresh:
        assert path.read_text() == (checked_in / path.name).read_text(), (
            f"{path.name} is stale; run scripts/generate_grpc.py"
        )
