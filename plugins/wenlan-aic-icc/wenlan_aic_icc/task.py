"""The `wenlan.tasks` entry point of this plugin: the AIC-ICC captioning task.

Imported whenever `wenlan` starts, so it stays light: the commands import torch and the
model code only when they run.
"""

from __future__ import annotations

from wenlan_cli.tasks import Task

from . import __version__

SERVES = ("finetune-caption",)


def add_commands(app) -> None:
    """Add `wenlan caption` and `wenlan score` to the command line."""
    from .commands import register

    register(app)


def run_command(command: str, args: list[str]) -> int:
    """Run a core command this task serves (`finetune-caption`) on its remaining arguments."""
    from .commands import run_finetune_caption

    if command not in SERVES:
        from wenlan_cli.errors import UsageError

        raise UsageError(f"the aic-icc task serves {', '.join(SERVES)}, not {command!r}.")
    return run_finetune_caption(args)


TASK = Task(
    name="aic-icc",
    kind="captioning",
    description="AIC-ICC Chinese image captioning: a Transformer decoder on BriVL's region features, official scoring.",
    serves=SERVES,
    datasets=("synth", "aic-icc", "brivl-jsonl", "jsonl", "csv"),
    metrics=("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "sacreBLEU"),
    add_commands=add_commands,
    run_command=run_command,
    package="wenlan-aic-icc",
    version=__version__,
)
