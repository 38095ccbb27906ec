"""TensorBoard event files next to metrics.jsonl, when tensorboard is installed.

The training loop hands every metrics.jsonl entry to a `MetricsWriter`::

    writer = MetricsWriter(run_dir)      # costs nothing; nothing is imported yet
    writer.write({"step": 10, "loss": 5.1, "lr": 1e-3, "pairs_per_s": 120.0})
    writer.write({"step": 10, "split": "val", "t2i_r1": 4.2, ..., "mean_recall": 17.1})
    writer.close()

Training lines become ``train/<key>`` scalars and evaluation lines ``<split>/<key>``
(e.g. ``val/mean_recall``), at the entry's step; non-numeric values are skipped.
Without tensorboard (``torch.utils.tensorboard`` cannot be imported) every call does
nothing; tensorboard is the optional extra ``pip install 'wenlan[report]'``. Each
entry is flushed, so the event file is current while the run goes on and complete
if the process dies.
"""

from __future__ import annotations

import importlib
import numbers
import warnings
from pathlib import Path

__all__ = ["MetricsWriter", "tensorboard_available"]

_MODULE = "torch.utils.tensorboard"


def tensorboard_available() -> bool:
    """Whether ``torch.utils.tensorboard`` (hence the tensorboard package) imports."""
    try:
        importlib.import_module(_MODULE)
    except Exception:
        return False
    return True


class MetricsWriter:
    """Mirror metrics.jsonl entries into TensorBoard event files in `log_dir`.

    The SummaryWriter is created on the first `write` (so `log_dir` may not exist
    yet when this object is made, and `purge_step` may be set until then). `enabled=False`, or tensorboard missing, makes
    every method a no-op. A tensorboard that is installed but fails to start warns
    once and is then ignored: logging must never stop a training run.
    """

    def __init__(self, log_dir: str | Path, *, enabled: bool = True, purge_step: int | None = None) -> None:
        self.log_dir = Path(log_dir)
        self.enabled = enabled
        # A resumed run sets this (to the resume step + 1) before its first entry: events
        # the interrupted process wrote from that step on are then hidden by TensorBoard.
        self.purge_step = purge_step
        self._writer = None
        self._unavailable = not enabled

    @property
    def active(self) -> bool:
        """True once event files are being written."""
        return self._writer is not None

    def _open(self):
        if self._writer is not None or self._unavailable:
            return self._writer
        try:
            module = importlib.import_module(_MODULE)
            kwargs = {"purge_step": int(self.purge_step)} if self.purge_step is not None else {}
            self._writer = module.SummaryWriter(log_dir=str(self.log_dir), **kwargs)
        except ImportError:
            self._unavailable = True
        except Exception as exc:  # a broken install (protobuf versions...) must not stop training
            self._unavailable = True
            warnings.warn(f"TensorBoard logging is off: {type(exc).__name__}: {exc}", RuntimeWarning, stacklevel=3)
        return self._writer

    def write(self, entry: dict) -> None:
        """Log one metrics.jsonl entry (a dict with an integer ``step``)."""
        if self._unavailable:
            return
        step = entry.get("step")
        if isinstance(step, bool) or not isinstance(step, numbers.Integral):
            return
        writer = self._open()
        if writer is None:
            return
        prefix = str(entry["split"]) if "split" in entry else "train"
        try:
            for key, value in entry.items():
                if key in ("step", "split") or isinstance(value, bool) or not isinstance(value, numbers.Real):
                    continue
                writer.add_scalar(f"{prefix}/{key}", float(value), int(step))
            writer.flush()
        except Exception as exc:  # a full disk etc.: warn once, keep training
            self._unavailable = True
            warnings.warn(f"TensorBoard logging stopped: {type(exc).__name__}: {exc}", RuntimeWarning, stacklevel=2)

    def close(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            finally:
                self._writer = None

    def __enter__(self) -> "MetricsWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
