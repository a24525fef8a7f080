import pytest
import torch
from torchvision.ops import roi_align

from pose6d_ros.core.camera import (
    check_intrinsics,
    crop_resize_intrinsics,
    project,
    scale_intrinsics,
)
from pose6d_ros.core.pose import compose, from_matrix, inverse, to_matrix, transform_points
from pose6d_ros.core.rotations import random_rotations

K = torch.tensor([[572.4, 0, 325.3], [0, 573.6, 242.0], [0, 0, 1]], dtype=torch.float64)


def test_projection_opencv_convention():
    # x right, y down, z forward: a point right of and below the axis lands right/below cx, cy.
    uv = project(torch.tensor([[[0.1, 0.05, 1.0]]], dtype=torch.float64), K)
    assert torch.allclose(uv, torch.tensor([[[325.3 + 57.24, 242.0 + 28.68]]],
                                           dtype=torch.float64))


def test_crop_intrinsics_match_roi_align():
    # A single bright pixel, cropped and resized by roi_align(aligned=True), appears where
    # the crop intrinsics project its ray.
    img = torch.zeros(1, 1, 480, 640)
    u, v = 400, 300
    img[0, 0, v, u] = 1.0
    box = torch.tensor([[380.0, 280.0, 420.0, 320.0]])  # 40x40 px -> 160x160
    crop = roi_align(img, [box], output_size=(160, 160), spatial_scale=1.0, sampling_ratio=1,
                     aligned=True)[0, 0]
    Kc = crop_resize_intrinsics(K, box.double(), (160, 160))[0]
    ray = torch.linalg.solve(K, torch.tensor([u, v, 1.0], dtype=torch.float64))
    uc, vc = project(ray.view(1, 1, 3), Kc)[0, 0]
    ys, xs = torch.nonzero(crop > 0.5 * crop.max(), as_tuple=True)
    assert abs(xs.double().mean() - uc) < 0.6 and abs(ys.double().mean() - vc) < 0.6


def test_scale_intrinsics_pixel_centres():
    # Halving the image: pixel centres 0 and 1 merge into the centre of new pixel 0.
    Ks = scale_intrinsics(K, 0.5, 0.5)
    p = torch.linalg.solve(K, torch.tensor([0.5, 0.5, 1.0], dtype=torch.float64))
    assert torch.allclose(project(p.view(1, 1, 3), Ks)[0, 0],
                          torch.tensor([0.0, 0.0], dtype=torch.float64), atol=1e-12)


@pytest.mark.parametrize("bad, message", [
    (torch.zeros(3, 3), "focal"),
    (torch.full((3, 3), float("nan")), "NaN"),
    (torch.eye(4), "shape"),
])
def test_bad_intrinsics_named(bad, message):
    with pytest.raises(ValueError, match=message):
        check_intrinsics(bad, "camera_info.k")


def test_pose_algebra():
    g = torch.Generator().manual_seed(0)
    R1, R2 = random_rotations(5, generator=g), random_rotations(5, generator=g)
    t1, t2 = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    pts = torch.randn(5, 7, 3, dtype=torch.float64)
    R, t = compose(R1, t1, R2, t2)
    assert torch.allclose(transform_points(R, t, pts),
                          transform_points(R1, t1, transform_points(R2, t2, pts)))
    Ri, ti = inverse(R, t)
    assert torch.allclose(transform_points(Ri, ti, transform_points(R, t, pts)), pts)
    R3, t3 = from_matrix(to_matrix(R, t))
    assert torch.equal(R3, R) and torch.equal(t3, t)
