"""Durations written the way people write them on a command line: `90`, `90s`, `10m`, `1.5h`."""

from __future__ import annotations

import re

from .errors import UsageError

_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([smh]?)\s*$", re.IGNORECASE)


def parse_duration(value: str | float | int, option: str = "--time-budget") -> float:
    """Seconds in `value` (a number of seconds, or a number followed by s, m or h).

    `option` names the option in the error, so the user knows which value to fix."""
    if isinstance(value, bool):
        raise UsageError(f"{option} must be a duration such as 600, 90s, 10m or 1.5h, not {value!r}.")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _PATTERN.match(str(value))
        if not match:
            raise UsageError(f"{option} must be a duration such as 600, 90s, 10m or 1.5h, not {value!r}.")
        seconds = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if not seconds > 0:
        raise UsageError(f"{option} must be longer than 0 seconds, not {value!r}.")
    return seconds
