"""Refuse output paths that would overwrite what a command reads.

One rule for every command: before any work, an output path is refused (UsageError,
exit 2, one sentence naming both options) when it

- is the same file or folder as one of the command's inputs (also through a symlink
  or a hard link: existing paths are compared with ``os.path.samefile``, and an
  existing output with several links is looked for inside the input folders),
- names the same path as another output of the same command, or
- lies inside an input folder the command reads (a dataset, an image folder, an
  index, a checkpoint).

A run directory (``--checkpoint RUN``, ``wenlan report RUN``) counts by what the run
wrote there: its checkpoint folders, its ``tensorboard`` folder and its record files
(`RUN_FILES`). Other files may be written beside them, such as the report's default
``RUN/report.html`` or captions next to a captioning run.

Each command lists its inputs with `file_input`, `folder_input`, `checkpoint_input`,
`run_input` or `path_input` and calls `check_outputs`; "-" (stdout) and None are
never checked.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError

__all__ = [
    "RUN_FILES",
    "Input",
    "check_outputs",
    "checkpoint_input",
    "file_input",
    "folder_input",
    "path_input",
    "run_input",
]

# Files a run directory holds about itself (pretrain and finetune-caption runs).
RUN_FILES = ("train_config.json", "metrics.jsonl", "recall.json", "scores.json")

@dataclass(frozen=True)
class Input:
    """One thing a command reads: `option` names it in messages ("--texts", "PATHS")."""

    option: str
    path: Path
    folder: bool  # outputs inside it are refused too
    within: Path | None = None  # the run directory this is part of, if any

    @property
    def what(self) -> str:
        return "folder" if self.folder else "file"

    def describe(self) -> str:
        if self.within is None:
            return f"{self.option} {self.path}"
        return f"{self.option} {self.within} (its {self.path.name})"


def file_input(option: str, path) -> list[Input]:
    """A file the command reads (nothing when `path` is None)."""
    return [] if path is None else [Input(option, Path(path), False)]


def folder_input(option: str, path) -> list[Input]:
    """A folder whose contents the command reads: a dataset, an image folder, an index."""
    return [] if path is None else [Input(option, Path(path), True)]


def path_input(option: str, path) -> list[Input]:
    """A file or a folder, as it is on disk (a missing path counts as a file)."""
    if path is None:
        return []
    return [Input(option, Path(path), os.path.isdir(path))]


def run_input(option: str, path) -> list[Input]:
    """A run directory: the folder itself, its record files, its checkpoint and tensorboard folders."""
    if path is None:
        return []
    run = Path(path)
    found = [Input(option, run, False)]
    try:
        entries = sorted(os.scandir(run), key=lambda e: e.name)
    except OSError:
        return found
    for entry in entries:
        child = run / entry.name
        if entry.name in RUN_FILES:
            found.append(Input(option, child, False, run))
        elif entry.is_dir() and (entry.name == "tensorboard" or (child / "config.json").is_file()):
            found.append(Input(option, child, True, run))
    return found


def checkpoint_input(option: str, path) -> list[Input]:
    """`--checkpoint`: a checkpoint folder (all of it is read), a run directory (see
    `run_input`) or a file (converted weights)."""
    if path is None:
        return []
    path = Path(path)
    if not path.is_dir():
        return file_input(option, path)
    if (path / "config.json").is_file():
        return folder_input(option, path)
    return run_input(option, path)


def _real(path: Path) -> Path:
    return Path(os.path.realpath(os.path.abspath(os.fspath(path))))


def _same(a: Path, b: Path) -> bool:
    if _real(a) == _real(b):
        return True
    try:
        return os.path.samefile(a, b)  # hard links, bind mounts
    except OSError:
        return False


def check_outputs(outputs: Sequence[tuple[str, object]], inputs: Iterable[Input]) -> None:
    """Raise UsageError for the first output that breaks the rule (see the module).

    `outputs` are (option, path) pairs; a None path or "-" (stdout) is skipped.
    """
    named = [(option, Path(path)) for option, path in outputs if path is not None and str(path) != "-"]
    inputs = list(inputs)
    for i, (option, path) in enumerate(named):
        for other_option, other in named[:i]:
            if _same(path, other):
                raise UsageError(
                    f"{other_option} {other} and {option} {path} name the same file; give them different paths."
                )
        real = _real(path)
        for item in inputs:
            if _same(path, item.path):
                raise UsageError(
                    f"{option} {path} would overwrite the {item.what} {item.describe()}, which this command "
                    "reads; choose another path."
                )
            if item.folder and _real(item.path) in real.parents:
                raise UsageError(
                    f"{option} {path} lies inside the folder {item.describe()}, which this command reads; "
                    "write it outside that folder."
                )
            twin = _hard_link_inside(path, item.path) if item.folder else None
            if twin is not None:
                raise UsageError(
                    f"{option} {path} is a hard link to {twin} in the folder {item.describe()}, which this "
                    "command reads; choose another path."
                )


def _hard_link_inside(path: Path, folder: Path) -> Path | None:
    """A file under `folder` that is the same file as `path` by a hard link, if any. Only
    an existing file with more than one link is looked for, so the walk is rare."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(info.st_mode) or info.st_nlink < 2:
        return None
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            candidate = os.path.join(dirpath, name)
            try:
                other = os.stat(candidate)
            except OSError:
                continue
            if (other.st_dev, other.st_ino) == (info.st_dev, info.st_ino):
                return Path(candidate)
    return None
