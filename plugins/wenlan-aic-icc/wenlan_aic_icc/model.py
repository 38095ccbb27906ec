"""The captioner: BriVL's image tower (region sequence) and a Transformer decoder over it.

The decoder is a small pre-norm Transformer: causal self-attention over the caption so
far, cross-attention to the tower's contextualised region vectors (the sequence before
BriVL pools it, padding boxes masked out), a feed-forward block. Decoding feeds one token
at a time and keeps each layer's keys and values (`DecoderState`), so generating a caption
of L tokens costs L single-token steps rather than L growing prefixes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from wenlan_cli.plugin_api import UsageError

TOWER_MODES = ("frozen", "top", "all")


@dataclass
class HeadConfig:
    """The decoder's shape and its special tokens (stored in a caption checkpoint)."""

    vocab_size: int
    memory_dim: int
    bos_id: int
    eos_id: int
    pad_id: int
    d_model: int = 256
    layers: int = 2
    heads: int = 4
    ff_dim: int = 1024
    dropout: float = 0.1
    # Longest token sequence the decoder handles ([CLS] + caption + [SEP]).
    max_positions: int = 64
    tie_embeddings: bool = True

    def validate(self) -> None:
        if self.d_model % self.heads:
            raise UsageError(f"the decoder width ({self.d_model}) must be divisible by its heads ({self.heads}).")
        for name in ("vocab_size", "memory_dim", "d_model", "layers", "heads", "ff_dim", "max_positions"):
            if getattr(self, name) < 1:
                raise UsageError(f"decoder {name.replace('_', ' ')} must be at least 1, not {getattr(self, name)}.")
        if self.max_positions < 3:
            raise UsageError("the decoder needs at least 3 positions ([CLS], one token, [SEP]).")
        if not 0.0 <= self.dropout < 1.0:
            raise UsageError(f"decoder dropout must be in [0, 1), not {self.dropout}.")


@dataclass
class LayerCache:
    """Keys and values of one layer: self-attention so far, cross-attention (fixed)."""

    self_k: torch.Tensor | None
    self_v: torch.Tensor | None
    cross_k: torch.Tensor
    cross_v: torch.Tensor


@dataclass
class DecoderState:
    """What one decoding step needs from the previous ones, per row of the batch."""

    layers: list[LayerCache]
    memory_mask: torch.Tensor  # (B, 1, 1, R) bool, True = attend
    position: int = 0

    def select(self, index: torch.Tensor) -> "DecoderState":
        """Rows `index` of every cached tensor (beam search reorders hypotheses)."""
        layers = [
            LayerCache(
                None if c.self_k is None else c.self_k.index_select(0, index),
                None if c.self_v is None else c.self_v.index_select(0, index),
                c.cross_k.index_select(0, index),
                c.cross_v.index_select(0, index),
            )
            for c in self.layers
        ]
        return DecoderState(layers, self.memory_mask.index_select(0, index), self.position)


