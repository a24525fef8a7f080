import torch

from pose6d_ros.core.symmetry import SymmetryPools
from pose6d_ros.nets.losses import transformer_loss


def _maps(objects, label):
    g = torch.Generator().manual_seed(0)
    xyz = 0.05 * torch.randn(1, 3, 16, 16, generator=g, dtype=torch.float64)
    mask = torch.zeros(1, 16, 16, dtype=torch.bool)
    mask[:, 4:12, 4:12] = True
    pools = SymmetryPools(objects)
    lab = torch.tensor([label])
    return xyz, mask, pools.R[lab], pools.t[lab], pools.valid[lab]


def test_prediction_of_a_symmetric_pose_costs_nothing(objects):
    glue = objects.index_of_name("glue")
    xyz, mask, pR, pt, pv = _maps(objects, glue)
    center, scale = torch.zeros(1, 3), torch.full((1, 3), 0.1)
    # The net predicts the coordinates seen under the flipped pose T S: S^-1 x.
    x_s = torch.einsum("ji,bjhw->bihw", pR[0, 1], xyz - pt[0, 1][None, :, None, None])
    pred = ((x_s - 0.0) / 0.1 * mask.unsqueeze(1)).float()
    out = transformer_loss(pred, xyz, mask, pR, pt, pv, center, scale, beta=3.0)
    assert out.best.item() == 1 and out.loss.item() < 1e-6
    assert torch.allclose(out.target, pred, atol=1e-6)


def test_plain_l1_for_asymmetric_objects_with_beta(objects):
    xyz, mask, pR, pt, pv = _maps(objects, 0)
    center, scale = torch.zeros(1, 3), torch.ones(1, 3)
    pred = torch.zeros(1, 3, 16, 16)
    out = transformer_loss(pred, xyz, mask, pR, pt, pv, center, scale, beta=3.0)
    expected = 3.0 * (xyz.abs().sum(1) * mask).sum() / (16 * 16)
    assert out.best.item() == 0 and torch.isclose(out.loss[0].double(), expected, rtol=1e-5)


def test_rotation_labels_peak_at_the_nearest_bin_and_forgive_symmetries(objects):
    from pose6d_ros.core.rotations import rotation_angle, rotation_grid
    from pose6d_ros.nets.losses import rotation_class_loss

    grid = rotation_grid(64)
    pools = SymmetryPools(objects)
    glue = torch.tensor([objects.index_of_name("glue")])
    R = grid[5:6]
    logits = torch.full((1, 64), -20.0, dtype=torch.float64)
    logits[0, 5] = 20.0
    loss = rotation_class_loss(logits, R, grid, pools.R[glue], pools.valid[glue])
    # The flipped pose R S of the symmetric glue costs exactly as much as R.
    flipped = rotation_class_loss(logits, R @ pools.R[glue][:, 1], grid, pools.R[glue],
                                  pools.valid[glue])
    torch.testing.assert_close(loss, flipped)
    worse = logits.roll(1, -1)
    far = rotation_angle(grid[4], grid[5]) > 0.3
    assert not far or rotation_class_loss(worse, R, grid, pools.R[glue], pools.valid[glue]) > loss
