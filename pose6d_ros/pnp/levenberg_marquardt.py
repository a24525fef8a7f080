"""Batched Levenberg-Marquardt refinement of PnP poses (float64, any device)."""

import math

import torch
from torch import Tensor

from pose6d_ros.pnp.reprojection import Reprojection, rotation_generators


@torch.no_grad()
def refine(R: Tensor, t: Tensor, objective: Reprojection, *, max_iterations: int,
           step_tolerance: float, lambda_init: float = 1e-3
           ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Minimise the weighted reprojection error from initial poses, all instances at once.

    Args:
        R: `(B, 3, 3)`, t: `(B, 3)` initial poses, float64.
        objective: the correspondences and weights.
        step_tolerance: an instance stops once its update is smaller than this
            (radians for rotation, metres relative to |t| for translation).

    Returns:
        `R (B, 3, 3)`, `t (B, 3)`, final `cost (B,)`, `J^T W J (B, 6, 6)` there, and
        `iterations (B,)` used.
    """
    B = R.shape[0]
    lam = torch.full((B,), lambda_init, dtype=R.dtype, device=R.device)
    done = torch.zeros(B, dtype=torch.bool, device=R.device)
    iterations = torch.zeros(B, dtype=torch.long, device=R.device)
    f, JtJ, Jte = objective.gauss_newton(R, t)
    eye6 = torch.eye(6, dtype=R.dtype, device=R.device)
    # Asking whether all are done waits for the device: on a GPU ask every few iterations
    # (instances that are done no longer change, so the extra iterations are harmless).
    check_every = 1 if R.device.type == "cpu" else 4
    for k in range(max_iterations):
        diag = torch.diagonal(JtJ, dim1=-2, dim2=-1).clamp_min(1e-12)
        A = JtJ + lam[:, None, None] * torch.diag_embed(diag) + 1e-15 * eye6
        step, info = torch.linalg.solve_ex(A, -Jte)
        step = torch.where((info == 0)[:, None] & step.isfinite(), step, torch.zeros_like(step))
        R_new = torch.bmm(_exp(step[:, :3]), R)
        t_new = t + step[:, 3:]
        f_new, JtJ_new, Jte_new = objective.gauss_newton(R_new, t_new)
        # Near the minimum the cost changes less than its round-off; such steps are still
        # Gauss-Newton steps towards the minimum, so a rise within round-off is accepted.
        accept = (f_new <= f + 1e-12 * f.abs()) & f_new.isfinite() & ~done
        small = (step[:, :3].norm(dim=-1) < step_tolerance) & (
            step[:, 3:].norm(dim=-1) < step_tolerance * (1.0 + t.norm(dim=-1)))
        R = torch.where(accept[:, None, None], R_new, R)
        t = torch.where(accept[:, None], t_new, t)
        f = torch.where(accept, f_new, f)
        JtJ = torch.where(accept[:, None, None], JtJ_new, JtJ)
        Jte = torch.where(accept[:, None], Jte_new, Jte)
        lam = torch.where(accept, (lam / 10).clamp_min(1e-12), (lam * 10).clamp_max(1e12))
        iterations += (~done).long()
        done = done | small | (lam >= 1e12)
        if (k + 1) % check_every == 0 and bool(done.all()):
            break
    return R, t, f, JtJ, iterations


def _exp(d: Tensor) -> Tensor:
    """Rotation matrices `(B, 3, 3)` exp([d]x) of rotation vectors `d (B, 3)`.

    Rodrigues' formula with its coefficients written as sinc(x) = sin(x) / x, which is
    accurate to round-off at any angle, zero included: sin(t) / t = sinc(t) and
    (1 - cos t) / t^2 = sinc(t / 2)^2 / 2. (torch.sinc is sin(pi x) / (pi x).)
    """
    theta = torch.linalg.vector_norm(d, dim=-1)[:, None, None]
    S = (d @ rotation_generators(d.dtype, d.device)).view(-1, 3, 3)
    a = torch.sinc(theta / math.pi)
    b = torch.sinc(theta / (2.0 * math.pi)).square_().mul_(0.5)
    return torch.addcmul(torch.addcmul(torch.eye(3, dtype=d.dtype, device=d.device), a, S),
                         b, torch.bmm(S, S))
