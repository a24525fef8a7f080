"""Batched Levenberg-Marquardt refinement of PnP poses (float64, any device)."""

import torch
from torch import Tensor

from pose6d_ros.core.rotations import axis_angle_to_matrix
from pose6d_ros.pnp.reprojection import cost, gauss_newton_system, point_terms


@torch.no_grad()
def refine(R: Tensor, t: Tensor, x2d: Tensor, x3d: Tensor, K: Tensor, weights: Tensor, *,
           max_iterations: int, step_tolerance: float, lambda_init: float = 1e-3
           ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Minimise the weighted reprojection error from initial poses, all instances at once.

    Args:
        R: `(B, 3, 3)`, t: `(B, 3)` initial poses. x2d: `(B, N, 2)`, x3d: `(B, N, 3)`,
        K: `(B, 3, 3)`, weights: `(B, N)` (zero for unused points). All float64.
        step_tolerance: an instance stops once its update is smaller than this
            (radians for rotation, metres relative to |t| for translation).

    Returns:
        `R (B, 3, 3)`, `t (B, 3)`, final `cost (B,)` and `iterations (B,)` used.
    """
    B = R.shape[0]
    lam = torch.full((B,), lambda_init, dtype=R.dtype, device=R.device)
    done = torch.zeros(B, dtype=torch.bool, device=R.device)
    iterations = torch.zeros(B, dtype=torch.long, device=R.device)
    terms = point_terms(R, t, x2d, x3d, K)
    f = cost(terms, weights)
    eye6 = torch.eye(6, dtype=R.dtype, device=R.device)
    for _ in range(max_iterations):
        JtJ, Jte = gauss_newton_system(terms, weights)
        diag = torch.diagonal(JtJ, dim1=-2, dim2=-1).clamp_min(1e-12)
        A = JtJ + lam[:, None, None] * torch.diag_embed(diag) + 1e-15 * eye6
        step, info = torch.linalg.solve_ex(A, -Jte)
        step = torch.where((info == 0)[:, None] & step.isfinite(), step, torch.zeros_like(step))
        R_new = axis_angle_to_matrix(step[:, :3]) @ R
        t_new = t + step[:, 3:]
        terms_new = point_terms(R_new, t_new, x2d, x3d, K)
        f_new = cost(terms_new, weights)
        # Near the minimum the cost changes less than its round-off; such steps are still
        # Gauss-Newton steps towards the minimum, so a rise within round-off is accepted.
        accept = (f_new <= f + 1e-12 * f.abs()) & f_new.isfinite() & ~done
        small = (step[:, :3].norm(dim=-1) < step_tolerance) & (
            step[:, 3:].norm(dim=-1) < step_tolerance * (1.0 + t.norm(dim=-1)))
        R = torch.where(accept[:, None, None], R_new, R)
        t = torch.where(accept[:, None], t_new, t)
        f = torch.where(accept, f_new, f)
        terms = terms_new.where(accept, terms)
        lam = torch.where(accept, (lam / 10).clamp_min(1e-12), (lam * 10).clamp_max(1e12))
        iterations += (~done).long()
        done = done | small | (lam >= 1e12)
        if bool(done.all()):
            break
    return R, t, f, iterations

