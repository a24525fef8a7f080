"""Symmetries found from shape alone: the LM-O meshes, a cylinder, boxes."""

import numpy as np
import pytest
import trimesh
from scipy.spatial.transform import Rotation

from pose6d_ros.core.objects import load_objects
from pose6d_ros.core.paths import default_objects_yaml
from pose6d_ros.onboard.symmetry_search import find_symmetries


def _axes_and_angles(found):
    out = []
    for T in found.discrete:
        rv = Rotation.from_matrix(T[:3, :3]).as_rotvec()
        angle = np.linalg.norm(rv)
        out.append((rv / angle, np.rad2deg(angle)))
    return out


def _find(mesh: trimesh.Trimesh):
    return find_symmetries(mesh, float(np.linalg.norm(mesh.extents)))


@pytest.fixture(scope="module")
def lmo():
    return {o.name: o for o in load_objects(default_objects_yaml())}


@pytest.mark.parametrize("name", ["eggbox", "glue"])
def test_known_lmo_symmetries_are_found(lmo, name):
    obj = lmo[name]
    mesh = trimesh.load(obj.mesh_path, force="mesh", process=False)
    found = find_symmetries(mesh, obj.diameter / obj.mesh_scale)
    assert not found.continuous
    assert len(found.discrete) == 1
    ours = found.discrete[0]
    bop = obj.symmetries_discrete[0]  # BOP's own, metres
    assert Rotation.from_matrix(ours[:3, :3].T @ bop[:3, :3]).magnitude() < np.deg2rad(3)
    # The same motion of the surface: translations agree within 2 % of the diameter.
    gap = np.linalg.norm(ours[:3, 3] * obj.mesh_scale - bop[:3, 3])
    assert gap < 0.02 * obj.diameter


@pytest.mark.parametrize("name", ["ape", "can", "cat", "driller", "duck", "holepuncher"])
def test_asymmetric_lmo_objects_have_none(lmo, name):
    obj = lmo[name]
    mesh = trimesh.load(obj.mesh_path, force="mesh", process=False)
    found = find_symmetries(mesh, obj.diameter / obj.mesh_scale)
    assert not found.discrete and not found.continuous


def test_cylinder_has_a_continuous_axis_and_a_flip():
    mesh = trimesh.creation.cylinder(radius=30, height=120, sections=64)
    tilt = Rotation.from_euler("xyz", [20, -35, 10], degrees=True).as_matrix()
    mesh.apply_transform(np.vstack([np.c_[tilt, [5, -3, 7]], [0, 0, 0, 1]]))
    found = _find(mesh)
    assert len(found.continuous) == 1
    axis = np.asarray(found.continuous[0]["axis"])
    assert abs(axis @ tilt[:, 2]) > np.cos(np.deg2rad(1))
    # The axis passes through the centre, wherever the offset point sits on it.
    offset = np.asarray(found.continuous[0]["offset"])
    off_axis = (offset - [5, -3, 7]) - axis * (axis @ (offset - [5, -3, 7]))
    assert np.linalg.norm(off_axis) < 0.5
    (flip_axis, angle), = _axes_and_angles(found)
    assert angle == pytest.approx(180, abs=1) and abs(flip_axis @ axis) < 0.05


def test_box_has_the_three_half_turns():
    mesh = trimesh.creation.box(extents=(40, 70, 110))
    mesh.apply_translation([12, 0, -4])
    found = _find(mesh)
    assert not found.continuous
    turns = _axes_and_angles(found)
    assert len(turns) == 3
    for (axis, angle), expected in zip(sorted(turns, key=lambda t: np.argmax(abs(t[0]))),
                                       np.eye(3), strict=True):
        assert angle == pytest.approx(180, abs=1)
        assert abs(axis @ expected) > np.cos(np.deg2rad(2))


def test_square_prism_has_its_eight_member_group():
    found = _find(trimesh.creation.box(extents=(50, 50, 120)))
    turns = _axes_and_angles(found)
    assert len(turns) == 7  # the dihedral group D4 without the identity
    quarter = [a for a, deg in turns if abs(deg - 90) < 1]
    assert len(quarter) == 2 and all(abs(a[2]) > 0.999 for a in quarter)
    assert len(found.to_yaml_fields()["symmetries_discrete"]) == 7


def test_found_symmetries_load_as_an_objects_yaml(tmp_path):
    mesh = trimesh.creation.cylinder(radius=0.03, height=0.12, sections=48)
    mesh_path = tmp_path / "cyl.ply"
    mesh.export(mesh_path)
    found = _find(mesh)
    entry = {"name": "cyl", "id": 1, "mesh": "cyl.ply", "mesh_units": "m",
             **found.to_yaml_fields()}
    import yaml
    (tmp_path / "objects.yaml").write_text(yaml.safe_dump({"objects": [entry]}))
    obj, = load_objects(tmp_path / "objects.yaml")
    assert len(obj.symmetries_continuous) == 1 and len(obj.symmetries_discrete) == 1
