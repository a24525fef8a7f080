"""Shipping form of checkpoints: float16 storage (half the bytes; loaders cast back)."""

from __future__ import annotations

from pathlib import Path

import torch

from pose6d_ros.nets.coordnet import WeightsError


def shrink_checkpoint(src: str | Path, dst: str | Path) -> int:
    """Copy checkpoint `src` to `dst` with its weights stored as float16 and without the
    optimiser state; returns the bytes written. `load_state_dict` casts back to float32."""
    try:
        ckpt = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{src}: cannot load weights: {exc}") from exc
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise WeightsError(f"{src}: not a pose6d checkpoint (no 'config'/'model')")
    keep = {k: v for k, v in ckpt.items() if k not in ("optimizer", "scheduler")}
    keep["model"] = {k: v.half() if v.is_floating_point() else v
                     for k, v in ckpt["model"].items()}
    torch.save(keep, dst)
    return Path(dst).stat().st_size
