"""Per-stage wall-clock timings of one frame."""

from __future__ import annotations

import time

import torch


class StageTimer:
    """Milliseconds per named stage; on CUDA, `sync=True` waits for the device at each mark
    so a stage's time is its own (costs a little throughput)."""

    def __init__(self, device: torch.device | None = None, *, sync: bool = True) -> None:
        self.cuda = device is not None and device.type == "cuda" and sync
        self.ms: dict[str, float] = {}
        self._last = self._first = time.perf_counter()

    def mark(self, stage: str) -> None:
        """End `stage` now (the time since the previous mark, added to its total)."""
        if self.cuda:
            torch.cuda.synchronize()
        now = time.perf_counter()
        self.ms[stage] = self.ms.get(stage, 0.0) + 1e3 * (now - self._last)
        self._last = now

    def total_ms(self) -> float:
        """Milliseconds from creation to the last mark."""
        return 1e3 * (self._last - self._first)
