"""The PnP objective and its derivatives in closed form, batched.

The objective for each instance is the weighted squared reprojection error

    f(R, t) = sum_i w_i * || pi(K (R z_i + t)) - x_i ||^2,

the one OpenCV's iterative PnP minimises (with w_i = 1). Poses are perturbed on the left,
`R(d) = exp([d]x) R`, `t(d_t) = t + d_t`, so the local coordinates y = (d, d_t) are free of
the singularities of a global rotation parametrisation. Shapes: `B` instances, `N` points.
"""

from dataclasses import dataclass, fields

import torch
from torch import Tensor

from pose6d_ros.core.rotations import skew


@dataclass(frozen=True)
class PointTerms:
    """Per-point quantities at a pose, all `(B, N, ...)`."""

    q: Tensor  # (B, N, 3) rotated object points R z
    p: Tensor  # (B, N, 3) camera-frame points R z + t
    uv: Tensor  # (B, N, 2) projections
    e: Tensor  # (B, N, 2) residuals uv - x
    D: Tensor  # (B, N, 2, 3) d uv / d p

    def where(self, mask: Tensor, other: "PointTerms") -> "PointTerms":
        """Per instance, these terms where `mask (B,)` is true, else `other`'s."""
        def pick(a: Tensor, b: Tensor) -> Tensor:
            return torch.where(mask.view(-1, *[1] * (a.dim() - 1)), a, b)
        return PointTerms(**{f.name: pick(getattr(self, f.name), getattr(other, f.name))
                             for f in fields(self)})


def point_terms(R: Tensor, t: Tensor, x2d: Tensor, x3d: Tensor, K: Tensor) -> PointTerms:
    """Residuals and projection derivatives at poses `R (B, 3, 3)`, `t (B, 3)` for
    points `x2d (B, N, 2)`, `x3d (B, N, 3)` and intrinsics `K (B, 3, 3)`."""
    q = x3d @ R.transpose(-1, -2)
    p = q + t.unsqueeze(-2)
    z = p[..., 2:3]
    uv = (p @ K.transpose(-1, -2))[..., :2] / z
    # d(c.p / p_z)/dp = (c - pi * e_z) / p_z for each row c of K.
    D = K[:, None, :2, :].expand(*uv.shape, 3).clone()
    D[..., 2] -= uv
    D = D / z.unsqueeze(-1)
    return PointTerms(q=q, p=p, uv=uv, e=uv - x2d, D=D)


def cost(terms: PointTerms, weights: Tensor) -> Tensor:
    """Objective values `(B,)` for per-point weights `(B, N)` (zero for unused points)."""
    return (weights * terms.e.square().sum(-1)).sum(-1)


def _DtD(D: Tensor) -> Tensor:
    """`D^T D` `(B, N, 3, 3)` for `D (B, N, 2, 3)`, elementwise (tiny matmuls are slow)."""
    return D[..., 0, :, None] * D[..., 0, None, :] + D[..., 1, :, None] * D[..., 1, None, :]


def _Dt(D: Tensor, v: Tensor) -> Tensor:
    """`D^T v` `(B, N, 3)` for `D (B, N, 2, 3)`, `v (B, N, 2)`."""
    return D[..., 0, :] * v[..., 0:1] + D[..., 1, :] * v[..., 1:2]


def _generators(like: Tensor) -> Tensor:
    """`(3, 3, 3)`: E[c] = [e_c]x, so that [q]x = sum_c q_c E[c]."""
    return skew(torch.eye(3, dtype=like.dtype, device=like.device))


def _pose_sum(q: Tensor, Q: Tensor, weights: Tensor) -> Tensor:
    """`sum_n w_n Jp_n^T Q_n Jp_n` `(B, 6, 6)` for `Jp = dp/dy = [-[q]x, I]`, from rotated
    points `q (B, N, 3)` and symmetric `Q (B, N, 3, 3)`.

    With [q]x = sum_c q_c E_c, every block is a contraction of the moments sum w Q,
    sum w q_c Q and sum w q_c q_d Q, all from one batched product over the points.
    """
    B, N = weights.shape
    w = weights.unsqueeze(-1)
    F = torch.cat([w, w * q, (w.unsqueeze(-1) * q[..., :, None] * q[..., None, :])
                   .reshape(B, N, 9)], dim=-1)  # (B, N, 13)
    G = F.transpose(1, 2) @ Q.reshape(B, N, 9)  # (B, 13, 9)
    Q0 = G[:, 0].reshape(B, 3, 3)
    Q1 = G[:, 1:4].reshape(B, 3, 3, 3)
    Q2 = G[:, 4:].reshape(B, 3, 3, 3, 3)
    E = _generators(q)
    rot_t = torch.einsum("cij,bcjk->bik", E, Q1)  # sum w [q]x Q
    rot_rot = -torch.einsum("cij,bcdjk,dkl->bil", E, Q2, E)  # -sum w [q]x Q [q]x
    top = torch.cat([rot_rot, rot_t], dim=-1)
    bottom = torch.cat([rot_t.transpose(-1, -2), Q0], dim=-1)
    return torch.cat([top, bottom], dim=-2)


