"""JSON as ncollapse writes it, to files and to ``--json`` output: strict JSON (RFC 8259).

Python's ``json`` writes a non-finite float as ``NaN`` or ``Infinity``, which strict parsers
(``jq``, JavaScript, most other languages) refuse. Here every NaN or infinity becomes ``null``,
NumPy and PyTorch values become plain numbers and lists, tuples become lists and mapping keys
strings, so a record can be read back by anything.
"""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["dumps", "jsonable"]


def jsonable(value: Any) -> Any:
    """``value`` with NaN and infinities as None, arrays, tensors and NumPy scalars as Python
    lists and numbers (their ``tolist()``), tuples as lists and mapping keys as strings; any
    other object is returned as it is (``json.dumps``'s ``default`` decides about it)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    tolist = getattr(value, "tolist", None)
    if callable(tolist) and not isinstance(value, (str, bytes)):
        return jsonable(tolist())
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`jsonable` ``(value)``, refusing anything non-finite that is
    left (``allow_nan=False``); ``kwargs`` go to ``json.dumps`` (``indent``, ``default``...)."""
    return json.dumps(jsonable(value), allow_nan=False, **kwargs)
