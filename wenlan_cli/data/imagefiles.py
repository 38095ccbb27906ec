"""Finding image files under the paths a user gives (no torch, so the onnxruntime path
can use it too)."""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path

from ..errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


def collect_image_paths(paths: Sequence[str | Path], skipped: list[tuple[Path, str]] | None = None) -> list[Path]:
    """Image files as given, and folders searched recursively (sorted), without duplicates.
    The order is the row order of the embeddings.

    In a folder, symbolic links to folders are not followed (a link may loop or leave
    the folder), and entries that are not regular files (FIFOs, sockets, devices, broken
    or looping links) are never opened, as reading a FIFO would wait forever. Each of
    these is appended to `skipped`, when given, as (path, reason)."""
    found: list[Path] = []
    seen: set[Path] = set()
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise DataError(f"{path} does not exist.")
        if path.is_dir():
            files = sorted(_folder_images(path, skipped if skipped is not None else []))
        else:
            files = [path]
        for file in files:
            key = file.resolve()
            if key not in seen:
                seen.add(key)
                found.append(file)
    return found


def _folder_images(folder: Path, skipped: list[tuple[Path, str]]) -> list[Path]:
    found = []
    for root, dirs, names in os.walk(folder):  # does not enter symbolic links to folders
        base = Path(root)
        for name in sorted(dirs):
            if (base / name).is_symlink():
                skipped.append((base / name, "a symbolic link to a folder, not followed"))
        for name in names:
            entry = base / name
            if entry.is_file():
                if entry.suffix.lower() in IMAGE_SUFFIXES:
                    found.append(entry)
                continue
            skipped.append((entry, _not_a_file(entry)))
    skipped.sort()
    return found


def _not_a_file(entry: Path) -> str:
    """Why `entry`, found in a folder listing, is not read as an image."""
    if entry.is_symlink() and not entry.exists():
        return "a broken or looping symbolic link"
    try:
        mode = entry.stat().st_mode
    except OSError:
        return "unreadable"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe), not a regular file"
    if stat.S_ISSOCK(mode):
        return "a socket, not a regular file"
    return "not a regular file"
