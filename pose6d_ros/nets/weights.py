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
    ckpt = _load(path, map_location)
    found = checkpoint_kind(ckpt)
    if found != kind:
        what = f"a {KIND_NAMES.get(found, found)} checkpoint" if found else "an unknown file"
        raise WeightsError(f"{path}: not a {KIND_NAMES[kind]} checkpoint ({what})")
    return ckpt


def _load(path: str | Path, map_location: str | torch.device) -> Any:
    """`torch.load(weights_only=True)` with errors naming the file; int8-stored weights come
    back as float32 in "model"."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{path}: cannot load weights: {exc}") from exc
    if isinstance(ckpt, dict) and INT8 in ckpt:
        q, scale = ckpt.pop(INT8), ckpt.pop(INT8_SCALE)
        ckpt["model"].update({k: q[k].float() * scale[k].float() for k in q})
    return ckpt


INT8, INT8_SCALE = "model_int8", "model_int8_scale"  # keys of int8-stored weights
INT8_MIN_SIZE = 4096  # smaller tensors (biases, norms, small kernels) stay float16


def shrink_checkpoint(src: str | Path, dst: str | Path, *, int8: bool = False) -> int:
    """Copy checkpoint `src` to `dst` without the optimiser state, its weights stored as
    float16, or with `int8` the large weight matrices and kernels as int8 with one float16
    scale per output channel (symmetric; a quarter of float32). Returns the bytes written;
    every loader casts back to float32."""
    ckpt = _load(src, "cpu")
    if checkpoint_kind(ckpt) is None:
        raise WeightsError(f"{src}: not a pose6d checkpoint (no 'config'/'model')")
    keep = {k: v for k, v in ckpt.items() if k not in ("optimizer", "scheduler")}
    model, q, scales = {}, {}, {}
    for name, v in ckpt["model"].items():
        if int8 and v.is_floating_point() and v.dim() >= 2 and v.numel() >= INT8_MIN_SIZE:
            amax = v.abs().amax(dim=tuple(range(1, v.dim())), keepdim=True)
            scale = (amax / 127).clamp_min(1e-12).half()
            q[name] = (v / scale.float()).round().clamp(-127, 127).to(torch.int8)
            scales[name] = scale
        else:
            model[name] = v.half() if v.is_floating_point() else v
    keep["model"] = model
    if q:
        keep[INT8], keep[INT8_SCALE] = q, scales
    torch.save(keep, dst)
    return Path(dst).stat().st_size
