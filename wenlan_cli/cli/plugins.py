"""`wenlan plugins`: installed task plugins, their package and version, and failures."""

from __future__ import annotations

import typer


def plugins() -> None:
    """List the downstream tasks, built in and from plugins.

    Plugins are installed packages with a `wenlan.tasks` entry point."""
    from rich.console import Console
    from rich.table import Table

    from ..tasks import all_tasks, load_failures

    table = Table(title="wenlan tasks")
    for column in ("task", "kind", "package", "version", "commands", "metrics"):
        table.add_column(column)
    for task in all_tasks():
        table.add_row(task.name, task.kind, task.package, task.version, ", ".join(task.serves), ", ".join(task.metrics))
    console = Console()
    console.print(table)
    for failure in load_failures():
        Console(stderr=True).print(f"[red]plugin {failure.entry_point} ({failure.package}) failed to load:[/red] {failure.error}")


def register(app: typer.Typer) -> None:
    app.command("plugins")(plugins)
