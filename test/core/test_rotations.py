import math

import torch

from pose6d_ros.core.rotations import (
    axis_angle_to_matrix,
    matrix_to_axis_angle,
    matrix_to_quaternion,
    quaternion_to_matrix,
    random_rotations,
    rotation_angle,
    skew,
)


class TestAxisAngle:
    def test_round_trip(self):
        r = torch.randn(100, 3, dtype=torch.float64)
        r = r / r.norm(dim=-1, keepdim=True) * torch.rand(100, 1, dtype=torch.float64) * 3.1
        assert torch.allclose(matrix_to_axis_angle(axis_angle_to_matrix(r)), r, atol=1e-12)

    def test_exact_near_zero(self):
        # Second-order truth I + S + S^2/2 is exact to ~angle^3; a first-order formula is not.
        for angle in (1e-9, 1e-7, 1e-5, 1e-3):
            r = torch.tensor([0.6, -0.8, 0.0], dtype=torch.float64) * angle
            S = skew(r)
            truth = torch.eye(3, dtype=torch.float64) + S + S @ S / 2
            R = axis_angle_to_matrix(r)
            assert (R - truth).abs().max() <= angle**3 + 1e-16
            assert (R @ R.T - torch.eye(3, dtype=torch.float64)).abs().max() < 1e-15
            assert torch.allclose(matrix_to_axis_angle(R), r, rtol=1e-9, atol=1e-20)

    def test_gradient_finite_at_zero(self):
        r = torch.zeros(3, dtype=torch.float64, requires_grad=True)
        axis_angle_to_matrix(r).sum().backward()
        assert torch.isfinite(r.grad).all()

    def test_matches_rodrigues(self):
        r = torch.tensor([0.0, 0.0, math.pi / 2], dtype=torch.float64)
        expected = torch.tensor([[0, -1, 0], [1, 0, 0], [0, 0, 1]], dtype=torch.float64)
        assert torch.allclose(axis_angle_to_matrix(r), expected, atol=1e-15)


class TestQuaternion:
    def test_ros_order_xyzw(self):
        R = axis_angle_to_matrix(torch.tensor([0.0, 0.0, math.pi / 2], dtype=torch.float64))
        q = matrix_to_quaternion(R)
        s = math.sqrt(0.5)
        assert torch.allclose(q, torch.tensor([0, 0, s, s], dtype=torch.float64), atol=1e-15)

    def test_round_trip_and_sign(self):
        R = random_rotations(50, generator=torch.Generator().manual_seed(1))
        q = matrix_to_quaternion(R)
        assert (q[:, 3] >= 0).all()
        assert torch.allclose(quaternion_to_matrix(q), R, atol=1e-14)
        assert torch.allclose(quaternion_to_matrix(-3 * q), R, atol=1e-14)


def test_rotation_grid_is_spread_and_deterministic():
    from pose6d_ros.core.rotations import rotation_grid

    G = rotation_grid(32)
    torch.testing.assert_close(G, rotation_grid(32))
    torch.testing.assert_close(G @ G.transpose(1, 2), torch.eye(3, dtype=G.dtype).expand(32, 3, 3))
    gaps = rotation_angle(G[:, None], G[None]).fill_diagonal_(math.pi).min(1).values
    assert gaps.min() > math.radians(45)  # 32 random rotations would have much closer pairs


def test_ray_rotation_points_z_along_the_ray():
    from pose6d_ros.core.rotations import ray_rotation

    t = torch.tensor([[0.1, -0.2, 0.6], [0.0, 0.0, 2.0]], dtype=torch.float64)
    R = ray_rotation(t)
    torch.testing.assert_close(R[..., 2], t / t.norm(dim=-1, keepdim=True))
    torch.testing.assert_close(R[1], torch.eye(3, dtype=t.dtype))
