"""Training losses of the coordinate network."""

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class SymmetricLossResult:
    """Output of `transformer_loss`."""

    loss: Tensor  # (B,) per-instance loss
    best: Tensor  # (B,) index of the pool member with the smallest loss
    target: Tensor  # (B, 3, H, W) the normalised target of that member


def transformer_loss(pred: Tensor, xyz: Tensor, mask: Tensor, pool_R: Tensor, pool_t: Tensor,
                     pool_valid: Tensor, center: Tensor, scale: Tensor, *, beta: float = 3.0
                     ) -> SymmetricLossResult:
    """Symmetric-minimum L1 loss on coordinate maps (Pix2Pose's transformer loss).

    For each symmetry S = (R_s, t_s) of the object, the pixel that shows object point x
    under pose T shows S^-1 x = R_s^T (x - t_s) under the equivalent pose T S. The loss is
    the minimum over the pool of the mean per-pixel L1 error, object pixels weighted by
    `beta` (> 1), background pixels (target 0) by 1.

    Args:
        pred: `(B, 3, H, W)` predicted normalised coordinates.
        xyz: `(B, 3, H, W)` ground-truth object coordinates in metres (any value outside
            the mask).
        mask: `(B, H, W)` bool, pixels of the object including its occluded parts.
        pool_R: `(B, P, 3, 3)`, pool_t: `(B, P, 3)`, pool_valid: `(B, P)`: each instance's
            symmetry pool (see SymmetryPools), padded.
        center: `(B, 3)`, scale: `(B, 3)`: normalisation, `(x - center) / scale`.
    """
    m = mask.unsqueeze(1).to(pred.dtype)  # (B, 1, H, W)
    R = pool_R.to(pred.dtype)
    t = pool_t.to(pred.dtype)
    # (B, P, 3, H, W) = R_s^T (x - t_s) for every member
    x = xyz.to(pred.dtype).unsqueeze(1) - t[..., None, None]
    x_s = torch.einsum("bpji,bpjhw->bpihw", R, x)
    target = (x_s - center[:, None, :, None, None]) / scale[:, None, :, None, None]
    target = target * m.unsqueeze(1)
    err = (pred.unsqueeze(1) - target).abs().sum(2)  # (B, P, H, W)
    weight = 1.0 + (beta - 1.0) * m  # (B, 1, H, W)
    per_member = (err * weight).mean((-1, -2))  # (B, P)
    per_member = torch.where(pool_valid, per_member, torch.full_like(per_member, torch.inf))
    loss, best = per_member.min(-1)
    b = torch.arange(pred.shape[0], device=pred.device)
    return SymmetricLossResult(loss=loss, best=best, target=target[b, best])


def error_map_loss(pred_error: Tensor, pred_xyz: Tensor, target: Tensor, mask: Tensor, *,
                   clip: float = 1.0, beta: float = 3.0) -> Tensor:
    """Per-instance loss `(B,)` of the predicted error map (Pix2Pose).

    The target is the per-pixel L1 error of `pred_xyz (B, 3, H, W)` against `target` (the
    chosen symmetry member, normalised), clipped at `clip`; `pred_error (B, 1, H, W)` is
    trained towards it with an L2 loss, object pixels (`mask (B, H, W)`) weighted by beta.
    """
    with torch.no_grad():
        err = ((pred_xyz - target).abs().sum(1, keepdim=True) / 3).clamp_max(clip) / clip
    m = mask.unsqueeze(1).to(pred_error.dtype)
    weight = 1.0 + (beta - 1.0) * m
    return (((pred_error - err) ** 2) * weight).mean((-1, -2, -3))


def mask_loss(mask_logit: Tensor, mask: Tensor) -> Tensor:
    """Per-instance binary cross-entropy `(B,)` of `mask_logit (B, 1, H, W)` against
    `mask (B, H, W)`."""
    return torch.nn.functional.binary_cross_entropy_with_logits(
        mask_logit[:, 0], mask.to(mask_logit.dtype), reduction="none").mean((-1, -2))


def projection_loss(R: Tensor, t: Tensor, R_gt: Tensor, t_gt: Tensor, points: Tensor, K: Tensor,
                    *, image_size: float, clip: float = 0.5) -> Tensor:
    """Per-instance mean image distance `(B,)` between mesh points `(B, M, 3)` projected
    with the estimated pose `(R (B, 3, 3), t (B, 3))` and with the ground truth, through
    `K (B, 3, 3)`, in units of `image_size` pixels (seed 001, eq. 8).

    Distances are pseudo-Huber (smooth near zero) and each instance's mean is capped at
    `clip`: a pose far off gives no gradient rather than a huge one.
    """
    def project(Rm: Tensor, tm: Tensor) -> Tensor:
        p = points @ Rm.transpose(-1, -2) + tm[:, None, :]
        uvw = p @ K.transpose(-1, -2)
        return uvw[..., :2] / uvw[..., 2:3].clamp_min(1e-6)

    d = (project(R, t) - project(R_gt, t_gt)) / image_size
    dist = torch.sqrt((d**2).sum(-1) + 1e-6) - 1e-3
    return dist.mean(-1).clamp_max(clip)


def rotation_class_loss(logits: Tensor, R: Tensor, grid: Tensor, pool_R: Tensor,
                        pool_valid: Tensor, *, sigma: float = 0.35) -> Tensor:
    """Per-instance cross-entropy `(B,)` of rotation-bin `logits (B, K)` against soft labels.

    The label of bin k is exp(-a^2 / 2 sigma^2) (normalised), a = the geodesic angle
    (radians) between `grid (K, 3, 3)`[k] and the nearest symmetry-equivalent of `R
    (B, 3, 3)`, i.e. R S for the rotations S of `pool_R (B, P, 3, 3)` where `pool_valid
    (B, P)`; symmetric poses share their labels (MRC-Net's soft labels).
    """
    Rs = R.unsqueeze(1) @ pool_R  # (B, P, 3, 3)
    cos = (torch.einsum("kij,bpij->bpk", grid.to(R.dtype), Rs) - 1) / 2
    angle = torch.acos(cos.clamp(-1.0, 1.0))
    angle = torch.where(pool_valid[..., None], angle, torch.full_like(angle, torch.inf))
    angle = angle.min(1).values  # (B, K)
    target = torch.softmax(-(angle**2) / (2 * sigma**2), -1)
    return -(target * torch.log_softmax(logits.to(target.dtype), -1)).sum(-1)
