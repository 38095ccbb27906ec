"""The MoCo-style queue of momentum keys that supplies BriVL's negatives."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FeatureQueue(nn.Module):
    """A ring buffer of the last `size` L2-normalised keys.

    Starts with random unit vectors (as MoCo does) so the loss has negatives from step
    one. Keys are written at `pointer` and wrap around; the training loop checks once
    that the queue size is a multiple of the global batch, so a batch never straddles
    the end, but wrap-around is handled anyway.
    """

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.size = size
        self.register_buffer("features", F.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        keys = keys.detach().to(self.features.dtype)
        if keys.shape[0] > self.size:
            keys = keys[-self.size :]
        n = keys.shape[0]
        start = int(self.pointer)
        end = start + n
        if end <= self.size:
            self.features[start:end] = keys
        else:
            first = self.size - start
            self.features[start:] = keys[:first]
            self.features[: n - first] = keys[first:]
        self.pointer.fill_(end % self.size)
