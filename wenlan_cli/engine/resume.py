"""What `--resume` continues: the checkpoint's run, with only the options that may change.

A resumed run takes every option the command line (or --config file) does not give from
the checkpoint's own run, so `--resume auto --out RUN` continues RUN as it was. An option
given anew either applies and is announced (how long to train, how often to log, evaluate
or save, the device...) or, where the checkpoint's state depends on it (the data and its
order, the batch, the model, the loss, the optimiser's settings), must equal the
checkpoint's value; a different one is refused naming it, instead of being silently
ignored.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..config import ModelConfig, TrainConfig
from ..errors import UsageError

# Options the saved state depends on: a different value is refused.
FIXED = (
    "model", "dataset", "data_dir", "image_column", "text_column", "synth_train", "synth_val", "synth_test",
    "synth_seed", "batch_size", "accum_steps", "seed", "lr", "weight_decay",
    "queue_size", "momentum", "temperature", "loss", "mask_false_negatives",
)
# Compared with the checkpoint's model config (the run may have left them to the model's default).
MODEL_FIELDS = ("queue_size", "momentum", "temperature", "loss", "mask_false_negatives")
# This run's own: never taken from the checkpoint.
OWN = ("out", "resume")


def option(name: str) -> str:
    return "--" + name.replace("_", "-")


def _same(name: str, mine, theirs) -> bool:
    if name == "data_dir" and mine is not None and theirs is not None:
        return Path(mine).resolve() == Path(theirs).resolve()
    return mine == theirs


def reconcile(
    cfg: TrainConfig, explicit: set[str] | None, saved: dict, saved_model: ModelConfig, step: int,
) -> tuple[TrainConfig, list[str]]:
    """The config to resume with and the announcements of options that changed.

    `explicit` names the options given for this run (None: all of them, as when a library
    caller builds the whole TrainConfig). `saved` is the checkpoint's train_config,
    `saved_model` its model config, `step` its step. Raises UsageError naming every
    conflicting option, or a --steps that is not beyond `step`.
    """
    given = {f.name for f in dataclasses.fields(cfg)} if explicit is None else set(explicit)
    if "steps" in given and cfg.steps is not None and cfg.steps <= step:
        raise UsageError(
            f"--steps {cfg.steps} is not beyond the checkpoint's step {step}; give --steps above {step} "
            "to train further (--steps counts from the start of the run)."
        )
    inherited, conflicts, changed = {}, [], []
    for f in dataclasses.fields(cfg):
        name = f.name
        if name in OWN or name not in saved:
            continue
        mine = getattr(cfg, name)
        theirs = getattr(saved_model, name) if name in MODEL_FIELDS and hasattr(saved_model, name) else saved[name]
        if name not in given:
            inherited[name] = saved[name]
            continue
        if mine is None and name in MODEL_FIELDS:
            continue  # not given: the checkpoint's model config holds it
        if _same(name, mine, theirs):
            continue
        if name in FIXED:
            conflicts.append(f"{option(name)} {mine} (the checkpoint's run used {theirs})")
        else:
            changed.append(f"{option(name)} {mine} (was {theirs})")
    if conflicts:
        raise UsageError(
            f"the checkpoint's run differs in {'; '.join(conflicts)}; leave "
            f"{'this option' if len(conflicts) == 1 else 'these options'} out to continue that run, or drop --resume "
            "to start a new one."
        )
    return dataclasses.replace(cfg, **inherited), changed
