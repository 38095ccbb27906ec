"""Progress displays on stderr: the training loops' bar (pretraining and the task plugins')
and the counting bar every long command shows (classify, encode, index, data check/convert)."""

from __future__ import annotations

import time

__all__ = ["TrainingProgress", "counting_progress"]


class TrainingProgress:
    """A rich progress bar (loss, lr, throughput, ETA); plain log lines every 15 s when
    not on a terminal. `label` names the command, `unit` what the rate counts."""

    def __init__(
        self, total: int, console, *, start: int = 0, enabled: bool = True, label: str = "pretrain", unit: str = "pairs/s"
    ) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.enabled = enabled
        self.console = console
        self.total = total
        self.unit = unit
        self.terminal = console.is_terminal
        self.last_print = time.monotonic()
        self._progress = Progress(
            TextColumn(f"[bold]{label}[/bold]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}  lr {task.fields[lr]:.2e}  {task.fields[rate]:.0f} " + unit),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            disable=not (enabled and self.terminal),
        )
        self._task = self._progress.add_task(label, total=total, completed=start, loss=float("nan"), lr=0.0, rate=0.0)

    def __enter__(self):
        self._progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self._progress.__exit__(*exc)

    def set_total(self, total: int) -> None:
        """A new planned total (a time budget decides it after the first steps)."""
        if total != self.total:
            self.total = total
            self._progress.update(self._task, total=total)

    def update(self, step: int, loss: float, lr: float, rate: float) -> None:
        if not self.enabled:
            return
        self._progress.update(self._task, completed=step, loss=loss, lr=lr, rate=rate)
        if not self.terminal and (time.monotonic() - self.last_print > 15 or step == self.total):
            self.last_print = time.monotonic()
            self.console.print(f"step {step}/{self.total}  loss {loss:.4f}  lr {lr:.2e}  {rate:.0f} {self.unit}")


def counting_progress(label: str, console, *, disable: bool = False):
    """A transient bar (label, bar, done/total, time left), so finished work leaves only the
    command's own output behind. `label` may be "{task.description}" to name each task."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=console, transient=True, disable=disable)
