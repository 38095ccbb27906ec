"""Where and how a model runs: the torch device of a --device value, the precision check,
autocast, and torch's thread count beside DataLoader workers. Shared by training and
inference, so both refuse a bad --device or --precision with the same sentence."""

from __future__ import annotations

from contextlib import contextmanager

import torch

from ..cores import usable_cores
from ..errors import UsageError
from ..option_spec import check_precision_name


def pick_device(preference: str, local_rank: int = 0) -> torch.device:
    """The torch device of a --device value (auto, cpu, cuda or cuda:N); a name torch does
    not know, or a GPU this machine lacks, is a UsageError naming --device (raised before
    any model is built, instead of torch's driver or device-list error on first use)."""
    if preference == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(preference)
    except (RuntimeError, ValueError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise UsageError(f"--device must be auto, cpu, cuda or cuda:N, not {preference!r}.")
    if device.type == "cuda" and device.index is None:
        device = torch.device(f"cuda:{local_rank}")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UsageError(f"--device {preference} was asked for but no GPU is available; use --device cpu (or auto).")
        if device.index >= count:
            raise UsageError(f"--device {preference}: this machine has {count} GPU(s), cuda:0 to cuda:{count - 1}.")
    return device


def check_precision(precision: str, device: torch.device) -> None:
    """fp32, bf16 or fp16 (fp16 only on a GPU: CPU kernels lack it or are slow and inexact)."""
    check_precision_name(precision)
    if precision == "fp16" and device.type != "cuda":
        raise UsageError("--precision fp16 needs a GPU; use bf16 or fp32 on the CPU.")


def autocast_context(device: torch.device, precision: str):
    if precision == "fp32":
        return torch.autocast(device.type, enabled=False)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


@contextmanager
def threads_beside_workers(device: torch.device, workers: int):
    """On a CPU, cap torch's intra-op threads at (usable cores - `workers`), at least 1, while
    `workers` DataLoader processes decode beside them, then restore the setting. More
    runnable threads than cores stall torch's parallel regions, which wait for their slowest
    thread (benchmarks/encode.py compares the settings)."""
    before = torch.get_num_threads()
    cap = max(1, usable_cores() - workers)
    if device.type != "cpu" or workers <= 0 or cap >= before:
        yield
        return
    torch.set_num_threads(cap)
    try:
        yield
    finally:
        torch.set_num_threads(before)
