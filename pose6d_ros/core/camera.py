"""Pinhole cameras in the OpenCV convention (x right, y down, z forward).

Intrinsics are `K (*, 3, 3)`; pixel `(u, v)` has its centre at integer coordinates, so
the top-left pixel covers [-0.5, 0.5] x [-0.5, 0.5].
"""

import torch
from torch import Tensor


def project(points_cam: Tensor, K: Tensor) -> Tensor:
    """Pixels `(*, N, 2)` of camera-frame points `(*, N, 3)` through intrinsics `(*, 3, 3)`."""
    uvw = points_cam @ K.transpose(-1, -2)
    return uvw[..., :2] / uvw[..., 2:3]


def crop_resize_intrinsics(K: Tensor, boxes: Tensor, out_size: tuple[int, int]) -> Tensor:
    """Intrinsics `(B, 3, 3)` of crops `boxes (B, 4)` (x0, y0, x1, y1 in pixels) resized to
    `out_size` (height, width), from the full image's intrinsics `K (B, 3, 3)` or `(3, 3)`.

    The box edges are pixel edges: the crop of (x0, x1) covers x0 - 0.5 ... x1 - 0.5 in
    pixel-centre coordinates, the convention of torchvision's `roi_align(aligned=True)`.
    """
    K = K.expand(boxes.shape[0], 3, 3)
    h, w = out_size
    sx = w / (boxes[:, 2] - boxes[:, 0])
    sy = h / (boxes[:, 3] - boxes[:, 1])
    # A full-image pixel centre u maps to (u + 0.5 - x0) * sx - 0.5 in the crop.
    A = torch.zeros_like(K)
    A[:, 0, 0] = sx
    A[:, 0, 2] = (0.5 - boxes[:, 0]) * sx - 0.5
    A[:, 1, 1] = sy
    A[:, 1, 2] = (0.5 - boxes[:, 1]) * sy - 0.5
    A[:, 2, 2] = 1.0
    return A @ K


def scale_intrinsics(K: Tensor, scale_x: float, scale_y: float) -> Tensor:
    """Intrinsics `(*, 3, 3)` of an image resized by (scale_x, scale_y), pixel centres kept."""
    A = torch.diag(torch.tensor([scale_x, scale_y, 1.0], dtype=K.dtype, device=K.device))
    A[0, 2] = 0.5 * scale_x - 0.5
    A[1, 2] = 0.5 * scale_y - 0.5
    return A @ K


def check_intrinsics(K: Tensor, name: str = "K") -> None:
    """Raise ValueError naming `name` unless `K (*, 3, 3)` is a finite pinhole matrix."""
    if K.shape[-2:] != (3, 3):
        raise ValueError(f"{name}: expected shape (..., 3, 3), got {tuple(K.shape)}")
    if not torch.isfinite(K).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    if (K[..., 0, 0] <= 0).any() or (K[..., 1, 1] <= 0).any():
        raise ValueError(f"{name}: focal lengths fx, fy must be positive")
    if (K[..., 2, :2] != 0).any() or (K[..., 2, 2] != 1).any():
        raise ValueError(f"{name}: last row must be [0, 0, 1]")
