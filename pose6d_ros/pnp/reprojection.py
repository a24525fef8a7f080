"""The PnP objective and its derivatives in closed form, batched.

The objective for each instance is the weighted squared reprojection error

    f(R, t) = sum_i w_i * || pi(K (R z_i + t)) - x_i ||^2,

the one OpenCV's iterative PnP minimises (with w_i = 1). Poses are perturbed on the left,
`R(d) = exp([d]x) R`, `t(d_t) = t + d_t`, so the local coordinates y = (d, d_t) are free of
the singularities of a global rotation parametrisation. Shapes: `B` instances, `N` points.

Per point, with p = R z + t = q + t, a = 1 / p_z and D = d pi / dp, every derivative of f
is a sum over points of `Jp^T Q Jp` or `Jp^T m` (Jp = dp/dy = [-[q]x, I]), where the 3x3 Q
and the 3-vector m are combinations of a handful of scalars per point with per-instance
coefficients from K. So the 6x6 systems come from batched products of those scalars with
the object points z and their products z z^T (moments over the points), rotated to the
camera frame and mapped onto the system by constant matrices; nothing of size (B, N, 6) or
(B, N, 3, 3) is ever formed.

Per-point quantities are planes `(B, N)`, stacked channel first, `(C, B, N)`, so that
elementwise work runs over long contiguous rows. On the CPU, fresh memory costs more than
the arithmetic (page faults), so the per-point buffers are few and are filled in place.
"""

from dataclasses import dataclass
from functools import cache

import torch
from torch import Tensor

from pose6d_ros.core.rotations import skew


@dataclass(frozen=True)
class Projection:
    """Per-point quantities at poses."""

    P: Tensor  # (B, 3, 4) camera matrices K [t | R], for homogeneous points [1; z]
    a: Tensor  # (B, N) inverse depths 1 / p_z
    uv: Tensor  # (2, B, N) projections
    e: Tensor  # (2, B, N) residuals uv - x


@dataclass(frozen=True)
class Linearisation:
    """The exact Hessian at poses, with the per-point terms it was built from."""

    H: Tensor  # (B, 6, 6) Hessian of f with respect to y
    projection: Projection
    terms: Tensor  # (7, B, N) `_point_terms(..., exact=True)`


