"""Rigid transforms as `(R, t)` pairs, batched: `R (*, 3, 3)`, `t (*, 3)` in metres.

Names carry frames: `T_cam_obj` maps points of the object frame into the camera frame,
`p_cam = R_cam_obj @ p_obj + t_cam_obj`.
"""

import torch
from torch import Tensor


def transform_points(R: Tensor, t: Tensor, points: Tensor) -> Tensor:
    """Points `(*, N, 3)` mapped by `(R (*, 3, 3), t (*, 3))`."""
    return points @ R.transpose(-1, -2) + t.unsqueeze(-2)


def compose(R_ab: Tensor, t_ab: Tensor, R_bc: Tensor, t_bc: Tensor) -> tuple[Tensor, Tensor]:
    """`T_ac = T_ab @ T_bc` for batched `(R, t)` pairs."""
    return R_ab @ R_bc, (R_ab @ t_bc.unsqueeze(-1)).squeeze(-1) + t_ab


def inverse(R: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """`T^-1` of batched `(R, t)` pairs."""
    R_inv = R.transpose(-1, -2)
    return R_inv, -(R_inv @ t.unsqueeze(-1)).squeeze(-1)


def to_matrix(R: Tensor, t: Tensor) -> Tensor:
    """Homogeneous 4x4 matrices `(*, 4, 4)` from `(R (*, 3, 3), t (*, 3))`."""
    T = torch.zeros(*R.shape[:-2], 4, 4, dtype=R.dtype, device=R.device)
    T[..., :3, :3] = R
    T[..., :3, 3] = t
    T[..., 3, 3] = 1.0
    return T


def from_matrix(T: Tensor) -> tuple[Tensor, Tensor]:
    """`(R (*, 3, 3), t (*, 3))` from homogeneous matrices `(*, 4, 4)`."""
    return T[..., :3, :3], T[..., :3, 3]
