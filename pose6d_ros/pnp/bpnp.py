"""BPnP: PnP as a differentiable layer, gradients by the implicit function theorem.

The forward pass is `solve_pnp`, run without a graph. At its solution the gradient of the
objective it minimises vanishes, g(y*, theta) = 0, so for any loss L of the pose

    dL/dtheta = -(H^-1 dL/dy)^T dg/dtheta,   H = dg/dy,

with theta the 2D points, the 3D points and the weights. H is the exact Hessian of the
exact objective, computed in closed form (pose6d_ros.pnp.reprojection), in float64.
"""

import warnings
from dataclasses import dataclass, replace
from functools import cache

import torch
from torch import Tensor

from pose6d_ros.pnp.reprojection import Reprojection, local_gradient
from pose6d_ros.pnp.solver import (
    DEFAULT_OPTIONS,
    PnPOptions,
    PnPResult,
    channels_first,
    check_correspondences,
    solve_pnp,
)

# Instances whose unit-diagonal H has an eigenvalue below _SINGULAR get a zero gradient.
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
        inliers = result.inliers
        ok = result.status == 0
        # Failed instances carry R = I, t = 0, where every projection divides by zero; any
        # pose in front of the camera keeps their (discarded) arithmetic finite.
        t = result.t.clone()
        t[:, 2] = torch.where(ok, t[:, 2], 1.0)
        # The points the solution used, in the layouts of `Reprojection`.
        x, X1 = channels_first(x2d.detach(), x3d.detach(), inliers)
        w = weights.detach().to(t.dtype) * inliers
        ctx.save_for_backward(X1, x, K.to(t.dtype), w, result.R, t, inliers, ok)
        ctx.dtypes = x2d.dtype, x3d.dtype, weights.dtype
        return result.R.to(x2d.dtype), result.t.to(x2d.dtype), result

    @staticmethod
    def backward(ctx, grad_R: Tensor, grad_t: Tensor, _):
        X1, x, K, w, R, t, inliers, ok = ctx.saved_tensors
        objective = Reprojection(X1, x, K, w)
        lin = objective.linearise(R, t)
        v = local_gradient(grad_R.to(R.dtype), grad_t.to(R.dtype), R)
        u, good = _solve(lin.H, v, ok)
        singular = int((ok & ~good).sum())
        if singular:
            BACKWARD_STATS.singular += singular
            warnings.warn(f"BPnP: {singular} instance(s) with a singular system got a zero "
                          f"gradient ({BACKWARD_STATS.singular} so far)", RuntimeWarning,
                          stacklevel=2)
        g2d, g3d, gw = objective.implicit_gradients(lin, R, u)
        dtype_2d, dtype_3d, dtype_w = ctx.dtypes
        return g2d.to(dtype_2d), g3d.to(dtype_3d), (gw * inliers).to(dtype_w), None, None


def _solve(H: Tensor, v: Tensor, ok: Tensor) -> tuple[Tensor, Tensor]:
    """`(u = H^-1 v (B, 6), good (B,))`; u is zero where H or v is not usable: not `ok`,
    non-finite, or H with an eigenvalue below _SINGULAR once scaled to a unit diagonal."""
    s = torch.diagonal(H, dim1=-2, dim2=-1).rsqrt()
    C = H * (s[:, :, None] * s[:, None, :])  # non-finite unless the diagonal is positive
    good = ok & C.isfinite().all(-1).all(-1) & v.isfinite().all(-1)
    eye = _eye6(H.dtype, H.device)
    C = torch.where(good[:, None, None], C, eye)
    # Smallest eigenvalue >= _SINGULAR <=> C - _SINGULAR I is positive definite; a Cholesky
    # test never raises on ill-conditioned input, unlike eigvalsh. C itself then is well
    # enough conditioned to solve with as it is.
    L, info = torch.linalg.cholesky_ex(torch.cat([C - _SINGULAR * eye, C]))
    good &= (info.view(2, -1) == 0).all(0)
    u = s * torch.cholesky_solve((s * v)[..., None], L[len(v):])[..., 0]
    return torch.where(good[:, None], u, 0.0), good


@cache
def _eye6(dtype: torch.dtype, device: torch.device) -> Tensor:
    """The 6x6 identity, made once per dtype and device."""
    return torch.eye(6, dtype=dtype, device=device)
