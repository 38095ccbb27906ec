"""Tokenizers: the pretrained tower's own, or a character vocabulary built from captions.

BERT's Chinese tokenizers are character-level, so a from-scratch tower gets the same
kind of tokenizer (`BertTokenizerFast` over a `vocab.txt`) with only the characters
the training captions use.
"""

from __future__ import annotations

import inspect
import tempfile
import unicodedata
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from ..errors import UsageError

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _is_cjk(char: str) -> bool:
    code = ord(char)
    return (
        0x4E00 <= code <= 0x9FFF
        or 0x3400 <= code <= 0x4DBF
        or 0x20000 <= code <= 0x2A6DF
        or 0xF900 <= code <= 0xFAFF
        or 0x2F800 <= code <= 0x2FA1F
    )


def build_char_vocab(captions: Iterable[str], min_count: int = 1) -> list[str]:
    """Special tokens, then every character seen at least `min_count` times, most frequent
    first. Non-CJK characters also get a `##` form, because BERT's WordPiece splits a run
    of Latin letters or digits into a first piece and `##` continuation pieces."""
    return vocab_from_counts(count_chars(captions), min_count)


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


def vocab_from_counts(counts: dict[str, int], min_count: int = 1) -> list[str]:
    """`build_char_vocab`'s vocabulary from `count_chars`' counts."""
    chars = sorted((c for c, n in counts.items() if n >= min_count), key=lambda c: (-counts[c], c))
    vocab = list(SPECIAL_TOKENS)
    vocab += chars
    vocab += [f"##{c}" for c in chars if not _is_cjk(c)]
    return vocab


def tokenizer_from_vocab(vocab: list[str]):
    """A `BertTokenizerFast` over `vocab` (written to a temporary vocab.txt)."""
    from transformers import BertTokenizerFast

    options = dict(do_lower_case=True, tokenize_chinese_chars=True, strip_accents=False)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "vocab.txt"
        path.write_text("\n".join(vocab) + "\n", encoding="utf-8")
        # transformers 5 takes the vocabulary as `vocab`; 4.x as `vocab_file`.
        if "vocab" in inspect.signature(BertTokenizerFast.__init__).parameters:
            tokenizer = BertTokenizerFast(vocab={token: i for i, token in enumerate(vocab)}, **options)
        else:
            tokenizer = BertTokenizerFast(vocab_file=str(path), **options)
    if tokenizer.convert_tokens_to_ids(vocab[-1]) != len(vocab) - 1:
        raise RuntimeError("the character vocabulary did not reach the tokenizer")
    return tokenizer


def load_pretrained_tokenizer(source: str, trust_remote_code: bool = False):
    """The tokenizer of a hub model or local directory, with an offline-friendly error."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise UsageError(
            f"could not load the tokenizer of {source!r} ({type(exc).__name__}); without network "
            "access, download the model elsewhere and point text.hf_name (or --text-weights) at "
            "the local directory."
        ) from None


def load_tokenizer(directory: str | Path):
    """The tokenizer saved in a checkpoint directory."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(directory))
    except (OSError, ValueError):  # Hugging Face's message spans several lines about the hub
        raise UsageError(
            f"{directory} has no readable tokenizer (its tokenizer files, such as tokenizer.json or vocab.txt, "
            "are missing or damaged)."
        ) from None


def save_tokenizer(tokenizer, directory: str | Path) -> None:
    """`save_pretrained`, plus a `vocab.txt` for WordPiece vocabularies when the installed
    transformers writes only tokenizer.json (version 5), so any BERT tooling can read it."""
    directory = Path(directory)
    tokenizer.save_pretrained(str(directory))
    vocab_file = directory / "vocab.txt"
    if not vocab_file.exists() and type(tokenizer).__name__.startswith("Bert"):
        vocab = tokenizer.get_vocab()
        ordered = sorted(vocab, key=vocab.__getitem__)
        vocab_file.write_text("\n".join(ordered) + "\n", encoding="utf-8")
