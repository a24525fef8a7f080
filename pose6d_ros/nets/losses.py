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
