"""Greedy and beam-search decoding, batched over images, and token ids back to text.

Both decoders run every row of the batch for every step (finished rows are fed padding
and ignored), so a row's numbers never depend on when its neighbours finish. Beam search
first keeps each hypothesis's `beam` best next tokens (by log-probability, exactly as
greedy picks its one), then the image's `beam` best of those candidates; with `beam=1`
that is greedy's choice by construction, so beam 1 returns greedy's captions exactly.
A finished hypothesis stays in its image's beam with its score frozen. Candidates are
ranked by log-probability / length ** length_penalty (0: the plain sum, 1: the mean per
token), the length counting the end token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from wenlan_cli.plugin_api import UsageError


@dataclass
class DecodeOptions:
    beam_size: int = 1
    length_penalty: float = 0.0
    # Most tokens generated per caption, the end token included.
    max_len: int = 64

    def validate(self) -> None:
        if isinstance(self.beam_size, bool) or self.beam_size < 1:
            raise UsageError(f"--beam-size must be at least 1, not {self.beam_size}.")
        if self.max_len < 1:
            raise UsageError(f"--max-len must be at least 1, not {self.max_len}.")
        if self.length_penalty < 0:
            raise UsageError(f"--length-penalty must be 0 or more, not {self.length_penalty}.")


def _banned_tokens(config, tokenizer=None) -> list[int]:
    """Tokens never generated: padding, the start token, [UNK] (it would be dropped from the
    text) and [MASK]."""
    banned = {config.pad_id, config.bos_id}
    if tokenizer is not None:
        for name in ("mask_token_id", "unk_token_id"):
            value = getattr(tokenizer, name, None)
            if isinstance(value, int) and value != config.eos_id:
                banned.add(value)
    banned.discard(config.eos_id)
    return sorted(i for i in banned if 0 <= i < config.vocab_size)


def _log_probs(decoder, tokens, state, banned: list[int], eos_id: int, first: bool) -> torch.Tensor:
    logits = decoder.step(tokens, state).float()
    if banned:
        logits[:, banned] = float("-inf")
    if first:  # at least one token before the end
        logits[:, eos_id] = float("-inf")
    return torch.log_softmax(logits, dim=-1)


def _max_steps(decoder, options: DecodeOptions) -> int:
    return max(1, min(options.max_len, decoder.config.max_positions))


@torch.no_grad()
def greedy_decode(decoder, memory: torch.Tensor, memory_mask: torch.Tensor, options: DecodeOptions, banned: list[int] = ()) -> list[list[int]]:
    """The most likely next token at every step; token ids per image, without the end token."""
    cfg = decoder.config
    b = memory.shape[0]
    state = decoder.start(memory, memory_mask)
    tokens = torch.full((b,), cfg.bos_id, dtype=torch.long, device=memory.device)
    finished = torch.zeros(b, dtype=torch.bool, device=memory.device)
    steps = []
    for t in range(_max_steps(decoder, options)):
        logp = _log_probs(decoder, tokens, state, list(banned), cfg.eos_id, t == 0)
        choice = logp.topk(1, dim=-1).indices[:, 0]
        choice = torch.where(finished, torch.full_like(choice, cfg.pad_id), choice)
        steps.append(choice)
        finished = finished | (choice == cfg.eos_id)
        if bool(finished.all()):
            break
        tokens = choice
    return _strip(torch.stack(steps, dim=1), cfg.eos_id, cfg.pad_id)


@torch.no_grad()
def beam_search(decoder, memory: torch.Tensor, memory_mask: torch.Tensor, options: DecodeOptions, banned: list[int] = ()) -> list[list[int]]:
    """Beam search for every image of the batch at once (B x beam rows); the best hypothesis
    per image by length-penalised log-probability, without the end token."""
    cfg = decoder.config
    k = options.beam_size
    b = memory.shape[0]
    device = memory.device
    state = decoder.start(memory.repeat_interleave(k, dim=0), memory_mask.repeat_interleave(k, dim=0))
    scores = torch.zeros(b, k, device=device)
    scores[:, 1:] = float("-inf")  # all beams start equal: expand the first only
    finished = torch.zeros(b, k, dtype=torch.bool, device=device)
    lengths = torch.zeros(b, k, device=device)
    history = torch.zeros(b, k, 0, dtype=torch.long, device=device)
    tokens = torch.full((b * k,), cfg.bos_id, dtype=torch.long, device=device)
    frozen_lp = torch.full((k,), float("-inf"), device=device)
    frozen_lp[0] = 0.0
    alpha = options.length_penalty
    rows = torch.arange(b, device=device)[:, None]
    for t in range(_max_steps(decoder, options)):
        logp = _log_probs(decoder, tokens, state, list(banned), cfg.eos_id, t == 0)
        vocab = logp.shape[-1]
        top_lp, top_tok = logp.view(b, k, vocab).topk(min(k, vocab), dim=-1)  # (B, K, k')
        width = top_lp.shape[-1]
        # A finished hypothesis has one continuation: itself, unchanged.
        top_lp = torch.where(finished[..., None], frozen_lp[:width], top_lp)
        top_tok = torch.where(finished[..., None], torch.full_like(top_tok, cfg.pad_id), top_tok)
        cand_scores = scores[..., None] + top_lp
        cand_len = torch.where(finished, lengths, torch.full_like(lengths, t + 1.0))[..., None].expand_as(cand_scores)
        rank = cand_scores / cand_len.pow(alpha) if alpha else cand_scores
        best = rank.reshape(b, -1).topk(k, dim=-1).indices  # (B, K)
        parent = best // width
        new_tok = top_tok.reshape(b, -1).gather(1, best)
        scores = cand_scores.reshape(b, -1).gather(1, best)
        was_finished = finished.gather(1, parent)
        lengths = torch.where(was_finished, lengths.gather(1, parent), torch.full_like(lengths, t + 1.0))
        finished = was_finished | (new_tok == cfg.eos_id)
        history = torch.cat([history[rows, parent], new_tok[..., None]], dim=-1)
        if bool(finished.all()):
            break
        state = state.select((rows * k + parent).reshape(-1))
        tokens = new_tok.reshape(-1)
    lengths = torch.where(finished, lengths, torch.full_like(lengths, float(history.shape[-1])))
    final = scores / lengths.clamp_min(1.0).pow(alpha) if alpha else scores
    choice = final.topk(1, dim=-1).indices[:, 0]
    return _strip(history[torch.arange(b, device=device), choice], cfg.eos_id, cfg.pad_id)


def _strip(sequences: torch.Tensor, eos_id: int, pad_id: int) -> list[list[int]]:
    out = []
    for row in sequences.tolist():
        ids = []
        for token in row:
            if token == eos_id:
                break
            if token != pad_id:
                ids.append(token)
        out.append(ids)
    return out


def decode(decoder, memory, memory_mask, options: DecodeOptions, banned: list[int] = ()) -> list[list[int]]:
    """Greedy for beam 1 unless asked otherwise; beam search above."""
    if options.beam_size == 1:
        return greedy_decode(decoder, memory, memory_mask, options, banned)
    return beam_search(decoder, memory, memory_mask, options, banned)


def _is_word_char(ch: str) -> bool:
    return ch.isascii() and ch.isalnum()


def detokenize(tokenizer, ids: list[int]) -> str:
    """Token ids to a caption: characters joined without spaces, WordPiece `##` pieces glued
    to the piece before, a space only between two Latin/digit words; specials dropped."""
    specials = set(getattr(tokenizer, "all_special_tokens", []))
    text = ""
    for token in tokenizer.convert_ids_to_tokens(ids):
        if token is None or token in specials:
            continue
        if token.startswith("##") and len(token) > 2:
            text += token[2:]
            continue
        if text and _is_word_char(text[-1]) and _is_word_char(token[0]):
            text += " "
        text += token
    return text
