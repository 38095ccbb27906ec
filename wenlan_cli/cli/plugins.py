"""`wenlan plugins`: installed task plugins, their package and version, the commands each
adds, the datasets it reads and the metrics it reports, and failures."""

from __future__ import annotations

import typer


def plugins() -> None:
    """List the downstream tasks, built in and from plugins.

    Plugins are installed packages with a `wenlan.tasks` entry point."""
    from rich.console import Console
    from rich.table import Table

    from ..tasks import all_tasks, load_failures
    from .task_commands import commands_of

    table = Table(title="wenlan tasks", show_lines=True)
    for column in ("task", "commands", "datasets", "metrics"):
        table.add_column(column, overflow="fold")
    for task in all_tasks():
        try:
            commands = ", ".join(commands_of(task)) or "-"
        except Exception:  # recorded when the command line was built: printed below
            commands = "(failed)"
        about = f"{task.name}\n{task.kind}\n{task.package} {task.version}".rstrip()
        table.add_row(about, commands, ", ".join(task.datasets), ", ".join(task.metrics))
    console = Console()
    console.print(table)
    for failure in load_failures():
        Console(stderr=True, soft_wrap=True).print(f"plugin {failure}", markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    app.command("plugins")(plugins)
