import textwrap
from pathlib import Path

import numpy as np
import pytest

from pose6d_ros.core.objects import ObjectsConfigError, load_objects
from pose6d_ros.data.bop import load_models_info, objects_yaml_from_bop

REPO = Path(__file__).resolve().parents[2]


def test_bundled_objects(objects):
    assert [o.name for o in objects] == ["ape", "can", "cat", "driller", "duck", "eggbox",
                                        "glue", "holepuncher"]
    egg = objects[objects.index_of_name("eggbox")]
    assert egg.id == 10 and len(egg.symmetries_discrete) == 1
    assert egg.diameter == pytest.approx(0.164628)  # converted from mm at load
    assert egg.symmetries_discrete[0][0, 3] == pytest.approx(0.232611e-3, rel=0.01)
    R = egg.symmetries_discrete[0][:3, :3]
    assert np.allclose(R @ R.T, np.eye(3), atol=1e-12)
    assert objects.index_of_id(12) == 7


def test_mesh_in_metres_and_computed_diameter(tmp_path, objects):
    ape = objects[0]
    assert np.abs(ape.mesh.vertices).max() < 0.1  # metres, not millimetres
    (tmp_path / "o.yaml").write_text(
        f"objects:\n  - {{name: ape, id: 1, mesh: {ape.mesh_path}, mesh_units: mm}}\n")
    computed = load_objects(tmp_path / "o.yaml")[0].diameter
    assert computed == pytest.approx(ape.diameter, rel=0.01)


def test_import_from_bop_matches_bundled(tmp_path, objects):
    out = tmp_path / "objects.yaml"
    import yaml
    data = objects_yaml_from_bop(REPO / "models/lmo/models_info.json", out)
    out.write_text(yaml.safe_dump(data))
    imported = load_objects(out)
    assert [o.id for o in imported] == [o.id for o in objects]
    assert imported[5].name == "obj_000010"
    assert np.allclose(imported[5].symmetries_discrete[0], objects[5].symmetries_discrete[0])
    assert set(load_models_info(REPO / "models/lmo/models_info.json")) == {o.id for o in objects}


def _write(tmp_path, body: str) -> Path:
    mesh = REPO / "models/lmo/obj_000001.ply"
    p = tmp_path / "objects.yaml"
    p.write_text(textwrap.dedent(body).replace("MESH", str(mesh)))
    return p


@pytest.mark.parametrize("body, expected", [
    ("objects:\n  - {name: ape, id: 1}\n", ["'ape'", "'mesh'", "missing"]),
    ("objects:\n  - {name: ape, id: -3, mesh: MESH}\n", ["'ape'", "'id'"]),
    ("objects:\n  - {name: 'my ape', id: 1, mesh: MESH}\n", ["'name'"]),
    ("objects:\n  - {name: ape, id: 1, mesh: nowhere.ply}\n", ["'ape'", "'mesh'", "not found"]),
    ("objects:\n  - {name: ape, id: 1, mesh: MESH, mesh_units: inch}\n", ["'mesh_units'"]),
    ("objects:\n  - {name: ape, id: 1, mesh: MESH, diamter: 3}\n", ["'diamter'", "unknown"]),
    ("objects:\n  - {name: ape, id: 1, mesh: MESH, symmetries_discrete: [[1, 2, 3]]}\n",
     ["'ape'", "'symmetries_discrete[0]'", "16"]),
    ("objects:\n  - {name: ape, id: 1, mesh: MESH, symmetries_discrete: "
     "[[2,0,0,0, 0,1,0,0, 0,0,1,0, 0,0,0,1]]}\n", ["'symmetries_discrete[0]'", "rotation"]),
    ("objects:\n  - {name: ape, id: 1, mesh: MESH, symmetries_continuous: [{axis: [0,0,0]}]}\n",
     ["'symmetries_continuous[0].axis'"]),
    ("objects:\n  - {name: ape, id: 1, mesh: MESH}\n  - {name: ape, id: 2, mesh: MESH}\n",
     ["'name'", "already used"]),
    ("objects: [\n", ["not valid YAML"]),
    ("things: []\n", ["'objects'"]),
])
def test_malformed_yaml_names_file_object_field(tmp_path, body, expected):
    path = _write(tmp_path, body)
    with pytest.raises(ObjectsConfigError) as err:
        load_objects(path)
    message = str(err.value)
    assert str(path) in message
    for part in expected:
        assert part in message


def test_unreadable_mesh_named(tmp_path):
    bad = tmp_path / "broken.ply"
    bad.write_text("ply\nthis is not a mesh\n")
    (tmp_path / "o.yaml").write_text(f"objects:\n  - {{name: junk, id: 1, mesh: {bad}}}\n")
    obj = load_objects(tmp_path / "o.yaml")[0]
    with pytest.raises(ObjectsConfigError, match=r"broken\.ply.*'junk'"):
        _ = obj.mesh
