"""The `wenlan` command line: one module per command, joined here.

`main()` turns the library's errors into one sentence on stderr and an exit code
(0 success, 1 a failed run, 2 bad usage); `--debug` shows the traceback instead.
"""

from __future__ import annotations

import os
import sys

import typer

from ..errors import WenlanError
from . import state

app = typer.Typer(
    name="wenlan",
    help="Train, evaluate and use BriVL, the Chinese image-text model of WenLan.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    # Markdown joins the lines of a docstring paragraph, so help text reflows to the terminal.
    rich_markup_mode="markdown",
)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks instead of one-line errors."),
) -> None:
    state.DEBUG = debug or os.environ.get("WENLAN_DEBUG") == "1"


def _register() -> None:
    from . import classify, convert, data, encode, eval_retrieval, index, models, plugins, pretrain, report, search

    for module in (pretrain, eval_retrieval, encode, index, search, classify, report, plugins, models):
        module.register(app)
    from . import serve

    serve.register(app)
    app.add_typer(data.app, name="data")
    app.add_typer(convert.app, name="convert")
    from . import export

    app.add_typer(export.app, name="export")


_register()


def build_command():
    """The core's commands, then those the installed tasks add (`task_commands.py`), then
    the `finetune-caption` placeholder if no task added that command; built per run so a
    task registered in the process is seen."""
    from . import finetune_caption
    from ..declared import flags_without_type
    from .task_commands import add_task_commands

    command = typer.main.get_command(app)
    add_task_commands(command)
    if finetune_caption.COMMAND not in command.commands:
        command.add_command(finetune_caption.placeholder(), finetune_caption.COMMAND)
    flags_without_type(command)
    return command


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (the console script exits with it)."""
    command = build_command()
    state.DEBUG = os.environ.get("WENLAN_DEBUG") == "1" or "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        result = command.main(args=argv, prog_name="wenlan", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except WenlanError as exc:
        if state.DEBUG:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return closed_pipe_exit()
    except (IsADirectoryError, NotADirectoryError, FileExistsError) as exc:
        if state.DEBUG:
            raise
        # A path that is a folder where a file is wanted, or the reverse.
        print(f"error: {exc.filename}: {exc.strerror.lower() if exc.strerror else exc}; check the path.", file=sys.stderr)
        return 2
    except Exception as exc:
        code = _click_outcome(exc)
        if code is not None:
            return code
        if state.DEBUG:
            raise
        print(f"error: {type(exc).__name__}: {exc} (run with --debug for the traceback)", file=sys.stderr)
        return 1


def closed_pipe_exit() -> int:
    """The reader of stdout went away (`wenlan encode ... | head -c 10`): stop silently with
    128 + SIGPIPE, as a Unix tool killed by the signal would. Python would print an error
    when it flushes stdout at exit, so stdout is pointed at /dev/null first."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout is not a file descriptor (tests capture it)
        pass
    return 141


def _click_outcome(exc: Exception) -> int | None:
    """Exit code of click's (or typer's bundled click's) control-flow exceptions:
    Exit, Abort and usage errors, which print their own message; None for others."""
    name = type(exc).__name__
    if name == "Exit" and isinstance(getattr(exc, "exit_code", None), int):
        return exc.exit_code
    if name == "Abort":
        print("Aborted.", file=sys.stderr)
        return 130
    if callable(getattr(exc, "show", None)) and isinstance(getattr(exc, "exit_code", None), int):
        exc.show()
        return exc.exit_code
    return None


def run() -> None:
    sys.exit(main())
