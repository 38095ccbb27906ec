"""Downstream-task plugins: discovered through the `wenlan.tasks` entry-point group.

A task is any object with the attributes of `Task` (a plugin may use the dataclass
itself, from `wenlan_cli.plugin_api`). Its one hook into the command line is
`add_commands(app)`: it adds its commands to the Typer app it is given, and the CLI
(`cli/task_commands.py`) joins them to the core's. Plugins are loaded lazily and one that
fails to import is remembered with its error instead of breaking the command line. The
built-in retrieval evaluation is registered through the same `register_task` a plugin's
entry point reaches.
"""

from __future__ import annotations

import importlib.metadata as metadata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

ENTRY_POINT_GROUP = "wenlan.tasks"


@dataclass
class Task:
    name: str
    kind: str  # "captioning", "retrieval", ...
    description: str = ""
    # Dataset formats it reads and metrics it reports (shown by `wenlan plugins`).
    datasets: Sequence[str] = ()
    metrics: Sequence[str] = ()
    # add_commands(app) adds the task's commands (e.g. `finetune-caption`, `caption`,
    # `score`) to the Typer app it is given, with `app.command(NAME)(function)`.
    add_commands: Callable | None = None
    package: str = "wenlan"
    version: str = ""


@dataclass
class TaskLoadFailure:
    entry_point: str
    package: str
    error: str
    problem: str = "failed to load"  # or, for a loaded task, what went wrong after

    def __str__(self) -> str:
        return f"{self.entry_point} ({self.package}) {self.problem}: {self.error}"


@dataclass
class _Registry:
    tasks: dict[str, Task] = field(default_factory=dict)
    failures: list[TaskLoadFailure] = field(default_factory=list)
    discovered: bool = False


_registry = _Registry()


def register_task(task: Task, *, replace: bool = False) -> Task:
    if task.name in _registry.tasks and not replace:
        raise ValueError(f"a task named {task.name!r} is already registered")
    _registry.tasks[task.name] = task
    return task


def unregister_task(name: str) -> None:
    _registry.tasks.pop(name, None)


def _entry_points():
    return metadata.entry_points(group=ENTRY_POINT_GROUP)


def discover_tasks(force: bool = False) -> None:
    """Load every installed `wenlan.tasks` entry point once; remember failures."""
    if _registry.discovered and not force:
        return
    _registry.discovered = True
    _registry.failures = []
    for ep in _entry_points():
        package = ep.dist.name if getattr(ep, "dist", None) is not None else ep.value.split(":")[0]
        version = ep.dist.version if getattr(ep, "dist", None) is not None else ""
        try:
            obj = ep.load()
            task = obj() if callable(obj) and not hasattr(obj, "name") else obj
            for attr in ("name", "kind"):
                if not isinstance(getattr(task, attr, None), str):
                    raise TypeError(f"the task object has no string attribute {attr!r}")
            if not getattr(task, "package", None) or task.package == "wenlan":
                task.package = package
            if not getattr(task, "version", None):
                task.version = version
            register_task(task, replace=True)
        except Exception as exc:  # a broken plugin must not break the CLI
            _registry.failures.append(TaskLoadFailure(ep.name, package, f"{type(exc).__name__}: {exc}"))


def all_tasks() -> list[Task]:
    discover_tasks()
    return sorted(_registry.tasks.values(), key=lambda t: t.name)


def load_failures() -> list[TaskLoadFailure]:
    discover_tasks()
    return list(_registry.failures)


def record_failure(task: Task, problem: str, error: str) -> None:
    """Remember that a loaded task failed later (in its `add_commands`), for `wenlan plugins`."""
    failure = TaskLoadFailure(task.name, task.package, error, problem)
    if failure not in _registry.failures:
        _registry.failures.append(failure)


def _builtin_retrieval() -> Task:
    from . import __version__

    return Task(
        name="retrieval",
        kind="retrieval",
        description="Image-text retrieval Recall@1/5/10 in both directions (built in: wenlan eval-retrieval).",
        # Written out (not data/sources.py dataset_names, which imports every reader at start-up);
        # tests/test_cli.py keeps it equal to that list.
        datasets=("synth", "aic-icc", "brivl-jsonl", "jsonl", "csv", "muge", "flickr30k-cn", "coco-cn", "webdataset"),
        metrics=("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "mean_recall"),
        package="wenlan",
        version=__version__,
    )


register_task(_builtin_retrieval())
