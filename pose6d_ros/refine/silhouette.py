"""Silhouette agreement of pose hypotheses with instance masks, batched.

Each object is a fixed set of surface points. A hypothesis's silhouette in an instance's
crop is where its projected points land on a coarse grid (dilated by one cell, so the
sampling leaves no holes); its agreement with the instance's mask is the IoU of the two.
No rasterisation: one projection and one scatter for every hypothesis of every instance.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import trimesh
from torch import Tensor
from torch.nn import functional

from pose6d_ros.core.objects import ObjectModel

GRID = 32  # cells per crop side
POINTS = 2048  # surface points per object
MASK_THRESHOLD = 0.5


def surface_points(mesh: trimesh.Trimesh, count: int, seed: int = 0) -> np.ndarray:
    """`(count, 3)` points spread over `mesh`'s surface by area, the same for a seed."""
    points, _ = trimesh.sample.sample_surface_even(mesh, count, seed=seed)
    if len(points) < count:  # even sampling may return fewer; top up uniformly
        extra, _ = trimesh.sample.sample_surface(mesh, count - len(points), seed=seed)
        points = np.concatenate([points, extra])
    return np.asarray(points[:count], np.float64)


class SilhouetteScorer:
    """IoU of hypotheses' point silhouettes with instance masks, on a `grid` x `grid` crop."""

    def __init__(self, objects: Sequence[ObjectModel], *, device: str | torch.device = "cpu",
                 points: int = POINTS, grid: int = GRID) -> None:
        self.device, self.grid = torch.device(device), grid
        pts = np.stack([surface_points(o.mesh, points) for o in objects])
        self.points = torch.from_numpy(pts).to(self.device)  # (O, P, 3) metres

    def silhouettes(self, labels: Tensor, R: Tensor, t: Tensor, K: Tensor, crop_boxes: Tensor
                    ) -> Tensor:
        """`(B, H, grid, grid)` bool silhouettes of hypotheses `R (B, H, 3, 3)`, `t (B, H, 3)`
        of objects `labels (B,)` in square crops `crop_boxes (B, 4)` x0, y0, x1, y1."""
        B, H = R.shape[:2]
        G = self.grid
        p = self.points[labels].to(R.dtype)  # (B, P, 3)
        cam = torch.einsum("bhij,bpj->bhpi", R, p) + t[:, :, None]  # (B, H, P, 3)
        uv = cam @ K.to(R.dtype).T
        z = uv[..., 2]
        uv = uv[..., :2] / z.clamp_min(1e-6)[..., None]
        # K's pixel u is centred at u; crop boxes put pixel u at [u, u + 1].
        lo = crop_boxes[:, None, None, :2].to(R.dtype)
        side = (crop_boxes[:, 2] - crop_boxes[:, 0]).to(R.dtype)[:, None, None, None]
        cell = torch.floor((uv + 0.5 - lo) / side * G).long()  # (B, H, P, 2)
        inside = (cell >= 0).all(-1) & (cell < G).all(-1) & (z > 0)
        flat = (cell[..., 1] * G + cell[..., 0]).clamp(0, G * G - 1)
        occ = torch.zeros(B, H, G * G, device=R.device)
        occ.scatter_(2, flat, inside.float())
        occ = functional.max_pool2d(occ.view(B * H, 1, G, G), 3, stride=1, padding=1)
        return occ.view(B, H, G, G) > 0

    def iou(self, labels: Tensor, R: Tensor, t: Tensor, K: Tensor, crop_boxes: Tensor,
            masks: Tensor) -> Tensor:
        """`(B, H)` IoU of the hypotheses' silhouettes (see `silhouettes`) with instance
        masks `masks (B, S, S)`, probabilities over the same crops."""
        sil = self.silhouettes(labels, R, t, K, crop_boxes)
        m = functional.adaptive_avg_pool2d(masks[:, None].float(), self.grid)[:, 0]
        m = (m > MASK_THRESHOLD)[:, None]  # (B, 1, G, G)
        inter = (sil & m).flatten(2).sum(-1).float()
        union = (sil | m).flatten(2).sum(-1).float()
        return inter / union.clamp_min(1.0)
