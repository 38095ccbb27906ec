"""Tokenizers: the pretrained tower's own, or a character vocabulary built from captions.

BERT's Chinese tokenizers are character-level, so a from-scratch tower gets the same
kind of tokenizer (`BertTokenizerFast` over a `vocab.txt`) with only the characters
the training captions use.
"""

from __future__ import annotations

import inspect
import tempfile
from collections.abc import Iterable
from pathlib import Path

from ..data.chars import count_chars, count_chars_joined  # noqa: F401 (re-exported: the vocabulary counts)
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


def char_tokenizer(captions: Iterable[str]):
    """The tokenizer a from-scratch run builds: the character vocabulary of `captions`."""
    return tokenizer_from_vocab(build_char_vocab(captions))


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
