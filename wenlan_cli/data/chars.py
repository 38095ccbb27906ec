"""Character counts of captions: what a character vocabulary is built from.

Kept in the data layer because the data path needs them without a tokenizer: `wenlan
data convert` stores each shard's counts beside it and a streamed run adds them up.
`models/tokenizer.py` builds the vocabulary (`vocab_from_counts`) and the tokenizer.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Iterable

__all__ = ["count_chars", "count_chars_joined"]


def count_chars(captions: Iterable[str], counts: Counter | None = None) -> Counter:
    """How often each vocabulary character occurs (NFC, lower-cased, no spaces or control
    characters): what `build_char_vocab` needs, small enough to store beside sharded data
    so a run over shards builds its vocabulary without reading a caption."""
    counts = Counter() if counts is None else counts
    chunk: list[str] = []
    for caption in captions:
        chunk.append(caption)
        if len(chunk) == _COUNT_CHUNK:
            _count_chunk(chunk, counts)
            chunk = []
    if chunk:
        _count_chunk(chunk, counts)
    return counts


# Captions counted per vectorised pass (bounds the pass's temporary memory, ~100 MB).
_COUNT_CHUNK = 1 << 20
# Characters of newline-joined text counted per pass.
_TEXT_CHUNK = 1 << 23


def _count_chunk(captions: list[str], counts: Counter) -> None:
    _count_joined("\n".join(captions), counts)


def count_chars_joined(text: str, counts: Counter | None = None) -> Counter:
    """`count_chars` of the captions that `text` joins with newlines (captions hold no
    newline once cleaned): the same counts, without a Python string per caption."""
    counts = Counter() if counts is None else counts
    start = 0
    while start < len(text):
        end = text.find("\n", start + _TEXT_CHUNK) if len(text) - start > _TEXT_CHUNK else -1
        end = len(text) if end < 0 else end
        _count_joined(text[start:end], counts)
        start = end + 1
    return counts


def _count_joined(joined: str, counts: Counter) -> None:
    """Add the characters of newline-joined captions to `counts`, counted by numpy.

    Joining with a newline normalises and lower-cases exactly as caption by caption
    would: a newline never composes with a neighbour (NFC) and breaks the context of
    the final-sigma rule (`str.lower`); it is whitespace, so it is not counted. Only the
    distinct characters, a few thousand, are then looked at one by one.
    """
    import numpy as np

    text = unicodedata.normalize("NFC", joined).lower()
    if not text:
        return
    # Captions are valid Unicode (the readers refuse lone surrogates); anything else is
    # passed through so that the count matches the character-by-character one.
    codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    tally = np.bincount(codes)
    for code in np.flatnonzero(tally).tolist():
        ch = chr(code)
        if not ch.isspace() and unicodedata.category(ch)[0] != "C":
            counts[ch] += int(tally[code])
