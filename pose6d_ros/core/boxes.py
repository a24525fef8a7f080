"""Axis-aligned image boxes, x, y, w, h in pixels: around points, and their overlap."""

from __future__ import annotations

import torch
from torch import Tensor


def points_box(uv: Tensor, keep: Tensor) -> Tensor:
    """`(N, 4)` x, y, w, h around the image points `uv (N, S, 2)` where `keep (N, S)`; an
    empty box where none is kept."""
    big = torch.finfo(uv.dtype).max
    lo = torch.where(keep[..., None], uv, big).amin(1)
    hi = torch.where(keep[..., None], uv, -big).amax(1)
    none = ~keep.any(1)[:, None]
    lo, hi = torch.where(none, 0.0, lo), torch.where(none, 0.0, hi)
    return torch.cat([lo, hi - lo], 1)


def box_iou_xywh(a: Tensor, b: Tensor) -> Tensor:
    """IoU of boxes `a (..., 4)` and `b (..., 4)` (x, y, w, h), broadcast: pairs of equal
    shapes, or every pair with `a[:, None]` and `b[None]`."""
    lo = torch.maximum(a[..., :2], b[..., :2])
    hi = torch.minimum(a[..., :2] + a[..., 2:], b[..., :2] + b[..., 2:])
    inter = (hi - lo).clamp_min(0).prod(-1)
    union = a[..., 2:].prod(-1) + b[..., 2:].prod(-1) - inter
    return inter / union.clamp_min(1e-9)
