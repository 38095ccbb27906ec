"""The counting progress bar every long command shows on stderr (label, bar, done/total, time left)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


def counting_progress(label: str, console: Console, *, disable: bool = False) -> Progress:
    """A transient bar, so finished work leaves only the command's own output behind.
    `label` may be "{task.description}" to name each task separately."""
    return Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=console, transient=True, disable=disable)
