"""Pose-error metrics with the BOP toolkit's definitions, batched in torch.

Poses are T_cam_obj: `R (B, 3, 3)`, `t (B, 3)`; model points `(N, 3)` or `(B, N, 3)`;
symmetry pools as in SymmetryPools: `pool_R (B, P, 3, 3)`, `pool_t (B, P, 3)`,
`pool_valid (B, P)`. Distances come out in the units of the inputs.
"""

import math

import torch
from torch import Tensor

from pose6d_ros.core.camera import project
from pose6d_ros.core.pose import transform_points

MSSD_THRESHOLDS = torch.arange(0.05, 0.51, 0.05, dtype=torch.float64)  # x diameter
MSPD_THRESHOLDS = torch.arange(5.0, 51.0, 5.0, dtype=torch.float64)  # px at 640 width


def _points(points: Tensor, batch: int) -> Tensor:
    return points.expand(batch, *points.shape[-2:]) if points.dim() == 2 else points


def add(R_est: Tensor, t_est: Tensor, R_gt: Tensor, t_gt: Tensor, points: Tensor) -> Tensor:
    """ADD `(B,)`: mean distance between corresponding model points."""
    pts = _points(points, R_est.shape[0])
    d = transform_points(R_est, t_est, pts) - transform_points(R_gt, t_gt, pts)
    return d.norm(dim=-1).mean(-1)


def adds(R_est: Tensor, t_est: Tensor, R_gt: Tensor, t_gt: Tensor, points: Tensor) -> Tensor:
    """ADD-S (BOP's ADI) `(B,)`: mean distance from each estimated point to the closest
    ground-truth point."""
    pts = _points(points, R_est.shape[0])
    est = transform_points(R_est, t_est, pts)
    gt = transform_points(R_gt, t_gt, pts)
    return torch.cdist(est, gt).min(-1).values.mean(-1)


def _symmetric_gt(R_gt: Tensor, t_gt: Tensor, pool_R: Tensor, pool_t: Tensor
                  ) -> tuple[Tensor, Tensor]:
    """Ground-truth poses composed with every pool member: `(B, P, 3, 3)`, `(B, P, 3)`."""
    R = R_gt.unsqueeze(1) @ pool_R
    t = (R_gt.unsqueeze(1) @ pool_t.unsqueeze(-1)).squeeze(-1) + t_gt.unsqueeze(1)
    return R, t


def mssd(R_est: Tensor, t_est: Tensor, R_gt: Tensor, t_gt: Tensor, points: Tensor,
         pool_R: Tensor, pool_t: Tensor, pool_valid: Tensor) -> Tensor:
    """MSSD `(B,)`: over the symmetry pool, the smallest maximum point distance."""
    pts = _points(points, R_est.shape[0]).unsqueeze(1)  # (B, 1, N, 3)
    est = transform_points(R_est, t_est, pts.squeeze(1)).unsqueeze(1)
    Rs, ts = _symmetric_gt(R_gt, t_gt, pool_R, pool_t)
    err = (est - transform_points(Rs, ts, pts)).norm(dim=-1).max(-1).values  # (B, P)
    return torch.where(pool_valid, err, torch.full_like(err, torch.inf)).min(-1).values


def mspd(R_est: Tensor, t_est: Tensor, R_gt: Tensor, t_gt: Tensor, points: Tensor, K: Tensor,
         pool_R: Tensor, pool_t: Tensor, pool_valid: Tensor) -> Tensor:
    """MSPD `(B,)` in pixels: over the pool, the smallest maximum projected distance.

    K: `(3, 3)` or `(B, 3, 3)`.
    """
    B = R_est.shape[0]
    K = K.expand(B, 3, 3)
    pts = _points(points, B).unsqueeze(1)
    est = project(transform_points(R_est, t_est, pts.squeeze(1)), K).unsqueeze(1)
    Rs, ts = _symmetric_gt(R_gt, t_gt, pool_R, pool_t)
    gt = project(transform_points(Rs, ts, pts), K.unsqueeze(1))
    err = (est - gt).norm(dim=-1).max(-1).values
    return torch.where(pool_valid, err, torch.full_like(err, torch.inf)).min(-1).values


def rotation_error_deg(R_est: Tensor, R_gt: Tensor) -> Tensor:
    """Rotation error `(*)` in degrees, BOP's `re`."""
    cos = 0.5 * (torch.diagonal(R_est @ R_gt.transpose(-1, -2), dim1=-2, dim2=-1).sum(-1) - 1)
    return torch.rad2deg(torch.acos(cos.clamp(-1.0, 1.0)))


def translation_error(t_est: Tensor, t_gt: Tensor) -> Tensor:
    """Translation error `(*)`, BOP's `te`."""
    return (t_est - t_gt).norm(dim=-1)


def symmetric_pose_errors(R_est: Tensor, t_est: Tensor, R_gt: Tensor, t_gt: Tensor,
                          pool_R: Tensor, pool_t: Tensor, pool_valid: Tensor
                          ) -> tuple[Tensor, Tensor]:
    """Rotation (degrees) and translation errors `(B,)`, `(B,)` against the pool member of
    the ground truth with the smallest rotation error."""
    Rs, ts = _symmetric_gt(R_gt, t_gt, pool_R, pool_t)
    re = rotation_error_deg(R_est.unsqueeze(1), Rs)
    re = torch.where(pool_valid, re, torch.full_like(re, torch.inf))
    best = re.argmin(-1)
    b = torch.arange(R_est.shape[0], device=R_est.device)
    return re[b, best], translation_error(t_est, ts[b, best])


def recall(errors: Tensor, thresholds: Tensor) -> Tensor:
    """`(T,)` fraction of `errors (B,)` below each threshold `(T,)` or `(B, T)`; NaN and inf
    (failed estimates) count as misses."""
    e = errors.unsqueeze(-1)
    return (e < thresholds).to(torch.float64).mean(0)


def average_recall_mssd(errors: Tensor, diameters: Tensor) -> float:
    """BOP AR_MSSD: mean recall over thresholds 0.05..0.5 x each object's diameter."""
    thr = MSSD_THRESHOLDS.to(errors) * diameters.unsqueeze(-1)
    return float(recall(errors, thr).mean()) if errors.numel() else math.nan


def average_recall_mspd(errors: Tensor, image_width: int) -> float:
    """BOP AR_MSPD: mean recall over thresholds 5..50 px, scaled by image_width / 640."""
    thr = MSPD_THRESHOLDS.to(errors) * (image_width / 640.0)
    return float(recall(errors, thr).mean()) if errors.numel() else math.nan
