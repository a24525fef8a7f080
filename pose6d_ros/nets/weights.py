"""Checkpoint files of every network: writing, reading with weights_only=True and clear
errors, and the shipping form (float16 storage, no optimiser state)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

KIND_NAMES = {"coordnet": "CoordNet", "detector": "detector"}  # "kind" key -> how errors say it


class WeightsError(ValueError):
    """A weights file that cannot be used, naming the file."""


def write_checkpoint(path: str | Path, model: nn.Module, kind: str, config: dict[str, Any],
                     **extra: Any) -> None:
    """Weights + architecture `config` (+ optimiser state, counters) of a `kind` network."""
    net = model.module if hasattr(model, "module") else model  # unwrap DDP
    torch.save({"kind": kind, "config": config, "model": net.state_dict(), **extra}, path)


def checkpoint_kind(ckpt: object) -> str | None:
    """The network a loaded checkpoint holds (None: not a checkpoint of ours)."""
    if not isinstance(ckpt, dict) or "config" not in ckpt or "model" not in ckpt:
        return None
    return ckpt.get("kind", "coordnet")  # CoordNet files predate the "kind" key


def read_checkpoint(path: str | Path, kind: str, map_location: str | torch.device = "cpu"
                    ) -> dict[str, Any]:
    """The checkpoint of a `kind` network at `path`; WeightsError names the file and what
    is wrong with it (missing, unreadable, another network's)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{path}: cannot load weights: {exc}") from exc
    found = checkpoint_kind(ckpt)
    if found != kind:
        what = f"a {KIND_NAMES.get(found, found)} checkpoint" if found else "an unknown file"
        raise WeightsError(f"{path}: not a {KIND_NAMES[kind]} checkpoint ({what})")
    return ckpt


def shrink_checkpoint(src: str | Path, dst: str | Path) -> int:
    """Copy checkpoint `src` to `dst` with its weights stored as float16 and without the
    optimiser state; returns the bytes written. `load_state_dict` casts back to float32."""
    try:
        ckpt = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{src}: cannot load weights: {exc}") from exc
    if checkpoint_kind(ckpt) is None:
        raise WeightsError(f"{src}: not a pose6d checkpoint (no 'config'/'model')")
    keep = {k: v for k, v in ckpt.items() if k not in ("optimizer", "scheduler")}
    keep["model"] = {k: v.half() if v.is_floating_point() else v
                     for k, v in ckpt["model"].items()}
    torch.save(keep, dst)
    return Path(dst).stat().st_size
