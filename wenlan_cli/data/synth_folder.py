"""`wenlan data synth OUT`: the synthetic dataset written whole or not at all.

The dataset is written into a temporary sibling folder (``.OUT.partial-<pid>``, marked
by `PARTIAL_MARKER`) and renamed to OUT only once every image and annotation file is
there, so a killed run never leaves a half dataset under OUT. What a killed run does
leave, its temporary folder, is removed by the next run into the same OUT (unless that
process still runs). A half dataset that an older version wrote straight into OUT (the
synthetic layout, with a split whose images are there but whose annotation file is
not) is recognised and replaced; any other non-empty OUT is refused.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from ..errors import UsageError
from .aic_icc import AIC_SPLITS

__all__ = ["PARTIAL_MARKER", "is_half_written", "write_synthetic_folder"]

PARTIAL_MARKER = ".wenlan-synth-partial"
_IMAGE_NAME = re.compile(r"^[0-9a-f]{40}\.jpg$")


def _partial_name(out_dir: Path, pid: int) -> Path:
    return out_dir.parent / f".{out_dir.name}.partial-{pid}"


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def remove_stale_partials(out_dir: Path) -> list[Path]:
    """Delete the temporary folders that killed runs into `out_dir` left (marked, process gone)."""
    removed = []
    prefix = f".{out_dir.name}.partial-"
    if not out_dir.parent.is_dir():
        return removed
    for candidate in out_dir.parent.iterdir():
        if not candidate.name.startswith(prefix) or not (candidate / PARTIAL_MARKER).is_file():
            continue
        pid = candidate.name[len(prefix):]
        if pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(candidate, ignore_errors=True)
            removed.append(candidate)
    return removed


def is_half_written(folder: Path) -> bool:
    """Whether `folder` holds a synthetic dataset that a killed run left unfinished: only
    the synthetic layout (release folders holding their image folder of generated
    ``<sha1>.jpg`` files and maybe their annotation file), and a split without its
    annotation file; or a folder still carrying `PARTIAL_MARKER`."""
    if (folder / PARTIAL_MARKER).is_file():
        return True
    layouts = {split.release: split for split in AIC_SPLITS.values()}
    unfinished = False
    entries = list(folder.iterdir())
    if not entries:
        return False
    for entry in entries:
        split = layouts.get(entry.name)
        if split is None or not entry.is_dir() or entry.is_symlink():
            return False
        for item in entry.iterdir():
            if item.name == split.annotations and item.is_file():
                continue
            if item.name != split.images or not item.is_dir() or item.is_symlink():
                return False
            if not all(_IMAGE_NAME.match(image.name) and image.is_file() for image in item.iterdir()):
                return False
        if not (entry / split.annotations).is_file():
            unfinished = True
    return unfinished


def write_synthetic_folder(out_dir: str | Path, *, progress=None, log=None, **settings) -> Path:
    """Write the synthetic dataset (`settings` as for `write_synthetic_dataset`) to
    `out_dir`, all of it or nothing. Raises UsageError when `out_dir` is a file or a
    non-empty folder that is not a half-written synthetic dataset; `log` hears about a
    half one being replaced."""
    from .synthetic import write_synthetic_dataset

    out_dir = Path(out_dir)
    replace = False
    if out_dir.is_symlink() or (out_dir.exists() and not out_dir.is_dir()):
        raise UsageError(f"{out_dir} exists and is not a folder; choose a new folder.")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not is_half_written(out_dir):
            raise UsageError(f"{out_dir} exists and is not empty; choose a new folder.")
        replace = True
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(out_dir)
    partial = _partial_name(out_dir, os.getpid())
    shutil.rmtree(partial, ignore_errors=True)
    try:
        partial.mkdir()
        (partial / PARTIAL_MARKER).write_text("written by `wenlan data synth`; incomplete until renamed\n")
        write_synthetic_dataset(partial, progress=progress, **settings)
        (partial / PARTIAL_MARKER).unlink()
        if replace:
            if log is not None:
                log(f"Replacing the half-written dataset in {out_dir} (a run that was stopped before it finished).")
            shutil.rmtree(out_dir)
        os.replace(partial, out_dir)  # onto a missing or an empty folder
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return out_dir
