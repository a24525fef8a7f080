"""What every training loop shares: the device and process group, the learning-rate
schedule, atomic checkpoint writes and the loop itself (`TrainLoop`)."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml

from pose6d_ros.nets.precision import network_dtype
from pose6d_ros.nets.weights import WeightsError
from pose6d_ros.train.logs import CsvLog, plot_curves

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self is Python >= 3.11


@dataclass
class RunConfig:
    """The settings of every training run; a trainer's config adds its own (and may change
    these defaults)."""

    data: str | list[str]  # dataset folder(s), trained on as one
    objects: str
    out: str
    split: str = "train"
    epochs: int = 20
    max_steps: int = 0  # stop after this many optimiser steps (0: run all epochs)
    # End this invocation after this step (0: at the end) with the learning-rate schedule
    # still that of the whole run, so that --resume (or a copy of the run folder resumed
    # with other settings) goes on from there.
    stop_after: int = 0
    # End this invocation at the first step after this many seconds of it (0: no limit),
    # saving as at a normal end (last.pt, final weights) so that --resume goes on.
    time_limit_s: float = 0.0
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    workers: int = 2  # data-loading processes
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    amp: bool = True  # bf16 autocast on CUDA
    seed: int = 0
    checkpoint_every: int = 500
    log_every: int = 10
    # Validation at every checkpoint (val.csv, val.png) on the `val_split` of `val_data`
    # (default: data), when that split exists; "" switches it off.
    val_data: str | None = None
    val_split: str = "val"

    @classmethod
    def fields_(cls) -> set[str]:
        """Names of the settings."""
        return {f.name for f in fields(cls)}

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> Self:
        """A config from CLI/YAML values (None means: the default; unknown names ignored)."""
        known = cls.fields_()
        return cls(**{k: v for k, v in values.items() if k in known and v is not None})


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


class TrainLoop:
    """The loop both trainers run: epochs over a (distributed) random sampler, clipped
    optimiser steps, the CSV log and progress bar, periodic checkpoints and plots.

    A subclass's constructor calls `start_process`, builds `dataset` and `net` (the bare
    module), then `setup_training(module, optimizer)` and `start_run`; it implements
    `losses`, `save_checkpoint`, `load_checkpoint` and `plot`. `cfg` needs out, device,
    seed, epochs, max_steps, stop_after, time_limit_s, batch_size, workers, log_every,
    checkpoint_every.
    """

    name = "train"  # progress-bar label
    final_name = "weights.pt"  # final weights file in the run folder
    clip_grad = 5.0
    collate_fn: Callable | None = None
    # Validation: set `val_set` (rank 0, before `start_run`) and implement `validate`, whose
    # figures `val_fields` go to val.csv and, those in `val_curves`, to val.png.
    val_set: Any = None
    val_fields: tuple[str, ...] = ()
    val_curves: tuple[str, ...] = ()

    def start_process(self, cfg: Any, progress: bool) -> None:
        """This process's device and rank, its seed, and the run folder."""
        self.cfg, self.progress = cfg, progress
        proc = init_process(cfg.device)
        self.world, self.rank, self.device = proc.world, proc.rank, proc.device
        torch.manual_seed(cfg.seed + self.rank)
        self.out = Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)

    @property
    def amp_dtype(self) -> torch.dtype | None:
        """The autocast dtype of training: bf16 on CUDA with `cfg.amp`, else None."""
        return network_dtype("auto" if self.cfg.amp else "fp32", self.device)

    def setup_training(self, module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """`model` (the module, DDP-wrapped with several processes), `opt`, and the
        warm-up + cosine schedule over the run's `total_steps`."""
        cfg = self.cfg
        self.model = module
        if self.world > 1:
            self.model = torch.nn.parallel.DistributedDataParallel(
                module, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.opt = optimizer
        total = len(self.dataset) // (cfg.batch_size * self.world) * cfg.epochs
        self.total_steps = min(total, cfg.max_steps) if cfg.max_steps > 0 else total
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda step: warmup_cosine(step, self.total_steps))

    def start_run(self, resume: bool, log_fields: list[str]) -> None:
        """Counters at 0, or those of `last.pt` with `resume`; config.yaml and the CSV log."""
        self.step = self.epoch = 0
        last = self.out / "last.pt"
        if resume and last.exists():
            ckpt = self.load_checkpoint(last)
            try:
                self.net.load_state_dict(ckpt["model"])
                self.opt.load_state_dict(ckpt["optimizer"])
                self.sched.load_state_dict(ckpt["scheduler"])
            except (KeyError, ValueError, RuntimeError) as exc:
                raise WeightsError(f"{last}: cannot resume this run's settings from it: "
                                   f"{exc}") from exc
            self.step, self.epoch = int(ckpt["step"]), int(ckpt["epoch"])
        if self.rank == 0:
            (self.out / "config.yaml").write_text(yaml.safe_dump(asdict(self.cfg),
                                                                 sort_keys=False))
            self.log = CsvLog(self.out / "log.csv", log_fields)
            if self.val_set is not None:
                self.val_log = CsvLog(self.out / "val.csv", ["step", "epoch", *self.val_fields])

    def validation_root(self) -> Path | None:
        """The dataset folder whose `val_split` is validated at every checkpoint (None: no
        validation; default: the first `data` folder). A missing split is an error only when
        `val_data` was given."""
        cfg = self.cfg
        if not cfg.val_split:
            return None
        root = Path(cfg.val_data or (cfg.data if isinstance(cfg.data, str) else cfg.data[0]))
        if not (root / cfg.val_split).is_dir():
            if cfg.val_data:  # asked for explicitly
                raise ValueError(f"{root / cfg.val_split}: no validation split there")
            return None
        return root

    @staticmethod
    def spread_subset(dataset: Any, count: int) -> Any:
        """At most `count` items of `dataset`, evenly spaced over it (a fixed choice)."""
        from torch.utils.data import Subset

        step = max(1, len(dataset) // max(1, count))
        return Subset(dataset, range(0, len(dataset), step)[:count])

    def load_checkpoint(self, path: Path) -> dict[str, Any]:
        """The checkpoint at `path`, checked to be of this trainer's network."""
        raise NotImplementedError

    def losses(self, batch: object) -> dict[str, torch.Tensor]:
        """Every loss term of one batch (scalars) plus the total under "loss"."""
        raise NotImplementedError

    def save_checkpoint(self, path: Path, *, final: bool) -> None:
        """Write the weights (and, unless `final`, the optimiser state) to `path`."""
        raise NotImplementedError

    def plot(self) -> None:
        """Redraw the run's loss curves."""
        raise NotImplementedError

    def validate(self) -> dict[str, float]:
        """The `val_fields` figures on `val_set`."""
        raise NotImplementedError

    def checkpoint_done(self) -> None:
        """After each checkpoint, on rank 0: validate (when there is a validation set), then
        redraw the curves."""
        if self.val_set is not None:
            self.val_log.write({"step": self.step, "epoch": self.epoch, **self.validate()})
            plot_curves(self.out / "val.csv", self.out / "val.png", curves=list(self.val_curves),
                        title=f"{self.name}: validation ({self.out.name})")
        self.plot()

    def _out_of_time(self, start: float) -> bool:
        """Whether this invocation has run past `cfg.time_limit_s` since `start` (every
        process gets rank 0's answer, so that all stop at the same step)."""
        limit = self.cfg.time_limit_s
        if limit <= 0:
            return False
        late = time.perf_counter() - start > limit
        if self.world > 1:
            flag = torch.tensor(float(late), device=self.device)
            torch.distributed.broadcast(flag, src=0)
            late = bool(flag.item())
        return late

    def _save(self, name: str, *, final: bool = False) -> None:
        if self.rank == 0:
            save_atomic(self.out / name, lambda tmp: self.save_checkpoint(tmp, final=final))

    def run(self) -> Path:
        """Train to the configured length; returns the final weights' path."""
        from torch.utils.data import DataLoader, DistributedSampler, RandomSampler
        from tqdm import tqdm

        cfg = self.cfg
        end = min(self.total_steps, cfg.stop_after) if cfg.stop_after > 0 else self.total_steps
        bar = tqdm(total=end, initial=self.step, unit="step", desc=self.name,
                   disable=not self.progress or self.rank != 0)
        start = time.perf_counter()
        self.model.train()
        late = False
        while self.step < end and not late:
            if self.world > 1:
                sampler = DistributedSampler(self.dataset, seed=cfg.seed, drop_last=True)
                sampler.set_epoch(self.epoch)
            else:
                sampler = RandomSampler(self.dataset, generator=torch.Generator().manual_seed(
                    cfg.seed + self.epoch))
            loader = DataLoader(self.dataset, batch_size=cfg.batch_size, sampler=sampler,
                                num_workers=cfg.workers, drop_last=True,
                                collate_fn=self.collate_fn,
                                pin_memory=self.device.type == "cuda")
            for batch in loader:
                terms = self.losses(batch)
                self.opt.zero_grad(set_to_none=True)
                terms["loss"].backward()
                torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.clip_grad)
                self.opt.step()
                self.sched.step()
                self.step += 1
                bar.update(1)
                late = self._out_of_time(start)
                if self.rank == 0 and (self.step % cfg.log_every == 0 or self.step == end
                                       or late):
                    row = {k: float(v.detach()) for k, v in terms.items()}
                    row.update(step=self.step, epoch=self.epoch,
                               lr=self.sched.get_last_lr()[0],
                               seconds=time.perf_counter() - start)
                    self.log.write(row)
                    bar.set_postfix(loss=f"{row['loss']:.4f}")
                if self.step % cfg.checkpoint_every == 0:
                    self._save("last.pt")
                    if self.rank == 0:
                        self.checkpoint_done()
                if self.step >= end or late:
                    break
            self.epoch += 1
        bar.close()
        if self.step % cfg.checkpoint_every:  # else the loop has just saved and validated
            self._save("last.pt")
            if self.rank == 0:
                self.checkpoint_done()
        self._save(self.final_name, final=True)
        if self.world > 1:
            torch.distributed.barrier()
        return self.out / self.final_name