class Reprojection:
    """The objective of fixed correspondences, evaluated at varying poses.

    Elementwise operations touch at most two planes: for small batches each then stays below
    PyTorch's size for multithreading, which at these sizes costs more than it saves, and
    stalls whenever another process holds a core.

    Args:
        X1: `(B, 4, N)` object points in homogeneous coordinates, `[1; z]`. x: `(2, B, N)`
            pixels. Both contiguous and finite.
        K: `(B, 3, 3)` intrinsics. weights: `(B, N)`, zero for unused points. All float64.
    """

    def __init__(self, X1: Tensor, x: Tensor, K: Tensor, weights: Tensor):
        B, _, N = X1.shape
        self.X1, self.x, self.K, self.weights = X1, x, K, weights
        # The distinct products z_c z_d, in the order of `_unpack_symmetric`.
        ZZ = X1.new_empty(B, 6, N)
        X, Y, Z = X1[:, 1:2], X1[:, 2:3], X1[:, 3:]
        torch.mul(X, X1[:, 1:3], out=ZZ[:, :2])
        torch.mul(X, Z, out=ZZ[:, 2:3])
        torch.mul(Y, X1[:, 2:], out=ZZ[:, 3:5])
        torch.mul(Z, Z, out=ZZ[:, 5:])
        self._ZZ = ZZ
        # Q = a^2 [S - r e_z^T - e_z r^T + sigma e_z e_z^T] with S = K2^T K2 and
        # r = K2^T h (K2 the first two rows of K): the bases of Q's four scalars.
        K2 = K[:, :2]
        T = K.new_zeros(B, 4, 3, 3)
        T[:, 0] = torch.bmm(K2.mT, K2)
        T[:, 1:3, :, 2] = -K2
        T[:, 1:3, 2, :] -= K2
        T[:, 3, 2, 2] = 1.0
        self._Q_basis = T.reshape(B, 4, 9)
        # m = D^T e = a (K2^T e - pi_bar e_z): rows k_0, k_1, -e_z (K's last row is e_z).
        self._m_basis = torch.cat([K2, -K[:, 2:]], 1)
        self._gn_terms: Tensor | None = None

    def depth(self, R: Tensor, t: Tensor) -> Tensor:
        """`(B, N)`: p_z of the camera-frame points at poses `R (B, 3, 3)`, `t (B, 3)`."""
        return torch.baddbmm(t[:, 2:, None], R[:, 2:], self.X1[:, 1:])[:, 0]

    def project(self, R: Tensor, t: Tensor) -> Projection:
        """Projections and residuals at poses `R (B, 3, 3)`, `t (B, 3)`."""
        P = torch.bmm(self.K, torch.cat([t[..., None], R], -1))
        Kp = torch.bmm(P, self.X1).transpose(0, 1)
        a = Kp[2].reciprocal()
        uv = torch.mul(Kp[:2], a, out=self.x.new_empty(self.x.shape))
        return Projection(P=P, a=a, uv=uv, e=uv - self.x)

    def gauss_newton(self, R: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """`(f (B,), J^T W J (B, 6, 6), J^T W e (B, 6))` at poses: the cost and half the
        Gauss-Newton Hessian and gradient."""
        # The largest buffer here, reused across evaluations: fresh memory is slow.
        if self._gn_terms is None:
            self._gn_terms = self.weights.new_empty(8, *self.weights.shape)
        terms = _point_terms(self.project(R, t), self.weights, out=self._gn_terms)
        JtJ, Jte, sums = self._system(R, terms, exact=False)
        return sums[:, 7], JtJ, Jte

    def linearise(self, R: Tensor, t: Tensor) -> Linearisation:
        """The exact Hessian of f at poses, for `implicit_gradients`."""
        proj = self.project(R, t)
        terms = _point_terms(proj, self.weights, out=proj.a.new_empty(7, *proj.a.shape))
        H = self._system(R, terms, exact=True)[0]
        return Linearisation(H=H, projection=proj, terms=terms)

    def implicit_gradients(self, lin: Linearisation, R: Tensor, u: Tensor
                           ) -> tuple[Tensor, Tensor, Tensor]:
        """`-u^T d(grad_y f)/d(theta)` for theta = x2d, x3d, weights; overwrites `lin`.

        With u = H^-1 dL/dy this is the implicit-function-theorem gradient of a loss L of
        the solution. Returns `(B, N, 2)`, `(B, N, 3)`, `(B, N)`.
        """
        G, proj = lin.terms, lin.projection
        B = R.shape[0]
        SR = torch.bmm((u[:, :3] @ rotation_generators(R.dtype, R.device)).view(B, 3, 3), R)
        # k = M p_dot with M = m_basis = diag(1, 1, -1) K and p_dot = J_p u = u_rot x q + u_t.
        My = torch.bmm(self._m_basis, torch.cat([u[:, 3:, None], SR], -1))
        k = torch.bmm(My, self.X1).transpose(0, 1)
        # Per point, with the (weighted) terms G of `_point_terms`:
        #   -u^T d(grad_y f)/dz = -2 R^T (K^T [alpha; beta] - [u_rot]x M^T G[4:7]),
        #   alpha = G[0] k_01 + k_2 G[1:3],  -beta = k . G[1:4],
        #   -u^T d(grad_y f)/dx = 2 w J u,  -u^T d(grad_y f)/dw = -2 e . J u,
        #   J u = D p_dot = a (k_01 + uv k_2).
        # alpha and -beta overwrite G[1:4], which they alone use.
        G[3].mul_(k[2]).addcmul_(k[0], G[1]).addcmul_(k[1], G[2])
        G[1:3].mul_(k[2]).addcmul_(k[:2], G[0])
        C = torch.cat([proj.P[:, :, 1:], My[:, :, 1:]], 1) * _signs(R.dtype, R.device)
        grad_x3d = torch.bmm(G[1:].permute(1, 2, 0), C)
        Ju2 = torch.addcmul(k[:2], proj.uv, k[2]).mul_(proj.a.mul_(2.0))  # 2 J u
        grad_w = (Ju2[0] * proj.e[0]).addcmul_(Ju2[1], proj.e[1]).neg_()
        return Ju2.mul_(self.weights).permute(1, 2, 0), grad_x3d, grad_w

    def _system(self, R: Tensor, terms: Tensor, *, exact: bool
                ) -> tuple[Tensor, Tensor, Tensor]:
        """`(H (B, 6, 6), J^T W e (B, 6), sums (B, C))` from the point terms `(C, B, N)` at
        poses R; sums are the terms summed over the points."""
        B = R.shape[0]
        T = terms.permute(1, 2, 0)
        # Sums over the points of the terms times 1, z and z z^T; rotated, those over
        # q = R z and q q^T, in which sum w F Q (F = [1, q, q q^T]) and sum w F m (F = [1, q])
        # are linear.
        z_moments = torch.bmm(self.X1, T)
        sums = z_moments[:, 0]
        q_moments = torch.bmm(R, z_moments[:, 1:, :7])
        RR = (R[:, :, None, :, None] * R[:, None, :, None, :]).reshape(B, 9, 9)
        qq_moments = torch.bmm(RR @ _unpack_symmetric(R.dtype, R.device),
                               torch.bmm(self._ZZ, T[..., :4]))
        Q = torch.bmm(torch.cat([sums[:, None, :4], q_moments[..., :4], qq_moments], 1),
                      self._Q_basis)  # (B, 13, 9)
        m = torch.bmm(torch.cat([sums[:, None, 4:7], q_moments[..., 4:]], 1),
                      self._m_basis)  # (B, 4, 3)
        out = torch.cat([Q.reshape(B, 13 * 9), m.reshape(B, 12)], 1) @ _moment_maps(
            R.dtype, R.device)[int(exact)]
        return out[:, :36].reshape(B, 6, 6), out[:, 36:], sums


def local_gradient(grad_R: Tensor, grad_t: Tensor, R: Tensor) -> Tensor:
    """`(B, 6)`: dL/dy at y = 0 from dL/dR `(B, 3, 3)` and dL/dt `(B, 3)`.

    For R(d) = exp([d]x) R the rotation part is vee(A - A^T), A = dL/dR R^T, which is
    sum_jk [e_c]x_jk A_jk.
    """
    A = torch.bmm(grad_R, R.mT).reshape(-1, 9)
    return torch.cat([A @ rotation_generators(R.dtype, R.device).mT, grad_t], -1)


def _point_terms(proj: Projection, weights: Tensor, *, out: Tensor) -> Tensor:
    """Fill `out (7 or 8, B, N)` with, per point, w times
    `[a^2, a^2 h, a^2 sigma, a e, a pi_bar]`, for the exact Hessian, or
    `[a^2, a^2 h, a^2 sigma, a e, a pi_bar, |e|^2]`, for Gauss-Newton and the cost.

    The first four give Q = a^2 [S - r e_z^T - e_z r^T + sigma e_z e_z^T], r = K2^T h:
    D^T D with h = uv, sigma = |uv|^2 (Gauss-Newton); the exact second derivative, D^T D
    + sum_k e_k d2 pi_k / dp2, with h = uv + e, sigma = uv . (uv + 2 e). The next three
    give m = D^T e, with pi_bar = e . uv.
    """
    a, uv, e = proj.a, proj.uv, proj.e
    wa2, h, sigma, wae, pi_bar = out[0], out[1:3], out[3], out[4:6], out[6]
    wa = a * weights
    torch.mul(wa, a, out=wa2)
    if len(out) == 7:
        torch.add(uv, e, out=h)
        torch.mul(e[0], uv[0], out=pi_bar).addcmul_(e[1], uv[1])
        torch.mul(uv[0], h[0], out=sigma).add_(pi_bar).addcmul_(uv[1], h[1]).mul_(wa2)
        h.mul_(wa2)
        torch.mul(e, wa, out=wae)
        pi_bar.mul_(wa)
    else:
        torch.mul(uv, wa2, out=h)
        torch.mul(uv[0], h[0], out=sigma).addcmul_(uv[1], h[1])
        torch.mul(e, wa, out=wae)
        torch.mul(wae[0], uv[0], out=pi_bar).addcmul_(wae[1], uv[1])
        torch.mul(e[0], e[0], out=out[7]).addcmul_(e[1], e[1]).mul_(weights)
    return out


@cache
def _unpack_symmetric(dtype: torch.dtype, device: torch.device) -> Tensor:
    """`(9, 6)`: from the distinct z_c z_d (xx, xy, xz, yy, yz, zz) to all nine, row-major."""
    U = torch.zeros(9, 6, dtype=dtype, device=device)
    U[torch.arange(9), torch.tensor([0, 1, 2, 1, 3, 4, 2, 4, 5])] = 1.0
    return U


@cache
def _signs(dtype: torch.dtype, device: torch.device) -> Tensor:
    """`(6, 1)`: signs, with the factor 2, that make [K R; m_basis [u_rot]x R] the map from
    the terms [alpha, -beta, a e, a pi_bar] of `implicit_gradients` to the gradient of the
    object points."""
    return torch.tensor([-2.0, -2.0, 2.0, -2.0, -2.0, -2.0], dtype=dtype, device=device)[:, None]


@cache
def rotation_generators(dtype: torch.dtype, device: torch.device) -> Tensor:
    """`(3, 9)`: rows [e_c]x flattened, so that [u]x = (u @ E).view(3, 3). Cached."""
    return skew(torch.eye(3, dtype=dtype, device=device)).reshape(3, 9)


@cache
def _moment_maps(dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    """Constant maps from the flattened camera-frame moments `[sum w F Q (13, 3, 3),
    sum w F m (4, 3)]`, F = [1, q, q q^T], to the flattened `[H (6, 6), J^T W e (6)]`:
    H = J^T W J for Gauss-Newton, and H the exact Hessian of f."""
    f64 = torch.float64
    E = skew(torch.eye(3, dtype=f64))  # [q]x = sum_c q_c E[c]
    basis = torch.eye(13 * 9 + 12, dtype=f64)
    Q = basis[:, :13 * 9].reshape(-1, 13, 3, 3)
    m = basis[:, 13 * 9:].reshape(-1, 4, 3)
    rot_t = torch.einsum("cij,kcjl->kil", E, Q[:, 1:4])  # sum w [q]x Q
    rot_rot = -torch.einsum("cij,kcdjl,dlm->kim", E, Q[:, 4:].reshape(-1, 3, 3, 3, 3), E)
    H = torch.cat([torch.cat([rot_rot, rot_t], -1), torch.cat([rot_t.mT, Q[:, 0]], -1)], -2)
    Jte = torch.cat([torch.einsum("cij,kcj->ki", E, m[:, 1:4]), m[:, 0]], -1)
    # Second derivative of exp([d]x) q at d = 0, contracted with m = D^T e:
    # sym(M) - tr(M) I for M = sum w m q^T, in the rotation block only.
    M = m[:, 1:4].mT
    curvature = torch.zeros_like(H)
    curvature[:, :3, :3] = 0.5 * (M + M.mT) - torch.diagonal(M, dim1=-2, dim2=-1).sum(
        -1)[:, None, None] * torch.eye(3, dtype=f64)
    gauss_newton = torch.cat([H.flatten(1), Jte], 1)
    exact = torch.cat([(2.0 * (H + curvature)).flatten(1), Jte], 1)
    return gauss_newton.to(dtype=dtype, device=device), exact.to(dtype=dtype, device=device)
