"""Commands whose options are the fields of config dataclasses, declared once.

A field gives an option its name (`batch_size` -> `--batch-size`), type and default; its
`option_spec.Option` (field metadata, or a mapping beside a dataclass owned elsewhere)
gives the flags, help and help panel. `declared_command` turns a function
`body(call, cfg, *more)` into a Typer command with one option per field (Typer reads the
generated `__signature__`), a `--config FILE` whose keys are the first dataclass's fields,
and builds the dataclasses back: defaults < the file < options given on the command line.
So `--help` shows the fields' own defaults, and a default shown there never overrides the
file: only what the command line gave does.

How `--help` reads (`flags_without_type`): Typer's rich help prints a type beside every
option, so flags (--help, --skip-bad, --pretrained/--no-pretrained) would read `<bool>` as
if they took a value; their metavar is blanked. Arguments are named in capitals
(IMAGES_DIR), as the commands' help texts refer to them.

The core's commands and a task plugin's (through `wenlan_cli.plugin_api`) both use this.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

from .option_spec import Option, option_of

CONFIG = "config"
CONFIG_HELP = "JSON or YAML file with any of these options (the command line wins)."


@dataclass
class Invocation:
    """One run of a declared command: what the command line and `--config` gave."""

    ctx: typer.Context
    config_file: Path | None = None
    # Keys of the --config file (underscored), as read.
    file_options: dict = field(default_factory=dict)
    # The config's options given on the command line (not their defaults), field -> value.
    given: dict = field(default_factory=dict)

    def explicit(self) -> set[str]:
        """Fields set by the file or the command line (a resume keeps the others)."""
        return set(self.file_options) | {k for k, v in self.given.items() if v is not None}


def declared_fields(cls, specs: dict[str, Option] | None = None) -> list[tuple[dataclasses.Field, Option]]:
    """Each field of `cls` with its Option: from `specs` (by field name) when given there,
    else the field's metadata. A field with neither is a TypeError for the developer: every
    field is an option or says `config_only`."""
    specs = specs or {}
    names = {f.name for f in dataclasses.fields(cls)}
    stray = sorted(set(specs) - names)
    if stray:
        raise TypeError(f"options {stray} name no field of {cls.__name__}.")
    found = []
    for f in dataclasses.fields(cls):
        spec = specs.get(f.name) or option_of(f)
        if spec is None:
            raise TypeError(f"{cls.__name__}.{f.name} declares no option; give it option(...) or Option(config_only=True).")
        found.append((f, spec))
    return found


def cli_type(cls, f: dataclasses.Field, spec: Option):
    """The type the command line parses for field `f`: its own, or `spec.cli_type` for a
    union (`int | str`), Optional when the field may be None."""
    hint = _type_hints(cls)[f.name]
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    members = typing.get_args(hint) if union else (hint,)
    real = [m for m in members if m is not type(None)]
    chosen = spec.cli_type or (real[0] if len(real) == 1 else None)
    if chosen is None:
        raise TypeError(f"{cls.__name__}.{f.name} is a union ({hint}); give Option(cli_type=...).")
    return Optional[chosen] if type(None) in members else chosen


@functools.cache
def _type_hints(cls) -> dict:
    """`cls`' resolved annotations, once per class: resolving them (strings under `from
    __future__ import annotations`) per field was most of the time a command took to build
    on every start of `wenlan`."""
    return typing.get_type_hints(cls)


def field_default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _parameter(cls, f: dataclasses.Field, spec: Option, *, file_may_give: bool) -> inspect.Parameter:
    annotation, default = cli_type(cls, f, spec), field_default(f)
    if default is dataclasses.MISSING:
        # Required: by click itself, unless a --config file may give it (then checked in
        # `config_from_call`); a required argument always comes from the command line.
        optional = file_may_give and not spec.argument
        annotation, default = (Optional[annotation], None) if optional else (annotation, inspect.Parameter.empty)
    extra = {"metavar": spec.metavar} if spec.metavar is not None else {}
    if spec.envvar is not None:
        extra["envvar"] = spec.envvar
    if spec.argument:
        info = typer.Argument(help=spec.help, rich_help_panel=spec.panel, show_default=False, **extra)
    else:
        info = typer.Option(*spec.flags, help=spec.help, rich_help_panel=spec.panel, **extra)
    return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[annotation, info], default=default)


def option_parameters(cls, specs=None, *, file_may_give: bool = False) -> list[inspect.Parameter]:
    """The Typer parameters of `cls`'s fields (config-only fields have none)."""
    return [_parameter(cls, f, spec, file_may_give=file_may_give) for f, spec in declared_fields(cls, specs) if not spec.config_only]


def declared_command(body: Callable, config_cls, *more, specs: dict[str, Option] | None = None,
                     config_panel: str | None = None, validate: bool = True) -> Callable:
    """A Typer command function over `body(call, cfg, *others)`.

    `config_cls`' fields are options and the keys of `--config FILE`; each class in `more`
    adds options the command line alone gives (a launcher's `--nproc`, never saved with the
    config). `specs`: the Options of `config_cls` when its fields carry none (a dataclass
    owned elsewhere). The body gets the built, validated dataclasses."""
    params = [
        inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context),
        inspect.Parameter(CONFIG, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
            Optional[Path], typer.Option("--config", help=CONFIG_HELP, rich_help_panel=config_panel)]),
        *option_parameters(config_cls, specs, file_may_give=True),
        *(p for cls in more for p in option_parameters(cls)),
    ]

    fields = {f.name for f in dataclasses.fields(config_cls)}

    def command(ctx: typer.Context, **values):
        given = {k: v for k, v in given_options(ctx, values).items() if k in fields}
        call = Invocation(ctx, values.pop(CONFIG), given=given)
        others = [build_cli_only(cls, values) for cls in more]
        if call.config_file is not None:
            from .config import load_config_file

            call.file_options = load_config_file(call.config_file)
        cfg = config_from_call(config_cls, call, specs, validate=validate)
        return body(call, cfg, *others)

    command.__signature__ = inspect.Signature(params)
    command.__doc__ = body.__doc__
    command.__name__ = command.__qualname__ = body.__name__
    command.__module__ = body.__module__
    command.declared = (config_cls, specs, more)
    return command


def given_options(ctx: typer.Context, values: dict) -> dict:
    """The options the command line gave (not their defaults, which --help shows)."""
    return {k: v for k, v in values.items() if ctx.get_parameter_source(k).name not in ("DEFAULT", "DEFAULT_MAP")}


def config_from_call(cls, call: Invocation, specs=None, *, validate: bool = True):
    """`cls` from its defaults < the --config file < the options given; a required field
    given by neither is click's own "Missing option" usage error."""
    cli = call.given
    for f, spec in declared_fields(cls, specs):
        if field_default(f) is dataclasses.MISSING and f.name not in call.file_options and cli.get(f.name) is None:
            call.ctx.fail(f"Missing option '{spec.names(f.name)[0]}'.")
    from .config import build_config

    where = str(call.config_file) if call.config_file is not None else "options"
    return build_config(cls, call.file_options, cli, where=where, validate=validate)


def build_cli_only(cls, values: dict):
    """A dataclass of command-line-only options from the parsed values, validated."""
    instance = cls(**{f.name: values[f.name] for f in dataclasses.fields(cls) if f.name in values})
    if hasattr(instance, "validate"):
        instance.validate()
    return instance


def declared_option_names(command: Callable) -> dict[str, str]:
    """Field name -> the class that declares it, for every option of a declared command
    (tests check each field has exactly one option)."""
    config_cls, specs, more = command.declared
    found = {f.name: config_cls.__name__ for f, spec in declared_fields(config_cls, specs) if not spec.config_only}
    for cls in more:
        found.update({f.name: cls.__name__ for f, spec in declared_fields(cls) if not spec.config_only})
    return found


def flags_without_type(command) -> None:
    """Blank the type column of every flag of `command` and its subcommands, the help
    option included (click creates that one per command and caches it)."""
    params = list(command.params)
    help_option = command.get_help_option(command.context_class(command))
    if help_option is not None:
        params.append(help_option)
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
        elif param.param_type_name == "argument" and param.metavar is None and param.name:
            param.metavar = param.name.upper()
    for sub in getattr(command, "commands", {}).values():
        flags_without_type(sub)
