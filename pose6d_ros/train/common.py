"""What every training loop shares: the device and process group, the learning-rate
schedule, and atomic checkpoint writes."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """The training device: `auto` is this process's CUDA device when present, else the CPU."""
    if name == "auto":
        name = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


@dataclass(frozen=True)
class Process:
    """This process's place in a (possibly single-process) run."""

    world: int  # number of processes
    rank: int
    device: torch.device


def init_process(device: str) -> Process:
    """Device and rank from torchrun's environment; joins the process group when there are
    several processes (NCCL on CUDA, gloo on the CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    dev = pick_device(device, int(os.environ.get("LOCAL_RANK", "0")))
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    return Process(world, rank, dev)


def warmup_cosine(step: int, total_steps: int) -> float:
    """LR factor: linear warm-up over 2 % of the run, then cosine decay to 5 %."""
    warm = max(1, total_steps // 50)
    if step < warm:
        return (step + 1) / warm
    p = min(1.0, (step - warm) / max(1, total_steps - warm))
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * p))


def save_atomic(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` and move tmp onto `path`, so an interrupted save never leaves a
    truncated file where a good one was."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)
