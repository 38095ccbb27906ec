"""Checks shared by the commands that run a model: one rule for each common option."""

from __future__ import annotations


def check_inference_options(*, device: str, precision: str = "fp32", batch_size: int | None = None, workers: int | None = None):
    """--batch-size (at least 1), --workers (0 to 256), --device (one this machine has) and
    --precision (fp16 only on a GPU), checked before any data or checkpoint is read; each
    failure is a UsageError naming its option. Returns the torch device."""
    from ..config import check_number
    from ..engine.device import check_precision, pick_device

    check_number("--batch-size", batch_size, 1, integer=True)
    check_number("--workers", workers, 0, 256, integer=True)
    dev = pick_device(device)
    check_precision(precision, dev)
    return dev


def check_file_output(option: str, path) -> None:
    """An output FILE that can be written: not an existing folder, and no part of its
    path is a file (checked before any work; None and "-" for stdout pass)."""
    from pathlib import Path

    from ..errors import UsageError

    if path is None or str(path) == "-":
        return
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{option} {path} is a folder; give the path of a file to write.")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"{option} {path}: {parent} is a file, so nothing can be written inside it.")
            break


def inference_workers(workers: int | None) -> int:
    """--workers of the commands that encode images (classify, encode, index): as given,
    else up to 4 DataLoader processes, leaving one core to the model."""
    import os

    return min(4, max(0, (os.cpu_count() or 1) - 1)) if workers is None else workers
