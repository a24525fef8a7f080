"""From CoordNet predictions to 2D-3D correspondences, batched over instances."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class CorrespondenceOptions:
    """Which predicted pixels become PnP correspondences (Pix2Pose-like defaults)."""

    mask_threshold: float = 0.5  # predicted object probability
    error_threshold: float = 0.15  # predicted error, normalised coordinate units
    # Also keep the instance's best `error_quantile` of mask pixels, so a net whose error
    # estimates are all high still yields its most trusted pixels (RANSAC judges them).
    error_quantile: float = 0.5
    max_points: int = 400  # per instance, sampled evenly at random
    min_points: int = 12  # fewer: the instance is reported as failed


DEFAULT_CORRESPONDENCES = CorrespondenceOptions()


@dataclass
class Correspondences:
    """Padded correspondences of B instances."""

    x2d: Tensor  # (B, N, 2) full-image pixels
    x3d: Tensor  # (B, N, 3) object points, metres
    mask: Tensor  # (B, N) bool, real points
    count: Tensor  # (B,) selected pixels per instance (before the min_points rule)


def crop_pixels_to_image(uv: Tensor, boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Full-image pixels `(B, N, 2)` of crop pixels `uv (B, N, 2)` of crops `boxes (B, 4)`
    (x0, y0, x1, y1; roi_align(aligned=True) convention) resized to `size` (h, w)."""
    h, w = size
    sx = w / (boxes[:, 2] - boxes[:, 0])
    sy = h / (boxes[:, 3] - boxes[:, 1])
    u = (uv[..., 0] + 0.5) / sx[:, None] + boxes[:, None, 0] - 0.5
    v = (uv[..., 1] + 0.5) / sy[:, None] + boxes[:, None, 1] - 0.5
    return torch.stack([u, v], -1)


def random_pixels(keep: Tensor, count: int, generator: torch.Generator
                  ) -> tuple[Tensor, Tensor]:
    """Up to `count` random pixels per instance among `keep (B, P)` (bool over flattened
    pixels): indices `(B, n)` and whether each is a kept pixel `(B, n)`, n = min(count, P).

    Kept pixels outrank the rest; random keys spread the sample over the object."""
    key = keep.float() * 2 + torch.rand(keep.shape, generator=generator, device=keep.device)
    idx = key.topk(min(count, keep.shape[1]), dim=1).indices
    return idx, keep.gather(1, idx)


def gather_coordinates(xyz: Tensor, idx: Tensor, center: Tensor, scale: Tensor,
                       dtype: torch.dtype | None = None) -> Tensor:
    """Object points `(B, n, 3)` in metres at flattened pixels `idx (B, n)` of normalised
    coordinate maps `xyz (B, 3, H, W)`; `center`, `scale (B, 3)`; in `dtype` (default
    xyz's)."""
    B, n = idx.shape
    dtype = dtype or xyz.dtype
    pts = xyz.reshape(B, 3, -1).gather(2, idx[:, None, :].expand(B, 3, n)).transpose(1, 2)
    return pts.to(dtype) * scale[:, None, :].to(dtype) + center[:, None, :].to(dtype)


def select_correspondences(xyz: Tensor, error: Tensor, mask_logit: Tensor, center: Tensor,
                           scale: Tensor, boxes: Tensor,
                           options: CorrespondenceOptions = DEFAULT_CORRESPONDENCES, *,
                           seed: int = 0) -> Correspondences:
    """Correspondences from predictions `xyz (B, 3, H, W)` (normalised), `error` and
    `mask_logit (B, 1, H, W)`, with each instance's `center`, `scale (B, 3)` and crop
    `boxes (B, 4)`. Deterministic for a seed."""
    B, _, H, W = xyz.shape
    inside = (torch.sigmoid(mask_logit[:, 0]) > options.mask_threshold).reshape(B, -1)
    err = error[:, 0].reshape(B, -1)
    limit = torch.full((B,), options.error_threshold, dtype=err.dtype, device=err.device)
    if options.error_quantile > 0:
        q = torch.nanquantile(torch.where(inside, err, torch.nan), options.error_quantile, dim=1)
        limit = torch.maximum(limit, torch.nan_to_num(q, nan=-1.0))
    keep = inside & (err <= limit[:, None])  # (B, H*W)
    gen = torch.Generator(device=xyz.device).manual_seed(seed)
    idx, mask = random_pixels(keep, options.max_points, gen)
    count = keep.sum(1)
    mask &= (count >= options.min_points)[:, None]
    uv = torch.stack([idx % W, idx // W], -1).to(xyz.dtype)
    x2d = crop_pixels_to_image(uv, boxes.to(xyz.dtype), (H, W))
    x3d = gather_coordinates(xyz, idx, center, scale)
    return Correspondences(x2d=x2d, x3d=x3d, mask=mask, count=count)
