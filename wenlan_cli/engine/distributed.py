"""torch.distributed helpers: one process per device, started by torchrun.

A plain `wenlan pretrain` is a world of one and never touches torch.distributed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .device import pick_device


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device_preference: str = "auto") -> DistContext:
    """Join the process group torchrun set up (RANK / WORLD_SIZE / LOCAL_RANK), if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_preference, local_rank)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_gather_cat(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Concatenate `tensor` from every rank, in rank order (no gradient)."""
    if not ctx.distributed:
        return tensor
    tensor = tensor.contiguous()
    out = torch.empty((ctx.world_size * tensor.shape[0], *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
    dist.all_gather_into_tensor(out, tensor)
    return out


def all_reduce_mean(value: float, ctx: DistContext, device: torch.device) -> float:
    if not ctx.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / ctx.world_size


def all_reduce_max_flag(flag: bool, ctx: DistContext, device: torch.device) -> bool:
    """True on every rank if it is True on any (stop requests, NaN checks)."""
    if not ctx.distributed:
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def all_gather_variable(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Like `all_gather_cat`, for ranks whose first dimension may differ (--skip-bad)."""
    if not ctx.distributed:
        return tensor
    size = torch.tensor([tensor.shape[0]], device=tensor.device)
    sizes = all_gather_cat(size, ctx).tolist()
    largest = max(sizes)
    if min(sizes) == largest:
        return all_gather_cat(tensor, ctx)
    padded = torch.zeros((largest, *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
    padded[: tensor.shape[0]] = tensor
    gathered = all_gather_cat(padded, ctx)
    return torch.cat([gathered[r * largest : r * largest + n] for r, n in enumerate(sizes)])


class KeyBatchShuffle:
    """BriVL's (MoCo's) shuffle-BN: the momentum image tower sees a batch shuffled across
    ranks, so BatchNorm statistics cannot leak which key belongs to which query.

    Called with the local image batch, it returns this rank's slice of a random
    permutation of the global batch and a function that maps the keys computed on it
    back to the original local order. The permutation comes from a generator seeded by
    (seed, step), identical on every rank, so no broadcast is needed and resume is exact.
    """

    def __init__(self, ctx: DistContext, seed: int) -> None:
        self.ctx = ctx
        self.seed = seed
        self.step = 0

    def __call__(self, *tensors: torch.Tensor):
        ctx = self.ctx
        local = tensors[0].shape[0]
        sizes = all_gather_cat(torch.tensor([local], device=tensors[0].device), ctx).tolist()
        if len(set(sizes)) != 1:  # uneven batches (skipped images): no shuffle this step
            return tensors, lambda keys: keys
        total = local * ctx.world_size
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.step)
        self.step += 1
        perm = torch.randperm(total, generator=generator).to(tensors[0].device)
        inverse = torch.argsort(perm)
        mine = perm[ctx.rank * local : (ctx.rank + 1) * local]
        shuffled = tuple(all_gather_cat(t, ctx)[mine] for t in tensors)

        def restore(keys: torch.Tensor) -> torch.Tensor:
            return all_gather_cat(keys, ctx)[inverse[ctx.rank * local : (ctx.rank + 1) * local]]

        return shuffled, restore
