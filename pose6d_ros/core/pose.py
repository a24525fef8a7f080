"""Rigid transforms as `(R, t)` pairs, batched: `R (*, 3, 3)`, `t (*, 3)` in metres; and the
weighted rigid fit between two point sets (NumPy), shared by ICP and camera placement.

Names carry frames: `T_cam_obj` maps points of the object frame into the camera frame,
`p_cam = R_cam_obj @ p_obj + t_cam_obj`.
"""

import numpy as np
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


def rigid_fit(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None
              ) -> np.ndarray:
    """The rigid transform `T (4, 4)` minimising sum w |dst - T src|^2 (weighted Kabsch),
    `src`, `dst (N, 3)`, `weights (N,)`."""
    w = np.ones(len(src)) if weights is None else np.asarray(weights, np.float64)
    w = w / w.sum()
    ms, md = w @ src, w @ dst
    H = ((src - ms) * w[:, None]).T @ (dst - md)
    U, _, Vt = np.linalg.svd(H)
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(Vt.T @ U.T))])
    T = np.eye(4)
    T[:3, :3] = Vt.T @ D @ U.T
    T[:3, 3] = md - T[:3, :3] @ ms
    return T
