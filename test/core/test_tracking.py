import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pose6d_ros.core.objects import load_objects
from pose6d_ros.core.rotations import axis_angle_to_matrix, random_rotations, rotation_angle
from pose6d_ros.core.symmetry import SymmetryPools
from pose6d_ros.core.tracking import SymmetryTracker

REPO = Path(__file__).resolve().parents[2]
STEP = math.radians(3.0)  # true rotation per frame


def _angles(R: np.ndarray) -> np.ndarray:
    """Geodesic angle (degrees) between consecutive rotations `(F, 3, 3)`."""
    R = torch.from_numpy(np.asarray(R))
    return np.degrees(rotation_angle(R[1:], R[:-1]).numpy())


def _spin(frames: int, seed: int) -> np.ndarray:
    """True rotations `(F, 3, 3)`: a random start turning STEP per frame about a random axis."""
    g = torch.Generator().manual_seed(seed)
    R0 = random_rotations(1, generator=g)[0]
    axis = torch.randn(3, generator=g, dtype=torch.float64)
    axis = axis / axis.norm()
    steps = axis_angle_to_matrix(STEP * torch.arange(frames, dtype=torch.float64)[:, None] * axis)
    return (R0 @ steps).numpy()


@pytest.mark.parametrize("name", ["eggbox", "glue"])
def test_spinning_discrete_symmetric_object_does_not_flip(objects, name):
    label = objects.index_of_name(name)
    pools = SymmetryPools(objects)
    Rs, ts = pools.discrete_R[label].numpy(), pools.discrete_t[label].numpy()  # (D, 3, 3)
    frames = 120  # a full turn
    R_true = _spin(frames, seed=label)
    t_true = np.array([0.05, -0.02, 0.8]) + 0.002 * np.arange(frames)[:, None]
    rng = np.random.default_rng(0)
    k = rng.integers(0, len(Rs), frames)  # the net picks a random pool member each frame
    R_raw = R_true @ Rs[k]
    t_raw = (R_true @ ts[k][..., None])[..., 0] + t_true
    assert _angles(R_raw).max() > 170  # the raw estimates flip

    tracker = SymmetryTracker(objects, gate=0.05)
    published = [tracker.update(np.array([label]), R_raw[f : f + 1], t_raw[f : f + 1])
                 for f in range(frames)]
    index = np.concatenate([p[0] for p in published])
    R_pub = np.concatenate([p[1] for p in published])
    t_pub = np.concatenate([p[2] for p in published])
    assert (index == 0).all()
    assert _angles(R_pub).max() < math.degrees(STEP) + 0.01
    # Each published pose is the true pose times one fixed member of the pool.
    rel = np.swapaxes(R_true, 1, 2) @ R_pub
    member = np.argmin([[np.abs(r - s).max() for s in Rs] for r in rel], axis=1)
    assert np.allclose(rel, Rs[member], atol=1e-9) and (member == member[0]).all()
    assert np.allclose(t_pub, (R_true @ ts[member][..., None])[..., 0] + t_true, atol=1e-9)


@pytest.fixture(scope="module")
def cylinder(tmp_path_factory):
    """An object symmetric under any rotation about z through an offset."""
    d = tmp_path_factory.mktemp("cyl")
    (d / "o.yaml").write_text(
        f"objects:\n  - name: can\n    id: 3\n    mesh: {REPO / 'models/lmo/obj_000005.ply'}\n"
        "    mesh_units: mm\n    symmetries_continuous: [{axis: [0, 0, 1], offset: [10, 0, 0]}]\n")
    return load_objects(d / "o.yaml")


