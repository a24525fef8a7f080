"""Rotation conversions, batched over any leading dimensions.

One convention for the whole project: rotation matrices act on column vectors
(`p_cam = R @ p_obj`), axis-angle vectors are `angle * unit_axis`, and quaternions are in
ROS order `(x, y, z, w)`. Conversions are roma's, except the exponential map: roma's
switches to a first-order formula below 1e-6 rad (error ~angle^2 / 2), too coarse for
float64 solvers, so ours uses Taylor series of its coefficients near zero.
"""

import roma
import torch
from torch import Tensor

_TAYLOR_BELOW = 1e-2  # radians; the next Taylor term is then below 1e-16


def axis_angle_to_matrix(rotvec: Tensor) -> Tensor:
    """Rotation matrices `(*, 3, 3)` from axis-angle vectors `(*, 3)`, exact near zero."""
    theta2 = rotvec.square().sum(-1)
    small = theta2 < _TAYLOR_BELOW**2
    theta = torch.where(small, torch.ones_like(theta2), theta2).sqrt()
    a = torch.where(small, 1 - theta2 / 6 + theta2.square() / 120, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24 + theta2.square() / 720,
                    (1 - torch.cos(theta)) / theta.square())
    S = skew(rotvec)
    eye = torch.eye(3, dtype=rotvec.dtype, device=rotvec.device)
    return eye + a[..., None, None] * S + b[..., None, None] * (S @ S)


def matrix_to_axis_angle(R: Tensor) -> Tensor:
    """Axis-angle vectors `(*, 3)`, angle in [0, pi], from rotation matrices `(*, 3, 3)`."""
    return roma.rotmat_to_rotvec(R)


def quaternion_to_matrix(q_xyzw: Tensor) -> Tensor:
    """Rotation matrices `(*, 3, 3)` from quaternions `(*, 4)` in ROS order (x, y, z, w).

    The quaternions need not be normalised; they are normalised first.
    """
    return roma.unitquat_to_rotmat(q_xyzw / q_xyzw.norm(dim=-1, keepdim=True))


def matrix_to_quaternion(R: Tensor) -> Tensor:
    """Unit quaternions `(*, 4)` in ROS order (x, y, z, w), w >= 0, from matrices `(*, 3, 3)`."""
    q = roma.rotmat_to_unitquat(R)
    # One of the two equivalent quaternions, so that output is deterministic.
    return torch.where(q[..., 3:] < 0, -q, q)


def skew(v: Tensor) -> Tensor:
    """Cross-product matrices `(*, 3, 3)` of vectors `(*, 3)`: `skew(a) @ b == a x b`."""
    zero = torch.zeros_like(v[..., 0])
    x, y, z = v.unbind(-1)
    return torch.stack(
        [zero, -z, y, z, zero, -x, -y, x, zero], dim=-1
    ).reshape(*v.shape[:-1], 3, 3)


def rotation_angle(R_a: Tensor, R_b: Tensor) -> Tensor:
    """Geodesic angle in radians `(*)` between rotations `(*, 3, 3)` and `(*, 3, 3)`."""
    return roma.rotmat_geodesic_distance(R_a, R_b)


def random_rotations(n: int, *, generator: torch.Generator | None = None,
                     dtype: torch.dtype = torch.float64) -> Tensor:
    """`n` rotation matrices `(n, 3, 3)` drawn uniformly from SO(3)."""
    q = torch.randn(n, 4, generator=generator, dtype=torch.float64)
    return quaternion_to_matrix(q).to(dtype)


def rotation_grid(n: int, *, seed: int = 0) -> Tensor:
    """`n` well-spread rotations `(n, 3, 3)` float64, the same for a seed: farthest-point
    selection from 32 n uniform draws (quaternion distance |<q_a, q_b>|)."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(32 * n, 4, generator=g, dtype=torch.float64)
    q = q / q.norm(dim=-1, keepdim=True)
    chosen = [0]
    # Closeness 1 - |<q_a, q_b>| to the chosen set, kept as a running minimum.
    dist = 1 - (q @ q[0]).abs()
    for _ in range(n - 1):
        k = int(dist.argmax())
        chosen.append(k)
        dist = torch.minimum(dist, 1 - (q @ q[k]).abs())
    return quaternion_to_matrix(q[chosen])


def ray_rotation(t: Tensor) -> Tensor:
    """Rotations `(*, 3, 3)` taking the camera's z axis onto the rays through `t (*, 3)`:
    `R_ray^T R` is a pose's allocentric rotation, what a centred crop shows."""
    z = t / t.norm(dim=-1, keepdim=True)
    axis = torch.cross(torch.zeros_like(z).index_fill_(-1, torch.tensor(2), 1.0), z, dim=-1)
    s = axis.norm(dim=-1, keepdim=True)
    angle = torch.atan2(s, z[..., 2:3])
    return axis_angle_to_matrix(axis / s.clamp_min(1e-12) * angle)
