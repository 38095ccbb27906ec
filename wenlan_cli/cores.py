"""How many CPU cores this process may use.

Kept apart from the modules that import torch, so that light commands (caption
scoring, which only starts worker processes) can size their pools without it.
"""

from __future__ import annotations

import os

__all__ = ["usable_cores"]


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1; all cores off Linux."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)
