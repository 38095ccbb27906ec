"""`wenlan finetune-caption`: hands over to the installed captioning task plugin."""

from __future__ import annotations

import typer

from ..errors import UsageError

COMMAND = "finetune-caption"
PLUGIN_HINT = "install the AIC-ICC captioning plugin: pip install wenlan-aic-icc (from a checkout: pip install -e plugins/wenlan-aic-icc)"


def pop_option(args: list[str], name: str) -> tuple[str | None, list[str]]:
    """The value of `name VALUE` / `name=VALUE` in `args`, and the other arguments."""
    value, rest, i = None, [], 0
    while i < len(args):
        arg = args[i]
        if arg == name:
            if i + 1 >= len(args):
                raise UsageError(f"option {name} needs a value.")
            value = args[i + 1]
            i += 2
            continue
        if arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
        else:
            rest.append(arg)
        i += 1
    return value, rest


def choose_task(command: str, name: str | None):
    from ..tasks import load_failures, tasks_serving

    tasks = tasks_serving(command)
    if name is not None:
        for task in tasks:
            if task.name == name:
                return task
        failed = [f for f in load_failures() if f.entry_point == name]
        if failed:
            raise UsageError(f"the task plugin {name!r} ({failed[0].package}) failed to load: {failed[0].error}")
        known = ", ".join(t.name for t in tasks) or "none installed"
        raise UsageError(f"no task named {name!r} serves {command} (available: {known}).")
    if not tasks:
        broken = "; ".join(f"{f.entry_point} ({f.package}) failed to load: {f.error}" for f in load_failures())
        raise UsageError(f"{command} needs a captioning task plugin and none is installed; {PLUGIN_HINT}." + (f" Broken plugins: {broken}" if broken else ""))
    if len(tasks) > 1:
        raise UsageError(f"several tasks serve {command} ({', '.join(t.name for t in tasks)}); choose one with --task NAME.")
    return tasks[0]


def finetune_caption(ctx: typer.Context) -> None:
    """Fine-tune a captioner on a pretrain checkpoint (a plugin).

    Options: --task NAME (default: the one installed captioning task); everything else
    goes to the task: run `wenlan finetune-caption --help` with the plugin installed.
    """
    name, rest = pop_option(list(ctx.args), "--task")
    if not rest or rest == ["--help"] or rest == ["-h"]:
        from ..tasks import tasks_serving

        if not tasks_serving(COMMAND) and name is None:
            typer.echo(ctx.get_help())
            typer.echo(f"\nNo captioning task is installed; {PLUGIN_HINT}.")
            raise typer.Exit(2 if not rest else 0)
    task = choose_task(COMMAND, name)
    code = task.run_command(COMMAND, rest)
    raise typer.Exit(code or 0)


def register(app: typer.Typer) -> None:
    app.command(
        COMMAND,
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        add_help_option=False,
    )(finetune_caption)
