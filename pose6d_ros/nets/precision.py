"""The networks' arithmetic and memory layout per device: one rule for inference and
training."""

from __future__ import annotations

from contextlib import AbstractContextManager

import torch

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def network_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype `precision` names on `device` (None: float32); "auto" is bf16 on
    CUDA and float32 on the CPU."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected auto or one of {sorted(PRECISIONS)}, got "
                         f"{precision!r}")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"precision: fp16 needs CUDA, the device is {device}")
    return PRECISIONS[precision]


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager:
    """Autocast to `dtype` on `device`; a no-op for None (float32)."""
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def memory_format(device: torch.device) -> torch.memory_format:
    """NHWC on CUDA, where its convolutions are faster; the default layout on the CPU, where
    it measured no gain."""
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format
