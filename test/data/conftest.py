"""A tiny synthetic dataset, written once per test session by `pose6d synth`."""

import pytest
import yaml

from pose6d_ros.cli import main
from test.conftest import REPO

TINY = {
    "width": 320,
    "height": 240,
    "K": [[286.2, 0, 162.6], [0, 286.8, 121.0], [0, 0, 1]],
    "images_per_scene": 3,
    "objects_per_scene": [3, 5],
    "distractors_per_scene": [1, 2],
    "max_faces": 1500,
}


@pytest.fixture(scope="session")
def tiny_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "synth.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory, tiny_config):
    """Two scenes of three 320x240 images, written by two worker processes."""
    out = tmp_path_factory.mktemp("synth")
    rc = main(["synth", "--objects", str(REPO / "config" / "objects.yaml"), "--out", str(out),
               "--scenes", "2", "--workers", "2", "--config", str(tiny_config), "--seed", "3",
               "--quiet"])
    assert rc == 0
    return out