def gauss_newton_system(terms: PointTerms, weights: Tensor) -> tuple[Tensor, Tensor]:
    """`(J^T W J (B, 6, 6), J^T W e (B, 6))`: half the Gauss-Newton Hessian and gradient."""
    JtJ = _pose_sum(terms.q, _DtD(terms.D), weights)
    wm = weights.unsqueeze(-1) * _Dt(terms.D, terms.e)
    Jte = torch.cat([torch.linalg.cross(terms.q, wm).sum(1), wm.sum(1)], dim=-1)
    return JtJ, Jte


def _curvature(terms: PointTerms, K: Tensor) -> tuple[Tensor, Tensor]:
    """Second-order terms: `P (B, N, 3, 3) = sum_k e_k d2 pi_k / dp2` and
    `m (B, N, 3) = D^T e`."""
    e = terms.e
    z = terms.p[..., 2]
    c = e @ K[:, :2, :]  # (B, N, 3) = sum_k e_k K[k]
    pi_bar = e[..., 0] * terms.uv[..., 0] + e[..., 1] * terms.uv[..., 1]
    P = torch.zeros(*e.shape[:-1], 3, 3, dtype=e.dtype, device=e.device)
    P[..., :, 2] -= c
    P[..., 2, :] -= c
    P[..., 2, 2] += 2.0 * pi_bar
    P = P / z.square()[..., None, None]
    return P, _Dt(terms.D, e)


def hessian(terms: PointTerms, weights: Tensor, K: Tensor) -> Tensor:
    """Exact Hessian `(B, 6, 6)` of the objective with respect to y at the given poses."""
    P, m = _curvature(terms, K)
    H = _pose_sum(terms.q, _DtD(terms.D) + P, weights)
    # Second derivative of exp([d]x) q at d = 0, contracted with m = D^T e:
    # 1/2 (m q^T + q m^T) - (m . q) I, in the rotation block only.
    Mq = torch.einsum("bn,bni,bnj->bij", weights, m, terms.q)
    eye3 = torch.eye(3, dtype=m.dtype, device=m.device)
    rot = 0.5 * (Mq + Mq.transpose(-1, -2)) - torch.diagonal(Mq, dim1=-2, dim2=-1).sum(
        -1)[:, None, None] * eye3
    H[:, :3, :3] += rot
    return 2.0 * H


def implicit_gradients(terms: PointTerms, weights: Tensor, K: Tensor, R: Tensor,
                       u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """`-u^T d(grad_y f)/d(theta)` for theta = x2d, x3d, weights.

    With u = H^-1 dL/dy this is the implicit-function-theorem gradient of a loss L of the
    solution. Returns `(B, N, 2)`, `(B, N, 3)`, `(B, N)`.
    """
    P, m = _curvature(terms, K)
    u_rot, u_t = u[:, None, :3], u[:, None, 3:]
    p_dot = torch.linalg.cross(u_rot.expand_as(terms.q), terms.q) + u_t  # (B, N, 3)
    D = terms.D
    # J u = D p_dot, written out: reductions over tiny trailing dimensions are slow.
    Dp = D[..., 0] * p_dot[..., 0:1] + D[..., 1] * p_dot[..., 1:2] + D[..., 2] * p_dot[..., 2:3]
    w2 = 2.0 * weights
    grad_x2d = w2[..., None] * Dp
    grad_w = -2.0 * (Dp[..., 0] * terms.e[..., 0] + Dp[..., 1] * terms.e[..., 1])
    Pp = P[..., 0] * p_dot[..., 0:1] + P[..., 1] * p_dot[..., 1:2] + P[..., 2] * p_dot[..., 2:3]
    ds_dq = _Dt(D, Dp) + Pp + torch.linalg.cross(m, u_rot.expand_as(m))
    grad_x3d = -w2[..., None] * (ds_dq @ R)  # R^T ds/dq, batched as row vectors
    return grad_x2d, grad_x3d, grad_w
