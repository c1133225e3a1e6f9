"""Process-group plumbing for DDP under `torchrun` (env vars RANK, WORLD_SIZE, LOCAL_RANK).

Single-process runs need none of it: every helper here is a no-op when no process group exists, so the
engine calls them unconditionally. NCCL on GPUs, gloo on CPUs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from runtime.errors import UserError


@dataclass
class DistEnv:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def resolve_device(pref: str = "auto", local_rank: int = 0) -> torch.device:
    """`auto` -> cuda:LOCAL_RANK when a GPU is there, else cpu; `cuda` -> cuda:LOCAL_RANK; `cuda:N` as is."""
    if pref == "auto":
        pref = "cuda" if torch.cuda.is_available() else "cpu"
    if pref.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"train.device={pref} but no CUDA GPU is visible; use train.device=cpu")
        return torch.device(pref if ":" in pref else f"cuda:{local_rank}")
    if pref != "cpu":
        raise UserError(f"train.device '{pref}' is not one of auto, cpu, cuda, cuda:N")
    return torch.device("cpu")


def init_distributed(device_pref: str = "auto") -> DistEnv:
    """Join the process group that torchrun describes in the environment (or run as one process)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_pref, local_rank)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world)
    return DistEnv(rank=rank, world=world, local_rank=local_rank, device=device)


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_main() -> bool:
    return not is_distributed() or dist.get_rank() == 0


def all_reduce_(t: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """In-place all-reduce (`sum` or `max`) across ranks; identity in a single process."""
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return t


def broadcast_(t: torch.Tensor, src: int = 0) -> torch.Tensor:
    if is_distributed():
        dist.broadcast(t, src)
    return t


def gather_objects(obj: object) -> list[object]:
    """Every rank's `obj`, in rank order (a one-element list in a single process)."""
    if not is_distributed():
        return [obj]
    out: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if is_distributed():
        dist.barrier()
