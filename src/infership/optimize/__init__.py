"""``infership optimize``: graph optimisation and int8 quantisation of ONNX models, checked
against the original on samples, written as a new model version."""

from __future__ import annotations

from infership.optimize.compare import Accuracy, Speed
from infership.optimize.job import Gates, OptimizeReport, optimize
from infership.optimize.transform import MODES, Mode

__all__ = [
    "MODES",
    "Accuracy",
    "Gates",
    "Mode",
    "OptimizeReport",
    "Speed",
    "optimize",
]
