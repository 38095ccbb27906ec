"""How `--help` reads: a flag shows no value type, an argument reads as its name in capitals.

Typer's rich help prints a type beside every option, so flags (--help, --skip-bad,
--pretrained/--no-pretrained) read `<bool>` as if they took a value. A flag takes
none: its metavar is set to the empty string, which the help prints as nothing.
Arguments are named in capitals (IMAGES_DIR, RUN_DIR), as the commands' help texts
refer to them, instead of Typer's lower-case `{images_dir}`.
"""

from __future__ import annotations


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
