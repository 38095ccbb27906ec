"""A run directory that a failed start leaves behind is removed again.

A training start (`Trainer.run`: pretraining or a task's fine-tuning) that fails before
its first checkpoint (bad data, a usage error found late, out of memory, Ctrl-C while
loading) would otherwise leave an empty or config-only run directory that looks like a
run. `discard_failed_start` removes what
the failed start wrote when no checkpoint is in the directory: the whole folder when the
start created it, else only the entries that were not there before. A run that fails
after writing a checkpoint is left as it is (its checkpoint is the last good state).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from .checkpoint import is_checkpoint

__all__ = ["discard_failed_start", "holds_checkpoint"]


def holds_checkpoint(run_dir: Path) -> bool:
    """Whether any folder directly in `run_dir` is a complete checkpoint."""
    try:
        return any(entry.is_dir() and is_checkpoint(Path(entry.path)) for entry in os.scandir(run_dir))
    except OSError:
        return False


@contextlib.contextmanager
def discard_failed_start(run_dir: Path, enabled: bool = True):
    """Around a run's start and training; see the module. `enabled` is False on all
    but the main process of a distributed run."""
    run_dir = Path(run_dir)
    existed = run_dir.exists()
    before = set(os.listdir(run_dir)) if enabled and run_dir.is_dir() else set()
    try:
        yield
    except BaseException:
        if enabled and run_dir.is_dir() and not holds_checkpoint(run_dir):
            if not existed:
                shutil.rmtree(run_dir, ignore_errors=True)
            else:
                for name in set(os.listdir(run_dir)) - before:
                    path = run_dir / name
                    if path.is_dir() and not path.is_symlink():
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        with contextlib.suppress(OSError):
                            path.unlink()
        raise
