"""Reading a small UTF-8 text file (labels, queries, annotation lines) with errors that name it."""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError

__all__ = ["read_text_lines", "read_utf8_text"]


def read_utf8_text(path: str | Path, what: str = "") -> str:
    """The text of a UTF-8 file (a leading BOM dropped). Errors are one DataError sentence
    naming the file as `what` + path (e.g. "the labels file "), and for bytes that are not
    UTF-8 the 1-based line where they start."""
    path = Path(path)
    name = f"{what}{path}"
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{name} does not exist.") from None
    except OSError as exc:
        raise DataError(f"{name} cannot be read ({exc.strerror or exc}).") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"{name} line {line}: the text is not UTF-8 (byte {raw[exc.start]:#04x}).") from None


def read_text_lines(path: str | Path) -> list[str]:
    """Non-blank lines of a UTF-8 file, stripped; each is one text to encode."""
    text = read_utf8_text(path, "the texts file ")
    return [line.strip() for line in text.splitlines() if line.strip()]
