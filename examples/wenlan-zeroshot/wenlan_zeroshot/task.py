"""The `wenlan.tasks` entry point: imported whenever `wenlan` starts, so it imports only
the (lazy) plugin surface and this package's version; the command's module, and torch
with it, load when the command runs."""

from __future__ import annotations

from wenlan_cli.plugin_api import Task

from . import __version__


def add_commands(app) -> None:
    """The task hook: add `wenlan zeroshot-accuracy` to the command line."""
    from .commands import zeroshot_accuracy

    app.command("zeroshot-accuracy")(zeroshot_accuracy)


TASK = Task(
    name="zeroshot",
    kind="classification",
    description="Zero-shot classification top-1 / top-5 accuracy on a folder-per-label image set.",
    datasets=("folder-per-label",),
    metrics=("top1", "top5", "mean_class_top1"),
    add_commands=add_commands,
    package="wenlan-zeroshot",
    version=__version__,
)
