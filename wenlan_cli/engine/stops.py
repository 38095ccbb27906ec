"""Why a training loop stops before its planned end: a signal, `--max-time`, or a value
gone NaN or infinite.

A signal or the time limit ends the run cleanly at the next step boundary (the trainer
then writes a checkpoint to resume from); a non-finite loss, learning rate or parameter
ends it with an error, before any checkpoint holding that state can be written.
"""

from __future__ import annotations

import math
import signal
import time

import torch

__all__ = ["StopRequest", "non_finite_state", "requested_stop"]


class StopRequest:
    """SIGINT / SIGTERM set a flag; the loop checkpoints at the next step boundary.
    A second SIGINT interrupts at once."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


def requested_stop(stop: StopRequest, started: float, max_time: float | None) -> str | None:
    """The name of the signal received, "max-time" once `max_time` seconds have passed
    since `started` (a `time.monotonic()` reading), else None."""
    if stop.signal is not None:
        return signal.Signals(stop.signal).name
    if max_time is not None and time.monotonic() - started >= max_time:
        return "max-time"
    return None


def non_finite_state(loss: float, lr: float, model: torch.nn.Module | None) -> str | None:
    """What went NaN or infinite after a step: the loss, the learning rate or (when `model`
    is given: at logged and saved steps, as the check costs a pass over every parameter) a
    parameter; else None. The largest magnitude of all parameters is NaN or infinite exactly
    when one of them is."""
    if not math.isfinite(loss):
        return f"the loss became {loss}"
    if not math.isfinite(lr):
        return f"the learning rate became {lr}"
    if model is None:
        return None
    params = [p.detach() for p in model.parameters() if p.is_floating_point()]
    if params and not math.isfinite(float(torch.nn.utils.get_total_norm(params, norm_type=math.inf))):
        name = next(n for n, p in model.named_parameters() if p.is_floating_point() and not bool(torch.isfinite(p).all()))
        return f"the parameter {name} became non-finite"
    return None
