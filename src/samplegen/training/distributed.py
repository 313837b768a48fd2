"""Data-parallel training on PyTorch's own engine: torch.distributed, DDP, torchrun's launcher.

Three ways in, one training loop:

- ``samplegen train`` alone: one process (world size 1; every helper here is a no-op);
- ``samplegen train --devices N [--nodes M --rdzv HOST:PORT]``: this module
  starts N processes per machine with torch's elastic launcher (the engine
  behind ``torchrun``), which meet at a c10d rendezvous;
- ``torchrun ... -m samplegen.cli train ...``: the environment (RANK,
  WORLD_SIZE, MASTER_ADDR, ...) is detected and the process group joined.

Processes use NCCL and one GPU each when CUDA is available, gloo on CPUs
otherwise.  Rank 0 alone writes files; every rank reads the same data
order, so results match one process up to floating-point summation order.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist

from samplegen.errors import ParameterError, SampleGenError

#: Generous: rank 0 may build the feature cache while the others wait at a barrier.
COLLECTIVE_TIMEOUT = timedelta(hours=6)


class DistributedError(SampleGenError):
    """A distributed run could not start or one of its processes failed."""


@dataclass(frozen=True)
class Context:
    """Where this process stands: its rank among ``world`` processes and its device."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def launched_by_torchrun() -> bool:
    """True inside a process started by torchrun (or any launcher that sets WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def current() -> Context:
    """The context of this process (rank 0 of 1 unless a process group is initialised)."""
    if not (dist.is_available() and dist.is_initialized()):
        return Context()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = f"cuda:{local}" if dist.get_backend() == "nccl" else "cpu"
    return Context(dist.get_rank(), dist.get_world_size(), local, device)


#: What ``--device`` accepts.
DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str) -> str:
    """"auto" → "cuda" when a GPU is visible, else "cpu"; a clear error for "cuda" without one."""
    if device not in DEVICES:
        raise ParameterError(f"device={device!r} must be one of {DEVICES}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ParameterError("device='cuda' but CUDA is not available; use --device cpu")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def join_from_env(device: str = "auto") -> Context:
    """Join the process group described by the environment (torchrun's variables).

    ``device``: "auto" takes GPU ``LOCAL_RANK`` with NCCL when CUDA is available,
    else the CPU with gloo; "cpu" forces gloo on the CPU.
    """
    if not dist.is_available():
        raise DistributedError("this torch build has no torch.distributed; train with one process")
    if dist.is_initialized():
        return current()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = resolve_device(device) == "cuda"
    if use_cuda:
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if use_cuda else "gloo", timeout=COLLECTIVE_TIMEOUT)
    return current()


def leave() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: Context) -> None:
    if ctx.distributed:
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor, ctx: Context) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place (on the process group's device) and return it."""
    if not ctx.distributed:
        return tensor
    moved = tensor.to(ctx.device)
    dist.all_reduce(moved, op=dist.ReduceOp.SUM)
    if moved is not tensor:
        tensor.copy_(moved.to(tensor.device))
    return tensor


def broadcast_flag(ok: bool, ctx: Context) -> bool:
    """Rank 0's boolean, on every rank (so all ranks stop together when rank 0 refuses)."""
    if not ctx.distributed:
        return ok
    t = torch.tensor([1 if ok else 0], device=ctx.device)
    dist.broadcast(t, src=0)
    return bool(t.item())


@dataclass(frozen=True)
class BatchShard:
    """This process's share of one global batch: the batch's rows ``rank, rank + world, ...``.

    The global batch is the same whatever the number of processes. A process left without a row (a last
    batch smaller than the world) reads the batch's first row and weighs it 0.
    """

    rows: np.ndarray  # positions in the epoch's order that this process reads
    n_local: int  # rows that count (0 for a process left without one)
    n_global: int  # rows in the global batch
    rank: int = 0
    world: int = 1

    @property
    def loss_weight(self) -> float:
        """DDP averages gradients over processes; weighing the loss by the local share makes that the global mean."""
        return self.n_local * self.world / self.n_global

    def noise(self, global_noise: torch.Tensor) -> torch.Tensor:
        """This process's rows of noise drawn (the same on every process) for the whole global batch."""
        return global_noise[self.rank :: self.world] if self.n_local else global_noise[:1]


def shard_batches(order: np.ndarray, batch_size: int, ctx: Context) -> list[BatchShard]:
    """Global batch b is ``order[b·B : (b+1)·B]`` whatever the number of processes: this process's share of each.

    >>> shards = shard_batches(np.arange(5), 4, Context(rank=1, world=2))
    >>> [s.rows.tolist() for s in shards], [s.n_local for s in shards]
    ([[1, 3], [4]], [2, 0])
    """
    shards = []
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        mine = batch[ctx.rank :: ctx.world]
        shards.append(BatchShard(mine if len(batch) > ctx.rank else batch[:1], len(mine), len(batch),
                                 ctx.rank, ctx.world))
    return shards


def rows_of(rows: np.ndarray, ctx: Context) -> np.ndarray:
    """This process's share of rows to measure (validation): ``rank, rank + world, ...``; the sums are added
    over processes with :func:`all_reduce_sum`."""
    return rows[ctx.rank :: ctx.world]


def wrap(model: torch.nn.Module, ctx: Context) -> torch.nn.Module:
    """The model as the optimiser's steps call it: in a distributed run wrapped in DDP, which starts every process
    from rank 0's weights and averages gradients in buckets during backward; alone, the model itself."""
    if not ctx.distributed:
        return model
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=[ctx.device] if ctx.device.startswith("cuda")
                                                     else None)


def launch(entry: Callable[..., Any], args: tuple[Any, ...], *, devices: int, nodes: int = 1,
           rdzv: str | None = None, run_id: str | None = None) -> dict[int, Any]:
    """Start ``devices`` processes on this machine running ``entry(*args)`` (torch's elastic launcher).

    Parameters
    ----------
    entry : a module-level function (it is started in fresh processes)
    devices : processes on this machine (one per GPU, or CPU processes)
    nodes : machines taking part; each runs the same command
    rdzv : HOST:PORT of the rendezvous (any one of the machines); required when nodes > 1
    run_id : the job's name at the rendezvous, the same on every machine

    Returns
    -------
    {global rank: return value} of the processes started here.
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if not isinstance(devices, int) or devices < 1:
        raise ParameterError(f"devices={devices!r} must be a positive integer")
    if not isinstance(nodes, int) or nodes < 1:
        raise ParameterError(f"nodes={nodes!r} must be a positive integer")
    if nodes > 1 and not rdzv:
        raise ParameterError("nodes > 1 needs --rdzv HOST:PORT, the address of one machine every node can reach")
    config = LaunchConfig(
        min_nodes=nodes, max_nodes=nodes, nproc_per_node=devices,
        rdzv_backend="c10d", rdzv_endpoint=rdzv or "localhost:0",
        run_id=run_id or ("samplegen" if nodes > 1 else f"samplegen-{uuid.uuid4().hex[:8]}"),
        max_restarts=0, monitor_interval=0.1, start_method="spawn",
    )
    try:
        return elastic_launch(config, entry)(*args)
    except ChildFailedError as exc:
        first = next(iter(exc.failures.values()), None)
        why = first.message if first is not None and first.message else str(exc).strip().splitlines()[0]
        raise DistributedError(f"a training process failed ({why}); see the log above") from None
