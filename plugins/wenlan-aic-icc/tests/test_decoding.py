"""Greedy and beam search: beam 1 is greedy exactly; a wide beam finds the best caption."""

from __future__ import annotations

import itertools

import pytest
import torch

from wenlan_aic_icc.decoding import DecodeOptions, beam_search, detokenize, greedy_decode
from wenlan_aic_icc.model import CaptionDecoder, HeadConfig

PAD, UNK, BOS, EOS = 0, 1, 2, 3


def _decoder(vocab: int, seed: int, eos_bias: float = 0.0, dropout: float = 0.0) -> CaptionDecoder:
    torch.manual_seed(seed)
    config = HeadConfig(
        vocab_size=vocab, memory_dim=12, bos_id=BOS, eos_id=EOS, pad_id=PAD, d_model=16, layers=2, heads=2,
        ff_dim=32, dropout=dropout, max_positions=24,
    )
    decoder = CaptionDecoder(config).eval()
    with torch.no_grad():
        for param in decoder.parameters():  # larger than at initialisation: outputs vary with the input
            param.normal_(0.0, 0.5)
        decoder.output.bias[EOS] += eos_bias  # tunes when captions end
    return decoder


def _memory(batch: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    memory = torch.randn(batch, 5, 12, generator=generator)
    mask = torch.ones(batch, 5, dtype=torch.bool)
    for row in range(batch):
        mask[row, 1 + row % 4 :] = False  # 1 to 4 real regions
    return memory, mask


# (seed, end-token bias) where the rows of the batch end at different steps.
MIXED_LENGTHS = [(0, 2.0), (1, 2.0), (1, 3.0), (2, 1.0)]


@pytest.mark.parametrize("seed, eos_bias", MIXED_LENGTHS)
def test_beam_of_one_equals_greedy_exactly(seed, eos_bias):
    decoder = _decoder(vocab=30, seed=seed, eos_bias=eos_bias)
    memory, mask = _memory(7, seed)
    options = DecodeOptions(beam_size=1, max_len=20)
    greedy = greedy_decode(decoder, memory, mask, options, banned=[PAD, BOS])
    beam = beam_search(decoder, memory, mask, options, banned=[PAD, BOS])
    assert greedy == beam
    assert len({len(c) for c in greedy}) > 1  # rows really finish at different steps
    for length_penalty in (0.6, 1.0):
        beam = beam_search(decoder, memory, mask, DecodeOptions(beam_size=1, max_len=20, length_penalty=length_penalty), banned=[PAD, BOS])
        assert beam == greedy


def _sequence_log_prob(decoder, memory, mask, tokens: list[int], ended: bool) -> float:
    """log P(tokens [+ EOS] | image) by teacher forcing, with the decoders' constraints."""
    ids = torch.tensor([[BOS, *tokens]])
    with torch.no_grad():
        logits = decoder(memory, mask, ids)[0].float()
    logits[:, [PAD, BOS]] = float("-inf")
    logits[0, EOS] = float("-inf")  # at least one token
    logp = torch.log_softmax(logits, dim=-1)
    targets = [*tokens, EOS] if ended else tokens
    return float(sum(logp[t, tok] for t, tok in enumerate(targets)))


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_wide_beam_finds_the_exhaustive_best_caption(length_penalty):
    """Vocabulary of 3 words + end, at most 4 tokens: until the last step a beam of 64 keeps
    every hypothesis, so it must return the exhaustive argmax."""
    decoder = _decoder(vocab=6, seed=5, eos_bias=0.5)
    memory, mask = _memory(3, 9)
    words = [UNK, 4, 5]
    max_len = 4
    options = DecodeOptions(beam_size=64, max_len=max_len, length_penalty=length_penalty)
    found = beam_search(decoder, memory, mask, options, banned=[PAD, BOS])
    for row in range(3):
        best, best_score = None, float("-inf")
        for length in range(1, max_len + 1):
            for tokens in itertools.product(words, repeat=length):
                # Ended by the end token (which counts in the length), or cut at max_len.
                for ended in (True, False) if length < max_len else (False,):
                    score = _sequence_log_prob(decoder, memory[row : row + 1], mask[row : row + 1], list(tokens), ended)
                    score /= (length + ended) ** length_penalty
                    if score > best_score + 1e-6:
                        best, best_score = list(tokens), score
        assert found[row] == best


def test_beam_search_never_returns_an_empty_caption_or_banned_tokens():
    decoder = _decoder(vocab=12, seed=3, eos_bias=8.0)  # the end token is very likely
    memory, mask = _memory(4, 1)
    for beam in (1, 3):
        out = beam_search(decoder, memory, mask, DecodeOptions(beam_size=beam, max_len=10), banned=[PAD, BOS])
        assert all(out) and all(PAD not in c and BOS not in c and EOS not in c for c in out)


def test_incremental_steps_match_teacher_forcing():
    decoder = _decoder(vocab=20, seed=4)
    memory, mask = _memory(3, 2)
    tokens = torch.tensor([[BOS, 5, 7, 9, 11, 4]] * 3)
    full = decoder(memory, mask, tokens)
    state = decoder.start(memory, mask)
    steps = torch.stack([decoder.step(tokens[:, t], state) for t in range(tokens.shape[1])], dim=1)
    torch.testing.assert_close(steps, full, atol=1e-5, rtol=1e-5)


def test_detokenize_glues_characters_and_keeps_latin_words_apart():
    from wenlan_cli.models.tokenizer import build_char_vocab, tokenizer_from_vocab

    tokenizer = tokenizer_from_vocab(build_char_vocab(["左上角有2个大的红色圆形，a dog 在nba球场。3.5"]))
    cases = {
        "左上角有2个大的红色圆形，右下": "左上角有2个大的红色圆形，",  # unknown characters are dropped
        "a dog 在nba球场。": "a dog在nba球场。",
        "3.5个 NBA": "3.5个nba",
    }
    for text, expected in cases.items():
        ids = tokenizer(text, add_special_tokens=True)["input_ids"]
        assert detokenize(tokenizer, ids) == expected


def test_decode_options_are_checked():
    from wenlan_cli.errors import UsageError

    for bad in (dict(beam_size=0), dict(max_len=0), dict(length_penalty=-1.0)):
        with pytest.raises(UsageError):
            DecodeOptions(**bad).validate()
