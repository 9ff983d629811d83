"""What both tritonclient scripts share (they run in the tritonclient virtualenv)."""

from __future__ import annotations

import numpy as np
from tritonclient.utils import InferenceServerException

HALF = np.array([[1, 2, 3, 4]], dtype=np.float16)
"""The FP16 tensor sent to the test model (y = 2x)."""


def status(exc: BaseException) -> str:
    """The status tritonclient reports for a failed call: an HTTP code or a gRPC status name."""
    assert isinstance(exc, InferenceServerException), repr(exc)
    return str(exc.status())
