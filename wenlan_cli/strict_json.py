"""Strict JSON for the files other tools read (metrics.jsonl, recall.json).

Python's json writes NaN and infinities as the bare words NaN / Infinity, which are not
JSON: jq, JavaScript and most readers reject the whole file. A non-finite number is
written as null instead (a missing measurement), so every line stays parseable.
"""

from __future__ import annotations

import json
import math
from typing import Any


def finite_or_null(value: Any) -> Any:
    """`value` with every NaN or infinite float (at any depth) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_null(v) for v in value]
    return value


def dumps(value: Any, **options) -> str:
    """json.dumps of `value` with non-finite numbers as null; never writes NaN/Infinity."""
    return json.dumps(finite_or_null(value), allow_nan=False, **options)
