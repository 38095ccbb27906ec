"""What a command-line option says about a config field: its flag(s), help and help panel.

A command's options are declared once, as the fields of a config dataclass: the field
gives the name, type and default, `option(...)` adds what only the command line needs.
`wenlan_cli/declared.py` turns such a dataclass into a command's options and parses
them back into it; `--config` files and saved configs use the same fields. This module is
plain data (no Typer), so the base layer's configs can carry it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .errors import UsageError

# The key under which a field's `Option` sits in `dataclasses.Field.metadata`.
OPTION = "wenlan_option"


@dataclass(frozen=True)
class Option:
    """The command-line side of one config field.

    `flags`: the option's names ("--out", "-o"; "--x/--no-x" for an on/off pair); empty:
    `--field-name`. `cli_type`: what the command line parses when the field's own type is a
    union (`int | str` read as a str); `argument`: a positional argument instead of an
    option. `config_only`: the field has no option, only a `--config` key (a setting too
    rare for the help)."""

    help: str = ""
    panel: str | None = None
    flags: tuple[str, ...] = ()
    metavar: str | None = None
    cli_type: Any = None
    argument: bool = False
    config_only: bool = False
    # An environment variable that gives the value when the command line does not (a secret).
    envvar: str | None = None

    def names(self, field_name: str) -> tuple[str, ...]:
        """The option's flags as typed (`--batch-size` for `batch_size` unless told)."""
        return self.flags or ("--" + field_name.replace("_", "-"),)


def option(default: Any = dataclasses.MISSING, *flags: str, help: str = "", panel: str | None = None, **more: Any):
    """A dataclass field with a default and its option: `batch_size: int = option(64,
    help="Pairs per step.", panel="Optimisation")`. `more`: the other `Option` fields (a
    required field, with no default to put first, names its flags as `flags=(...)`)."""
    flags = tuple(more.pop("flags", flags))
    return dataclasses.field(default=default, metadata={OPTION: Option(help=help, panel=panel, flags=flags, **more)})


def option_of(field: dataclasses.Field) -> Option | None:
    """The `Option` a field was declared with, or None."""
    return field.metadata.get(OPTION)


# The options every command that runs a model shares, declared once.
def device_option(**more):
    """--device, checked by engine/device.py `pick_device`."""
    return option("auto", help="auto, cpu, cuda or cuda:N.", **more)


def precision_option(**more):
    """--precision, checked by `check_precision_name` (engine/device.py `check_precision`
    adds the device rule)."""
    return option("fp32", help="fp32, bf16 or fp16 (fp16 on a GPU only).", **more)


def inference_workers_option(**more):
    """--workers of the commands that encode images (classify, encode, index); None becomes
    cli/options.py `inference_workers` (up to 4)."""
    return option(None, help="DataLoader processes decoding images (default: up to 4).", **more)


PRECISIONS = ("fp32", "bf16", "fp16")


def check_precision_name(precision: str) -> None:
    """A --precision value is one of PRECISIONS. Here, without torch, so a config refuses a
    bad name before any model or device is touched; the same sentence everywhere."""
    if precision not in PRECISIONS:
        raise UsageError(f"--precision must be fp32, bf16 or fp16, not {precision!r}.")
