"""Runs launched as several processes (torchrun, accelerate launch): which process writes, and what all must agree on.

The Trainer (through accelerate) does the data parallelism; this module only keeps PriceTune's own side effects —
the run folder, the probe, Stop and the time limit — on one process or in step across all of them.
"""

from __future__ import annotations

import os

import torch


def world_size() -> int:
    """How many processes train this run; torchrun and accelerate launch both say so in WORLD_SIZE."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_writer() -> bool:
    """Only rank 0 writes the run folder: one status, one metrics file, one adapter."""
    return rank() == 0


def init() -> None:
    """Join the process group now, before the Trainer would, so the ranks can agree on the run folder first.

    accelerate (inside TrainingArguments) reuses a group that is already initialized."""
    if world_size() > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")


def from_writer(value):
    """Rank 0's `value` on every rank (e.g. the run folder name, which has a timestamp in it)."""
    if world_size() == 1:
        return value
    init()
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def any_rank(*flags: bool) -> list[bool]:
    """Each flag true on every rank if it is true on any rank.

    Stop, the time limit and time-based saves are decided on one process's clock or signal; if the ranks disagreed,
    one would leave the training loop while the others wait for it in the next gradient all-reduce, forever."""
    if world_size() == 1 or not torch.distributed.is_initialized():
        return list(flags)
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    tensor = torch.tensor([int(f) for f in flags], device=device)
    torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
    return [bool(v) for v in tensor.tolist()]


def finish() -> None:
    """Leave the process group cleanly (torch warns at exit otherwise)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
