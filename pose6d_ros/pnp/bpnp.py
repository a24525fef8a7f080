"""BPnP: PnP as a differentiable layer, gradients by the implicit function theorem.

The forward pass is `solve_pnp`, run without a graph. At its solution the gradient of the
objective it minimises vanishes, g(y*, theta) = 0, so for any loss L of the pose

    dL/dtheta = -(H^-1 dL/dy)^T dg/dtheta,   H = dg/dy,

with theta the 2D points, the 3D points and the weights. H is the exact Hessian of the
exact objective, computed in closed form (pose6d_ros.pnp.reprojection), in float64.
"""

import warnings
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from pose6d_ros.pnp.reprojection import hessian, implicit_gradients, point_terms
from pose6d_ros.pnp.solver import (
    DEFAULT_OPTIONS,
    PnPOptions,
    PnPResult,
    check_correspondences,
    is_degenerate,
    sanitise,
    solve_pnp,
)

# Relative Tikhonov damping of H, far below the 1e-4 gradient tolerance; instances whose
# unit-diagonal H has an eigenvalue below _SINGULAR get a zero gradient instead.
_DAMPING = 1e-12
_SINGULAR = 1e-12


@dataclass
class BackwardStats:
    """How many instances got a zero gradient because their system was singular."""

    singular: int = 0


BACKWARD_STATS = BackwardStats()


def bpnp(x2d: Tensor, x3d: Tensor, K: Tensor, *, weights: Tensor | None = None,
         mask: Tensor | None = None, init: tuple[Tensor, Tensor] | None = None,
         options: PnPOptions = DEFAULT_OPTIONS) -> PnPResult:
    """`solve_pnp` whose `R` and `t` carry gradients to `x2d`, `x3d` and `weights`.

    Shapes and arguments as in `solve_pnp`. R and t come back in x2d's dtype. Failed
    instances, and instances whose Hessian is singular, get zero gradients.
    """
    K = check_correspondences(x2d, x3d, K, weights, mask)
    if weights is None:
        weights = torch.ones(x2d.shape[:2], dtype=x2d.dtype, device=x2d.device)

    def solve(a: Tensor, b: Tensor, w: Tensor) -> PnPResult:
        return solve_pnp(a, b, K, weights=w, mask=mask, init=init, options=options)

    R, t, result = _BPnPFunction.apply(x2d, x3d, weights, K, solve)
    return replace(result, R=R, t=t)


class _BPnPFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x2d: Tensor, x3d: Tensor, weights: Tensor, K: Tensor, solve):
        result = solve(x2d, x3d, weights)
        w_used = weights.detach().to(torch.float64) * result.inliers
        x2d_used = sanitise(x2d.detach(), result.inliers)
        x3d_used = sanitise(x3d.detach(), result.inliers)
        ctx.save_for_backward(x2d_used, x3d_used, K, w_used, result.R, result.t, result.inliers,
                              result.status)
        return result.R.to(x2d.dtype), result.t.to(x2d.dtype), result

    @staticmethod
    def backward(ctx, grad_R: Tensor, grad_t: Tensor, _):
        x2d, x3d, K, w, R, t, inliers, status = ctx.saved_tensors
        f64 = torch.float64
        ok = status == 0
        # Failed instances carry R = I, t = 0, where every projection divides by zero; any
        # pose in front of the camera keeps their (discarded) arithmetic finite.
        t = torch.where(ok[:, None], t, torch.tensor([0.0, 0.0, 1.0], dtype=f64,
                                                     device=t.device))
        terms = point_terms(R, t, x2d.detach().to(f64), x3d.detach().to(f64), K.to(f64))
        H = hessian(terms, w, K.to(f64))
        # dL/dy at y = 0 for R(d) = exp([d]x) R: the rotation part is vee(A - A^T), A = G R^T.
        A = grad_R.to(f64) @ R.transpose(-1, -2)
        v = torch.stack([A[:, 2, 1] - A[:, 1, 2], A[:, 0, 2] - A[:, 2, 0],
                         A[:, 1, 0] - A[:, 0, 1]], dim=-1)
        v = torch.cat([v, grad_t.to(f64)], dim=-1)

        usable = ok & H.isfinite().all((-1, -2))
        usable &= ~is_degenerate(torch.where(usable[:, None, None], H, torch.zeros_like(H)),
                                 _SINGULAR)
        scale = torch.diagonal(H, dim1=-2, dim2=-1).abs().mean(-1).clamp_min(1e-300)
        eye = torch.eye(6, dtype=f64, device=H.device)
        H = H + _DAMPING * scale[:, None, None] * eye
        H = torch.where(usable[:, None, None], H, eye)
        L, info = torch.linalg.cholesky_ex(H)
        u = torch.cholesky_solve(v.unsqueeze(-1), L).squeeze(-1)
        good = usable & (info == 0) & u.isfinite().all(-1)
        singular = int((ok & ~good).sum())
        if singular:
            BACKWARD_STATS.singular += singular
            warnings.warn(f"BPnP: {singular} instance(s) with a singular system got a zero "
                          f"gradient ({BACKWARD_STATS.singular} so far)", RuntimeWarning,
                          stacklevel=2)
        u = torch.where(good[:, None], u, torch.zeros_like(u))
        g2d, g3d, gw = implicit_gradients(terms, w, K.to(f64), R, u)
        gw = gw * inliers
        return g2d.to(x2d.dtype), g3d.to(x3d.dtype), gw.to(x2d.dtype), None, None
