"""Learning-rate schedule: linear warm-up, then cosine decay to a floor."""

from __future__ import annotations

import math

from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine(step: int, warmup: int, total: int, floor: float = 0.01) -> float:
    """Multiplier of the peak learning rate at `step` (0-based)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine_scheduler(optimizer, warmup: int, total: int, floor: float = 0.01) -> LambdaLR:
    return LambdaLR(optimizer, lambda step: warmup_cosine(step, warmup, total, floor))
