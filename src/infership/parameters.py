"""Request parameters that both protocols honour, each read by one function, so that REST and
gRPC accept and refuse exactly the same values."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Final

from infership.errors import InvalidRequest
from infership.types import Parameter

TIMEOUT_REFUSED: Final = "parameter 'timeout' must be a non-negative number of microseconds"


def timeout_us(parameters: Mapping[str, Parameter]) -> float | None:
    """Triton's ``timeout`` request parameter, in microseconds; None when absent or 0 (the
    model's default applies). Raises InvalidRequest for a string, a bool, a negative number,
    NaN or infinity (JSON cannot carry the last two, gRPC's ``double_param`` can).

    >>> timeout_us({"timeout": 2500}), timeout_us({})
    (2500, None)
    """
    value = parameters.get("timeout")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest(TIMEOUT_REFUSED)
    if not (math.isfinite(value) and value >= 0):
        raise InvalidRequest(TIMEOUT_REFUSED)
    return value or None
