"""Data-parallel training with torch.distributed (gloo on CPU, NCCL on CUDA), launched by torchrun.

GAN recipes step several optimisers per iteration and run each network several
times per step, which is awkward for DistributedDataParallel's one-forward-one-backward
model. We keep DDP's mathematics instead of its wrapper: every rank starts from
rank 0's weights, computes gradients on its shard of the global batch, and just
before each optimiser step the gradients are averaged across ranks with one
all-reduce per optimiser (a flattened bucket). With each rank's loss being the mean
over its shard, the averaged gradient equals the gradient of the global-batch mean,
so N processes with global batch B follow a single process with batch B.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def is_main_process() -> bool:
    """Rank 0 of a torchrun job, or a single process (readable before the process group exists)."""
    return int(os.environ.get("RANK", "0")) == 0


def launched_world_size() -> int:
    """Processes torchrun started for this job (1 without torchrun; readable before the process group exists)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(device: torch.device) -> tuple[DistContext, torch.device]:
    """Join the process group torchrun describes in the environment; a no-op for single-process runs."""
    world = launched_world_size()
    if world <= 1:
        return DistContext(), device
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistContext(rank=rank, world=world, local_rank=local_rank), device


def broadcast_module(module: torch.nn.Module, src: int = 0) -> None:
    """Make every rank hold rank `src`'s parameters and buffers."""
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src)


def average_gradients(params: list[torch.nn.Parameter], world: int) -> None:
    """All-reduce the gradients of `params` as one flat bucket and divide by the world size."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset:offset + n].view_as(g))
        offset += n


def sync_gradients_before_step(optimizer: torch.optim.Optimizer, world: int) -> None:
    """Register a pre-step hook that averages this optimiser's gradients across ranks."""
    params = [p for group in optimizer.param_groups for p in group["params"]]

    def hook(opt: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        average_gradients(params, world)

    optimizer.register_step_pre_hook(hook)


def any_rank(flag: bool, ctx: DistContext, device: torch.device | str = "cpu") -> bool:
    """True on every rank if `flag` is true on any rank (keeps stop decisions consistent)."""
    if ctx.world == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def gather_to_main(obj: Any, ctx: DistContext) -> list[Any]:
    """Ranks 1..N-1's `obj` (picklable, tensors on the CPU), in rank order, on rank 0; [] on the others and in
    a single process."""
    if ctx.world == 1:
        return []
    gathered: list[Any] | None = [None] * ctx.world if ctx.is_main else None
    dist.gather_object(obj, gathered, dst=0)
    return gathered[1:] if gathered is not None else []


def barrier(ctx: DistContext) -> None:
    if ctx.world > 1:
        dist.barrier()
