"""`pose6d onboard`: mesh checks, the objects YAML entry, and the whole command, tiny."""

import json

import numpy as np
import pytest
import trimesh
import yaml

from pose6d_ros.cli import main
from pose6d_ros.core.objects import ObjectsConfigError, load_objects, upsert_object_entry
from pose6d_ros.onboard.mesh_check import check_mesh, guess_units


def _coloured_box(extents) -> trimesh.Trimesh:
    mesh = trimesh.creation.box(extents=extents)
    colours = np.tile([200, 60, 40, 255], (len(mesh.vertices), 1))
    colours[mesh.vertices[:, 0] > 0] = [40, 90, 200, 255]
    mesh.visual = trimesh.visual.ColorVisuals(mesh, vertex_colors=colours)
    return mesh


@pytest.mark.parametrize(("size", "units", "clear"), [
    (104.4, "mm", True), (0.104, "m", True), (12.0, "mm", False), (3000.0, "mm", False)])
def test_units_are_guessed_from_the_size(size, units, clear):
    assert guess_units(size) == (units, clear)


def test_mesh_check_reports_units_defects_and_colours(tmp_path):
    path = tmp_path / "open.ply"
    mesh = trimesh.creation.box(extents=(60.0, 40.0, 30.0))
    trimesh.Trimesh(mesh.vertices, mesh.faces[:-2], process=False).export(path)
    _, report = check_mesh(path)
    assert report.units == "mm" and report.units_guessed
    assert report.diameter_m == pytest.approx(np.sqrt(60**2 + 40**2 + 30**2) * 1e-3, rel=1e-6)
    assert report.boundary_edges > 0 and report.colours == "none"
    assert any("open" in w for w in report.warnings)
    assert any("no vertex colours" in w for w in report.warnings)
    _, given = check_mesh(path, units="cm")
    assert given.units == "cm" and not given.units_guessed
    with pytest.raises(ObjectsConfigError, match=r"missing\.ply"):
        check_mesh(tmp_path / "missing.ply")
    (tmp_path / "junk.ply").write_text("not a mesh")
    with pytest.raises(ObjectsConfigError, match=r"junk\.ply"):
        check_mesh(tmp_path / "junk.ply")


def test_upsert_adds_replaces_and_keeps_the_header(tmp_path):
    _coloured_box((0.06, 0.04, 0.03)).export(tmp_path / "a.ply")
    yaml_path = tmp_path / "cfg" / "objects.yaml"
    yaml_path.parent.mkdir()
    yaml_path.write_text("# my objects\nobjects:\n- {name: first, id: 7, mesh: ../a.ply}\n")
    added = upsert_object_entry(yaml_path, {"name": "second", "mesh": str(tmp_path / "a.ply"),
                                            "mesh_units": "m"})
    assert added["id"] == 8 and added["mesh"] == "../a.ply"
    upsert_object_entry(yaml_path, {"name": "second", "mesh": str(tmp_path / "a.ply"),
                                    "mesh_units": "m", "diameter": 0.08})
    text = yaml_path.read_text()
    assert text.startswith("# my objects\n")
    objects = load_objects(yaml_path)
    assert [(o.name, o.id) for o in objects] == [("first", 7), ("second", 8)]
    assert objects[1].diameter == pytest.approx(0.08)
    with pytest.raises(ObjectsConfigError, match="name"):
        upsert_object_entry(yaml_path, {"name": "9bad", "mesh": str(tmp_path / "a.ply")})
    assert load_objects(yaml_path)[1].name == "second"  # a refused entry changes nothing


def test_onboard_a_new_mesh_end_to_end_and_resume(tmp_path, capsys):
    mesh_path = tmp_path / "block.ply"
    _coloured_box((60.0, 40.0, 30.0)).export(mesh_path)  # millimetres
    objects = tmp_path / "objects.yaml"
    work = tmp_path / "work"
    argv = ["onboard", str(mesh_path), "--name", "block", "--objects", str(objects),
            "--work", str(work), "--val-scenes", "1", "--val-images-per-scene", "2",
            "--view-spacing", "45", "--inplane-step", "90", "--device", "cpu", "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    block, = load_objects(objects)
    assert block.name == "block" and block.mesh_scale == 1e-3
    assert len(block.symmetries_discrete) == 3  # a box's three half turns
    assert (work / "symmetries.png").stat().st_size > 0
    for mode in ("rgb", "rgbd"):
        figures = json.loads((work / "eval" / mode / "figures.json").read_text())
        assert figures["instances"] >= 1
    assert json.loads((work / "eval" / "rgbd" / "figures.json").read_text())["depth_images"]
    params = yaml.safe_load((work / "pose.yaml").read_text())["/**"]["ros__parameters"]
    assert params["objects"] == str(objects.resolve()) and params["coarse"] == "templates"
    assert f"config_file:={work.resolve() / 'pose.yaml'}" in out
    assert "ADD(-S)" in out

    assert main(argv) == 0  # everything is there: nothing is searched or measured again
    again = capsys.readouterr().out
    assert "found before" in again and again.count("measured before") == 2
