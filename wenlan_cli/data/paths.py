"""Keep image paths named by annotation files inside their dataset folder.

An annotation file is data, not code: a value such as ``../../etc/passwd`` or
``/home/user/secret.jpg``, or a symlink in the image folder that points
elsewhere, must not make the toolkit read files outside the dataset.
"""

from __future__ import annotations

import os
import posixpath
import re
import stat
from collections.abc import Callable, Sequence
from pathlib import Path

from wenlan_cli.errors import DataError, UsageError

__all__ = ["InsideResolver", "check_image_files", "resolve_inside", "split_file"]

# Longest value quoted back in an error message.
_QUOTE_LIMIT = 80


def quote_value(value: object) -> str:
    """`repr` of a value, shortened so that a huge field cannot flood an error message."""
    text = repr(value)
    if len(text) > _QUOTE_LIMIT:
        text = text[: _QUOTE_LIMIT - 3] + "..."
    return text


def resolve_inside(root: Path, relative: str, source: str) -> Path:
    """Return the absolute path of `relative` under `root`.

    `relative` is a path as written in an annotation file: forward slashes,
    relative to `root`. ``sub/../a.jpg`` is accepted (it stays inside);
    the returned path is ``realpath(root) / normalised relative`` (a symlink
    that stays inside the root is kept under its own name).

    Raises DataError, naming `source` (e.g. ``"annotations.json entry 3"``) and
    the value, when the value is not a string, is empty, contains a NUL byte,
    is absolute (``/x``, ``\\\\x``, ``C:/x``), names the root itself, climbs out
    with ``..`` (backslashes count as separators here), or runs through a
    symlink whose target lies outside `root`. The file does not have to
    exist; only existing components are checked for symlinks (one ``lstat``
    for a plain file name). Readers that resolve many paths under one root
    use `InsideResolver`, which resolves the root once.
    """
    return InsideResolver(root).resolve(relative, source)


_DRIVE = re.compile(r"^[A-Za-z]:(/|$)")


class InsideResolver:
    """`resolve_inside` for many paths under one root (the root is resolved once)."""

    def __init__(self, root: Path, what: str = "image path"):
        self.root = Path(root)
        self.what = what  # what the paths are, in messages ("image path", "manifest path")
        self.root_real = os.path.realpath(self.root)
        self._root_path = Path(self.root_real)

    def resolve(self, relative: str, source: str) -> Path:
        """See `resolve_inside`."""
        if not isinstance(relative, str):
            raise DataError(
                f"{source}: the {self.what} must be a string, got {type(relative).__name__} "
                f"{quote_value(relative)}."
            )
        plain = not ("/" in relative or "\\" in relative or "\x00" in relative or relative.startswith("."))
        if not plain or not relative.strip():
            parts = self._normalise(relative, source)
        else:
            parts = [relative]  # a plain file name: nothing to normalise
        self._check_symlinks(parts, relative, source)
        return Path(os.path.join(self.root_real, *parts))

    def check_written(self, relative: str, source: str) -> str:
        """The checks of `resolve` that need no file system (type, empty, NUL, absolute,
        '..'); returns the normalised relative path. For many paths checked before any
        of them is opened; `resolve` adds the symlink check when one is."""
        if not isinstance(relative, str):
            raise DataError(
                f"{source}: the {self.what} must be a string, got {type(relative).__name__} {quote_value(relative)}."
            )
        return "/".join(self._normalise(relative, source))

    def _normalise(self, relative: str, source: str) -> list[str]:
        if not relative.strip():
            raise DataError(f"{source}: the {self.what} is empty.")
        if "\x00" in relative:
            raise DataError(f"{source}: the {self.what} {quote_value(relative)} contains a NUL byte.")
        # Windows separators count as separators for the escape check, so a
        # file written on Windows cannot climb out either.
        unified = relative.replace("\\", "/")
        if unified.startswith("/") or _DRIVE.match(unified):
            raise DataError(
                f"{source}: the {self.what} {quote_value(relative)} is absolute; "
                f"it must be relative to {self.root}."
            )
        normal = posixpath.normpath(unified)
        if normal == ".." or normal.startswith("../"):
            raise DataError(f"{source}: the {self.what} {quote_value(relative)} leaves {self.root} through '..'.")
        if normal == ".":
            raise DataError(f"{source}: the {self.what} {quote_value(relative)} names the folder {self.root} itself.")
        return normal.split("/")

    def _check_symlinks(self, parts: list[str], relative: str, source: str) -> None:
        """lstat each existing component below the root; a symlink must resolve inside."""
        current = self.root_real
        for part in parts:
            current = os.path.join(current, part)
            try:
                info = os.lstat(current)
            except (FileNotFoundError, NotADirectoryError):
                return  # nothing further exists, so nothing further can be a link
            except UnicodeEncodeError:
                raise DataError(
                    f"{source}: the {self.what} {quote_value(relative)} cannot be encoded as a file name."
                ) from None
            except OSError as exc:
                raise DataError(
                    f"{source}: the {self.what} {quote_value(relative)} cannot be checked "
                    f"({exc.strerror or exc})."
                ) from None
            if stat.S_ISLNK(info.st_mode):
                target = Path(os.path.realpath(current))
                if target != self._root_path and self._root_path not in target.parents:
                    raise DataError(
                        f"{source}: the {self.what} {quote_value(relative)} is a symlink that "
                        f"resolves outside {self.root_real} (to {target})."
                    )
                # Later components are looked up through the link; any of
                # them that is a link again is checked the same way.


def check_image_files(records: Sequence, describe: Callable[[int], str]) -> None:
    """Raise DataError naming the first record whose image file is missing.

    `records` are ImageTextRecords; `describe(i)` names record i's origin
    (e.g. "FILE entry 3"). Costs one stat per record.
    """
    missing = [i for i, record in enumerate(records) if not os.path.isfile(record.image_path)]
    if missing:
        first = missing[0]
        raise DataError(
            f"{describe(first)}: the image file {records[first].image_path} does not exist "
            f"({len(missing)} of {len(records)} image files are missing)."
        )


def split_file(data_dir: Path, split: str, suffix: str, dataset: str) -> Path:
    """`data_dir/{split}{suffix}`, checked to exist.

    Raises UsageError when `split` is not a plain file name (empty, holds a
    path separator, or is "." / "..") and DataError when the folder or file
    is missing; the latter lists the split files that are there.
    """
    if (
        not isinstance(split, str)
        or not split.strip()
        or split in (".", "..")
        or any(sep in split for sep in ("/", "\\", "\x00"))
    ):
        raise UsageError(f"the split name {quote_value(split)} must be a plain name such as 'train' or 'val'.")
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"the data folder {data_dir} does not exist or is not a folder.")
    path = data_dir / f"{split}{suffix}"
    if not path.is_file():
        there = sorted(p.name[: -len(suffix)] for p in data_dir.glob(f"*{suffix}") if p.is_file())
        found = f"splits there: {', '.join(there)}" if there else f"no *{suffix} files there"
        raise DataError(
            f"{path} does not exist: the {dataset} split {split!r} is read from "
            f"DATA_DIR/{split}{suffix} ({found})."
        )
    return path
