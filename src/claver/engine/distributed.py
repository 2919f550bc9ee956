"""Process groups: single process by default, DDP under torchrun (nccl on GPU, gloo on CPU).

torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (and the rendezvous variables); SLURM
users run torchrun inside ``srun`` (see the README).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str | None = None) -> World:
    """Join the process group if launched by torchrun; pick this process's device."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device != "cpu"
    dev = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    return World(rank, size, local_rank, dev)


def world_size() -> int:
    """The number of processes (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def all_gather_objects(obj: object) -> list:
    """Gather a picklable object from every rank (a one-element list without a group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_mean(value: float) -> float:
    if not (dist.is_available() and dist.is_initialized()):
        return value
    t = torch.tensor([value], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return t.item() / dist.get_world_size()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def any_rank(*flags: bool) -> Any:
    """For each flag: True on every rank when it is true on any rank (one tiny all-reduce
    under DDP; a no-op in a single process), so the ranks agree on decisions such as
    stopping. One flag gives a bool, several a tuple."""
    if dist.is_available() and dist.is_initialized():
        t = torch.tensor([1 if f else 0 for f in flags], dtype=torch.int32)
        if dist.get_backend() == "nccl":
            t = t.cuda()
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        flags = tuple(bool(v) for v in t.tolist())
    return bool(flags[0]) if len(flags) == 1 else tuple(bool(f) for f in flags)


def barrier() -> None:
    """Wait for every rank (a no-op in a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


class _GatherWithGrad(torch.autograd.Function):
    """All ranks' ``x`` concatenated (rank-major); the gradient of each rank's copy is summed
    over ranks and its own slice returned (all-gather + all-reduce: works on gloo too)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.rank, ctx.rows = dist.get_rank(), x.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


def gather_batch(x: torch.Tensor) -> torch.Tensor:
    """``x`` (B, ...) of every rank as one batch (W*B, ...) in the order a single process
    reading the same sampler would see: row ``j*W + r`` is rank r's row j (a
    ``DistributedSampler`` deals indices round-robin). Differentiable: the loss over the
    gathered batch, computed on every rank and averaged by DDP, has the single-process
    gradient. Without a process group, ``x`` itself."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    world = dist.get_world_size()
    if x.requires_grad:
        gathered = _GatherWithGrad.apply(x)
    else:
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        gathered = torch.cat(parts)
    return gathered.view(world, *x.shape).transpose(0, 1).reshape(world * x.shape[0],
                                                                    *x.shape[1:])

