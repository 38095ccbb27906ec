"""Pieces both towers share: the region/token Transformer, masked mean, the projection MLP."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over dim 1 of `x` (B, L, D) counting only positions where `mask` (B, L) is True."""
    weights = mask.to(x.dtype).unsqueeze(-1)
    return (x * weights).sum(1) / weights.sum(1).clamp_min(1.0)


class SequenceHead(nn.Module):
    """BriVL's head on top of a backbone: L2-normalise each vector of the sequence, a
    Transformer encoder over the sequence, masked mean pooling, a two-layer MLP."""

    def __init__(
        self,
        dim: int,
        out_dim: int,
        *,
        layers: int,
        heads: int,
        ff_dim: int | None,
        mlp_hidden_dim: int,
        dropout: float,
    ) -> None:
        super().__init__()
        if layers > 0:
            layer = nn.TransformerEncoderLayer(
                d_model=dim,
                nhead=heads,
                dim_feedforward=ff_dim or 4 * dim,
                dropout=dropout,
                batch_first=True,
            )
            self.encoder = nn.TransformerEncoder(layer, num_layers=layers, enable_nested_tensor=False)
        else:
            self.encoder = None
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_hidden_dim), nn.ReLU(inplace=True), nn.Linear(mlp_hidden_dim, out_dim)
        )

    def encode_sequence(self, seq: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The contextualised sequence before pooling (captioning heads attend to it)."""
        seq = F.normalize(seq, dim=-1)
        if self.encoder is not None:
            seq = self.encoder(seq, src_key_padding_mask=~mask)
        return seq

    def forward(self, seq: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.mlp(masked_mean(self.encode_sequence(seq, mask), mask))


def train_only_top(model: nn.Module, blocks: list[nn.Module], top: int | None, after: list[nn.Module] = ()) -> None:
    """Freeze `model` except its last `top` `blocks` and the modules in `after` (heads and
    norms that follow the blocks). None leaves everything trainable, as BriVL's lower
    blocks are frozen only when a config asks for it."""
    if top is None:
        return
    if not 0 <= top <= len(blocks):
        raise ValueError(f"cannot train the top {top} of {len(blocks)} blocks")
    model.requires_grad_(False)
    for module in [*blocks[len(blocks) - top :], *after]:
        module.requires_grad_(True)