def test_spinning_continuous_symmetric_object_changes_smoothly(cylinder):
    frames = 90
    R_true = _spin(frames, seed=4)
    t_true = np.tile([0.0, 0.1, 0.6], (frames, 1))
    offset = np.array([0.01, 0.0, 0.0])
    rng = np.random.default_rng(1)
    spin = axis_angle_to_matrix(torch.from_numpy(
        rng.uniform(-math.pi, math.pi, frames)[:, None] * np.array([0.0, 0.0, 1.0]))).numpy()
    R_raw = R_true @ spin  # any turn about the axis looks the same
    t_raw = (R_true @ (offset - spin @ offset)[..., None])[..., 0] + t_true
    assert _angles(R_raw).max() > 90

    tracker = SymmetryTracker(cylinder)
    out = [tracker.update(np.array([0]), R_raw[f : f + 1], t_raw[f : f + 1])
           for f in range(frames)]
    R_pub = np.concatenate([o[1] for o in out])
    t_pub = np.concatenate([o[2] for o in out])
    assert _angles(R_pub).max() < math.degrees(STEP) + 0.01
    # Equivalent to the truth: same axis direction and the axis point in the same place.
    assert np.allclose(R_pub[:, :, 2], R_true[:, :, 2], atol=1e-9)
    assert np.allclose((R_pub @ offset) + t_pub, (R_true @ offset) + t_true, atol=1e-9)


def test_instance_indices_follow_tracks_and_expire(objects):
    egg, ape = objects.index_of_name("eggbox"), objects.index_of_name("ape")
    tracker = SymmetryTracker(objects, gate=0.05, max_missed=2)
    a, b = np.array([0.0, 0.0, 0.8]), np.array([0.2, 0.0, 0.8])
    eye = np.eye(3)[None]
    rng = np.random.default_rng(0)
    seen = {}
    for f in range(10):  # two eggboxes drifting, listed in random order
        pos = {"a": a + 0.01 * f, "b": b - 0.01 * f * np.array([0, 1, 0])}
        order = list(rng.permutation(["a", "b"]))
        index, _, t = tracker.update(np.array([egg, egg]), np.repeat(eye, 2, 0),
                                     np.stack([pos[k] for k in order]))
        assert np.allclose(t, np.stack([pos[k] for k in order]))
        for k, i in zip(order, index, strict=True):
            assert seen.setdefault(k, int(i)) == i
    assert sorted(seen.values()) == [0, 1]
    # Another object counts from 0; a jump beyond the gate is a new instance.
    far = np.array([1.5, 1.5, 2.0])
    index, _, _ = tracker.update(np.array([ape, egg]), np.repeat(eye, 2, 0), np.stack([a, far]))
    assert index.tolist() == [0, 2]
    # Two frames more without them: both drifting eggboxes (missed 3 > 2) are dropped and
    # their indices freed; the others survive one more frame.
    for _ in range(2):
        tracker.update(np.zeros(0), np.zeros((0, 3, 3)), np.zeros((0, 3)))
    assert tracker.tracks == 2
    index, _, _ = tracker.update(np.array([egg]), eye, far[None] + 0.01)
    assert index.tolist() == [2]  # still the same track
    index, _, _ = tracker.update(np.array([egg]), eye, np.array([[1.0, -1.0, 1.0]]))
    assert index.tolist() == [0]  # smallest free index


def test_no_poses_and_reset(objects):
    tracker = SymmetryTracker(objects)
    index, R, t = tracker.update(np.zeros(0), np.zeros((0, 3, 3)), np.zeros((0, 3)))
    assert index.shape == (0,) and R.shape == (0, 3, 3) and t.shape == (0, 3)
    tracker.update(np.array([0]), np.eye(3)[None], np.zeros((1, 3)))
    assert tracker.tracks == 1
    tracker.reset()
    assert tracker.tracks == 0


def test_detection_schedule_detects_every_n_and_after_a_loss():
    from types import SimpleNamespace

    from pose6d_ros.core.tracking import DetectionSchedule

    schedule = DetectionSchedule()
    pose = SimpleNamespace(score=0.9)
    kinds = []
    for f in range(7):
        if schedule.should_detect(3):
            kinds.append("D")
            schedule.detected([pose])
        else:
            kinds.append("T")
            kept, lost = schedule.tracked([SimpleNamespace(score=0.1 if f == 4 else 0.9)], 0.5)
            assert lost == (f == 4) and len(kept) == (f != 4)
            schedule.keep(kept)
    assert "".join(kinds) == "DTTDTDT"  # frame 4 lost its track: frame 5 detects
    schedule.detected([])
    assert schedule.should_detect(3)  # nothing to track
    with pytest.raises(ValueError, match="detect_every"):
        schedule.should_detect(0)
