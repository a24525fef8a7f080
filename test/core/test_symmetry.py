import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from pose6d_ros.core.objects import load_objects
from pose6d_ros.core.rotations import axis_angle_to_matrix, random_rotations, rotation_angle
from pose6d_ros.core.symmetry import SymmetryPools, symmetry_transforms

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cylinder(tmp_path_factory):
    """An object with a continuous symmetry about z through an offset, and a flip."""
    d = tmp_path_factory.mktemp("cyl")
    (d / "o.yaml").write_text(
        f"objects:\n  - name: can\n    id: 3\n    mesh: {REPO / 'models/lmo/obj_000005.ply'}\n"
        "    mesh_units: mm\n    symmetries_continuous: [{axis: [0, 0, 1], offset: [10, 0, 0]}]\n"
        "    symmetries_discrete: [[1,0,0,0, 0,-1,0,0, 0,0,-1,0, 0,0,0,1]]\n")
    return load_objects(d / "o.yaml")


def test_discrete_pool_keeps_the_mesh(objects):
    egg = objects[objects.index_of_name("eggbox")]
    R, t = symmetry_transforms(egg)
    assert len(R) == 2 and np.allclose(R[0], np.eye(3))
    v = egg.mesh.vertices
    moved = v @ R[1].T + t[1]
    # BOP's symmetry is approximate: nearly every moved vertex lies near the surface,
    # unlike under a rotation that is no symmetry.
    tree = cKDTree(v)
    assert np.percentile(tree.query(moved)[0], 95) < 0.03 * egg.diameter
    quarter = axis_angle_to_matrix(torch.tensor([0, 0, math.pi / 2], dtype=torch.float64))
    assert np.percentile(tree.query(v @ quarter.numpy().T)[0], 95) > 0.05 * egg.diameter


def test_continuous_pool_size_and_group(cylinder):
    R, t = symmetry_transforms(cylinder[0], max_step_fraction=0.1)
    steps = math.ceil(math.pi / 0.1)
    assert len(R) == 2 * steps
    # Each member keeps the axis point (offset) fixed and rotates about z.
    o = np.array([0.01, 0, 0])
    assert np.allclose(R @ o + t, o, atol=1e-12)
    assert np.allclose(R[:steps, :, 2], [0, 0, 1])


def test_canonical_is_same_for_equivalent_poses(objects):
    pools = SymmetryPools(objects)
    egg = objects.index_of_name("eggbox")
    g = torch.Generator().manual_seed(0)
    R = random_rotations(20, generator=g)
    t = torch.randn(20, 3, dtype=torch.float64)
    labels = torch.full((20,), egg)
    Rs, ts = pools.discrete_R[egg, 1], pools.discrete_t[egg, 1]
    R2, t2 = R @ Rs, (R @ ts) + t
    a = pools.canonicalise(labels, R, t)
    b = pools.canonicalise(labels, R2, t2)
    assert torch.allclose(a[0], b[0], atol=1e-12) and torch.allclose(a[1], b[1], atol=1e-12)
    again = pools.canonicalise(labels, *a)
    assert torch.allclose(again[0], a[0], atol=1e-12)  # idempotent


def test_canonical_closest_to_reference(objects):
    pools = SymmetryPools(objects)
    glue = objects.index_of_name("glue")
    R = random_rotations(10, generator=torch.Generator().manual_seed(3))
    t = torch.zeros(10, 3, dtype=torch.float64)
    flipped = R @ pools.discrete_R[glue, 1]
    labels = torch.full((10,), glue)
    # Starting from the flipped pose, the reference R pulls it back to R.
    Rc, _ = pools.canonicalise(labels, flipped, t, reference_R=R)
    assert rotation_angle(Rc, R).max() < 1e-9


def test_non_symmetric_object_unchanged(objects):
    pools = SymmetryPools(objects)
    R = random_rotations(5, generator=torch.Generator().manual_seed(4))
    t = torch.randn(5, 3, dtype=torch.float64)
    Rc, tc = pools.canonicalise(torch.zeros(5, dtype=torch.long), R, t)
    assert torch.equal(Rc, R) and torch.equal(tc, t)


def test_continuous_canonicalisation_exact(cylinder):
    pools = SymmetryPools(cylinder)
    R = random_rotations(8, generator=torch.Generator().manual_seed(5))
    t = torch.randn(8, 3, dtype=torch.float64)
    labels = torch.zeros(8, dtype=torch.long)
    spin = axis_angle_to_matrix(torch.tensor([0, 0, 1.234], dtype=torch.float64))
    o = torch.tensor([0.01, 0, 0], dtype=torch.float64)
    R2, t2 = R @ spin, R @ (o - spin @ o) + t  # same pose, spun about the symmetry axis
    a, b = pools.canonicalise(labels, R, t), pools.canonicalise(labels, R2, t2)
    assert torch.allclose(a[0], b[0], atol=1e-10) and torch.allclose(a[1], b[1], atol=1e-10)
    # The chosen member is the best: no sampled member is closer to the identity.
    Rs, _ = symmetry_transforms(cylinder[0], max_step_fraction=0.01)
    cand = R.unsqueeze(1) @ torch.from_numpy(Rs)
    eye = torch.eye(3, dtype=torch.float64)
    best_sampled = rotation_angle(cand, eye).min(-1).values
    assert (rotation_angle(a[0], eye) <= best_sampled + 1e-9).all()
