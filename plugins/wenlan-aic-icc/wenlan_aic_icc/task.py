"""The `wenlan.tasks` entry point of this plugin: the AIC-ICC captioning task.

Imported whenever `wenlan` starts, so it stays light: the commands import torch and the
model code only when they run. Like any task, it reaches the core only through
`wenlan_cli.plugin_api` and joins the command line through one hook, `add_commands`.
"""

from __future__ import annotations

from wenlan_cli.plugin_api import Task

from . import __version__


def add_commands(app) -> None:
    """Add `wenlan finetune-caption`, `wenlan caption` and `wenlan score` to the command line."""
    from .commands import register

    register(app)


TASK = Task(
    name="aic-icc",
    kind="captioning",
    description="AIC-ICC Chinese image captioning: a Transformer decoder on BriVL's region features, official scoring.",
    datasets=("synth", "aic-icc", "brivl-jsonl", "jsonl", "csv", "webdataset"),
    metrics=("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "sacreBLEU"),
    add_commands=add_commands,
    package="wenlan-aic-icc",
    version=__version__,
)
