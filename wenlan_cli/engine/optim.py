"""The AdamW both trainers use (pretraining and the task plugins)."""

from __future__ import annotations

import torch

__all__ = ["adamw"]


def adamw(groups: list[dict], lr: float, *, betas=(0.9, 0.98), eps: float = 1e-6) -> torch.optim.AdamW:
    """AdamW over parameter `groups`, with torch's fused kernel when every parameter is a
    float32 tensor on a CPU or CUDA device: one pass over all tensors, about 5x faster
    than the default per-parameter loop on CPU (benchmarks/README.md, train step)."""
    params = [p for group in groups for p in group["params"]]
    fused = bool(params) and all(p.device.type in ("cpu", "cuda") and p.dtype == torch.float32 for p in params)
    if fused:
        try:
            return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=True)
        except (RuntimeError, TypeError):  # a torch without the fused kernel for this device
            pass
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)
