"""`wenlan finetune-caption` while no task plugin adds it: says which package to install.

The real command belongs to the AIC-ICC captioning plugin (plugins/wenlan-aic-icc), which
adds it through the task hook like its `caption` and `score`. The core lists this
placeholder in `wenlan --help` only when no installed task added the name
(`cli/__init__.py`), so the command is never missing without an explanation.
"""

from __future__ import annotations

import typer

from ..errors import UsageError

COMMAND = "finetune-caption"
PLUGIN_HINT = "install the AIC-ICC captioning plugin: pip install wenlan-aic-icc (from a checkout: pip install -e plugins/wenlan-aic-icc)"


def _broken_plugins() -> str:
    from ..tasks import load_failures

    broken = "; ".join(str(f) for f in load_failures())
    return f" Broken plugins: {broken}" if broken else ""


def finetune_caption(ctx: typer.Context) -> None:
    """Fine-tune a captioner on a pretrain checkpoint (needs the wenlan-aic-icc plugin).

    With the plugin installed, `wenlan finetune-caption --help` lists its options."""
    args = list(ctx.args)
    if not args or args in (["--help"], ["-h"]):
        typer.echo(ctx.get_help())
        typer.echo(f"\nNo installed task adds {COMMAND}; {PLUGIN_HINT}.{_broken_plugins()}")
        raise typer.Exit(2 if not args else 0)
    raise UsageError(f"{COMMAND} needs a captioning task plugin and none is installed; {PLUGIN_HINT}.{_broken_plugins()}")


def placeholder():
    """The click command standing in for `finetune-caption` (any arguments accepted)."""
    from .task_commands import new_app

    app = new_app()
    app.command(
        COMMAND,
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        add_help_option=False,
    )(finetune_caption)
    return typer.main.get_group(app).commands[COMMAND]
