"""The MoCo-style queue of momentum keys that supplies BriVL's negatives."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# The id of a queue slot that has none (random initial keys, keys restored from a
# checkpoint written before queues kept ids). Real ids are non-negative, so it never matches.
NO_ID = -1


class FeatureQueue(nn.Module):
    """A ring buffer of the last `size` L2-normalised keys, each with its ids.

    Starts with random unit vectors (as MoCo does) so the loss has negatives from step
    one. Keys are written at `pointer` and wrap around; the training loop checks once
    that the queue size is a multiple of the global batch, so a batch never straddles
    the end, but wrap-around is handled anyway.

    `ids` holds, per slot, the key's (image id, caption hash) so the loss can tell when a
    queued "negative" is in fact the query's own image or the same caption (a false
    negative: with several captions per image, the image comes back every epoch).
    """

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.size = size
        self.register_buffer("features", F.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))
        self.register_buffer("ids", torch.full((size, 2), NO_ID, dtype=torch.long))
        self.register_load_state_dict_pre_hook(_ids_default_to_none)

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor, ids: torch.Tensor | None = None) -> None:
        """Write `keys` (N, D) and their `ids` (N, 2) int64, or NO_ID when None."""
        keys = keys.detach().to(self.features.dtype)
        if ids is None:
            ids = torch.full((keys.shape[0], 2), NO_ID, dtype=torch.long, device=self.ids.device)
        ids = ids.to(self.ids.device, torch.long)
        if keys.shape[0] > self.size:
            keys, ids = keys[-self.size :], ids[-self.size :]
        n = keys.shape[0]
        start = int(self.pointer)
        end = start + n
        if end <= self.size:
            self.features[start:end] = keys
            self.ids[start:end] = ids
        else:
            first = self.size - start
            self.features[start:] = keys[:first]
            self.features[: n - first] = keys[first:]
            self.ids[start:] = ids[:first]
            self.ids[: n - first] = ids[first:]
        self.pointer.fill_(end % self.size)


def _ids_default_to_none(module, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
    """Checkpoints written before queues kept ids resume with every slot's id unknown."""
    if prefix + "features" in state_dict and prefix + "ids" not in state_dict:
        state_dict[prefix + "ids"] = torch.full_like(module.ids, NO_ID)