class DecoderLayer(nn.Module):
    def __init__(self, d_model: int, heads: int, ff_dim: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.norm_self = nn.LayerNorm(d_model)
        self.self_qkv = nn.Linear(d_model, 3 * d_model)
        self.self_out = nn.Linear(d_model, d_model)
        self.norm_cross = nn.LayerNorm(d_model)
        self.cross_q = nn.Linear(d_model, d_model)
        self.cross_kv = nn.Linear(d_model, 2 * d_model)
        self.cross_out = nn.Linear(d_model, d_model)
        self.norm_ff = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, ff_dim), nn.GELU(), nn.Linear(ff_dim, d_model))
        self.drop = nn.Dropout(dropout)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        return x.view(b, t, self.heads, d // self.heads).transpose(1, 2)

    @staticmethod
    def _merge(x: torch.Tensor) -> torch.Tensor:
        b, h, t, dh = x.shape
        return x.transpose(1, 2).reshape(b, t, h * dh)

    def memory_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.cross_kv(memory).chunk(2, dim=-1)
        return self._split(k), self._split(v)

    def forward(self, x: torch.Tensor, cache: LayerCache, memory_mask: torch.Tensor, incremental: bool) -> torch.Tensor:
        p = self.dropout if self.training else 0.0
        q, k, v = (self._split(t) for t in self.self_qkv(self.norm_self(x)).chunk(3, dim=-1))
        if incremental:
            if cache.self_k is not None:
                k = torch.cat([cache.self_k, k], dim=2)
                v = torch.cat([cache.self_v, v], dim=2)
            cache.self_k, cache.self_v = k, v
            attended = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        else:
            # Right padding: a real token never sees a later pad, so causality is enough.
            attended = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        x = x + self.drop(self.self_out(self._merge(attended)))
        q = self._split(self.cross_q(self.norm_cross(x)))
        attended = F.scaled_dot_product_attention(q, cache.cross_k, cache.cross_v, attn_mask=memory_mask, dropout_p=p)
        x = x + self.drop(self.cross_out(self._merge(attended)))
        return x + self.drop(self.ff(self.norm_ff(x)))


class CaptionDecoder(nn.Module):
    """Token embeddings + positions, decoder layers, a final norm and the vocabulary logits."""

    def __init__(self, config: HeadConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        d = config.d_model
        self.memory_norm = nn.LayerNorm(config.memory_dim)
        self.memory_proj = nn.Linear(config.memory_dim, d)
        self.token_embed = nn.Embedding(config.vocab_size, d)
        self.position_embed = nn.Embedding(config.max_positions, d)
        self.layers = nn.ModuleList(DecoderLayer(d, config.heads, config.ff_dim, config.dropout) for _ in range(config.layers))
        self.norm = nn.LayerNorm(d)
        self.output = nn.Linear(d, config.vocab_size, bias=True)
        self.drop = nn.Dropout(config.dropout)
        nn.init.normal_(self.token_embed.weight, std=0.02)
        nn.init.normal_(self.position_embed.weight, std=0.02)
        if config.tie_embeddings:
            self.output.weight = self.token_embed.weight

    def start(self, memory: torch.Tensor, memory_mask: torch.Tensor) -> DecoderState:
        """Project the region sequence (B, R, memory_dim) once and cache its keys/values."""
        projected = self.memory_proj(self.memory_norm(memory))
        layers = [LayerCache(None, None, *layer.memory_kv(projected)) for layer in self.layers]
        return DecoderState(layers, memory_mask[:, None, None, :].bool())

    def _embed(self, tokens: torch.Tensor, offset: int) -> torch.Tensor:
        positions = torch.arange(offset, offset + tokens.shape[1], device=tokens.device)
        return self.drop(self.token_embed(tokens) + self.position_embed(positions))

    def forward(self, memory: torch.Tensor, memory_mask: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: logits (B, T, V) for every next token after `tokens` (B, T)."""
        if tokens.shape[1] > self.config.max_positions:
            raise ValueError(f"{tokens.shape[1]} tokens exceed the decoder's {self.config.max_positions} positions")
        state = self.start(memory, memory_mask)
        x = self._embed(tokens, 0)
        for layer, cache in zip(self.layers, state.layers):
            x = layer(x, cache, state.memory_mask, incremental=False)
        return self.output(self.norm(x))

    def step(self, tokens: torch.Tensor, state: DecoderState) -> torch.Tensor:
        """One decoding step: logits (B, V) of the token after `tokens` (B,), given `state`
        (updated in place with this step's keys and values)."""
        x = self._embed(tokens[:, None], state.position)
        for layer, cache in zip(self.layers, state.layers):
            x = layer(x, cache, state.memory_mask, incremental=True)
        state.position += 1
        return self.output(self.norm(x[:, 0]))


class CaptionModel(nn.Module):
    """BriVL's image tower and the caption decoder; `model.safetensors` holds both."""

    def __init__(self, image_encoder: nn.Module, head_config: HeadConfig) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.head = CaptionDecoder(head_config)

    @property
    def head_config(self) -> HeadConfig:
        return self.head.config

    def encode(self, images: torch.Tensor, boxes: torch.Tensor, box_mask: torch.Tensor) -> torch.Tensor:
        """The tower's region sequence (B, R, region_dim), padding boxes included (masked later)."""
        return self.image_encoder.region_sequence(images, boxes, box_mask)

    def forward(self, memory: torch.Tensor, memory_mask: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(memory, memory_mask, tokens)


def configure_tower(model: CaptionModel, mode: str, top_blocks: int = 0) -> None:
    """Which of the tower's weights train: "frozen" none; "top" the top `top_blocks` backbone
    blocks and everything above them (backbone head, region projection, box embedding,
    region Transformer); "all" the whole tower. The pooled-embedding MLP of BriVL is never
    used for captions and stays frozen."""
    from wenlan_cli.plugin_api import backbone_blocks, train_only_top

    tower = model.image_encoder
    if mode not in TOWER_MODES:
        raise UsageError(f"unknown tower mode {mode!r}; choose one of {', '.join(TOWER_MODES)}.")
    if mode == "frozen":
        tower.requires_grad_(False)
        return
    tower.requires_grad_(True)
    if mode == "top":
        blocks, after = backbone_blocks(tower.backbone)
        if not 0 <= top_blocks <= len(blocks):
            raise UsageError(
                f"--train-top-blocks {top_blocks}: the backbone {type(tower.backbone).__name__} has "
                f"{len(blocks)} blocks; choose 0 to {len(blocks)}."
            )
        train_only_top(tower.backbone, blocks, top_blocks, after)
    tower.head.mlp.requires_grad_(False)


def tower_is_frozen(model: CaptionModel) -> bool:
    return not any(p.requires_grad for p in model.image_encoder.parameters())


def count_trainable(module: nn.Module) -> int:
    seen, total = set(), 0
    for p in module.parameters():
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total
