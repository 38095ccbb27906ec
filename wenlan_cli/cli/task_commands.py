"""The commands task plugins add, joined to the core's on every run of `wenlan`.

A task's one hook is `add_commands(app)` (`tasks.py` `Task`): it adds Typer commands to an
app of its own, made here with the core app's settings, and each of them becomes a
command of `wenlan`. The join happens per run, not at import, so a task registered in
the process (a test's, or one loaded late) is seen. A task whose hook fails, or that
adds a name `wenlan` already has, is reported by `wenlan plugins` and the rest still
work; a name two tasks add runs as a usage error naming both, so neither is chosen by
the order the plugins happened to load in.
"""

from __future__ import annotations

import typer


def new_app() -> typer.Typer:
    """An empty app with the core's settings (markdown help, -h), for one task's hook."""
    return typer.Typer(
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode="markdown",
        context_settings={"help_option_names": ["-h", "--help"]},
    )


def commands_of(task) -> dict:
    """Name -> click command of every command `task.add_commands` adds (none without a hook).
    Raises whatever the hook raises."""
    if getattr(task, "add_commands", None) is None:
        return {}
    app = new_app()
    task.add_commands(app)
    return dict(typer.main.get_group(app).commands)


def _conflict(name: str, owners: list) -> typer.core.TyperCommand:
    """A command that refuses to run because several installed tasks add `name`."""
    from ..errors import UsageError

    who = ", ".join(f"{t.name} ({t.package})" for t in owners)

    def refuse() -> None:
        raise UsageError(f"several installed tasks add the command {name}: {who}; uninstall all but one of their packages.")

    app = new_app()
    app.command(name, help=f"Added by several tasks ({who}): uninstall all but one.",
                context_settings={"allow_extra_args": True, "ignore_unknown_options": True}, add_help_option=False)(refuse)
    return typer.main.get_group(app).commands[name]


def add_task_commands(group) -> None:
    """Add every installed task's commands to the core's click `group`. Failures are
    recorded for `wenlan plugins`, never raised."""
    from ..tasks import all_tasks, record_failure

    core = set(group.commands)
    owners: dict[str, list] = {}
    for task in all_tasks():
        try:
            commands = commands_of(task)
        except Exception as exc:  # a broken plugin must not break the CLI
            record_failure(task, "could not add its commands", f"{type(exc).__name__}: {exc}")
            continue
        for name, command in commands.items():
            if name in core:
                record_failure(task, "adds a command wenlan already has", f"{name} (left out)")
                continue
            owners.setdefault(name, []).append(task)
            group.add_command(command if len(owners[name]) == 1 else _conflict(name, owners[name]), name)
