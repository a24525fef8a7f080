"""Shared fixtures: devices, the bundled objects, a tiny synthetic dataset."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from pose6d_ros.core.objects import load_objects

REPO = Path(__file__).resolve().parents[1]


def torchrun_cli(*args: str) -> subprocess.CompletedProcess:
    """`pose6d ARGS` under torchrun: 2 processes on the CPU (gloo), one thread each."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", "-m", "pose6d_ros.cli", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
@pytest.fixture(scope="session", autouse=True)
def template_cache(tmp_path_factory):
    """Template banks of this test session, built once and shared, never the user's cache."""
    path = tmp_path_factory.mktemp("cache")
    old = os.environ.get("POSE6D_CACHE")
    os.environ["POSE6D_CACHE"] = str(path)
    yield path / "templates"
    if old is None:
        os.environ.pop("POSE6D_CACHE", None)
    else:
        os.environ["POSE6D_CACHE"] = old


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    """Every test using this runs on the CPU and, where present, on CUDA."""
    return request.param


@pytest.fixture(scope="session")
def objects():
    """The bundled LM-O objects registry."""
    return load_objects(REPO / "config" / "objects.yaml")


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
    from pose6d_ros.cli import main

    out = tmp_path_factory.mktemp("synth")
    rc = main(["synth", "--objects", str(REPO / "config" / "objects.yaml"), "--out", str(out),
               "--scenes", "2", "--workers", "2", "--config", str(tiny_config), "--seed", "3",
               "--quiet"])
    assert rc == 0
    return out


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory, objects):
    """Untrained detector and CoordNet weight files for the bundled objects (fast shapes)."""
    from pose6d_ros.nets.coordnet import CoordNet, CoordNetConfig, save_checkpoint
    from pose6d_ros.nets.detector import DetectorConfig, build_detector, save_detector

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("weights")
    cfg = DetectorConfig(num_classes=len(objects), min_size=160, max_size=224)
    save_detector(out / "detector.pt", build_detector(cfg), cfg)
    net = CoordNet(CoordNetConfig(len(objects), encoder="small", input_size=32,
                                  decoder_width=8))
    save_checkpoint(out / "coordnet.pt", net)
    return out / "detector.pt", out / "coordnet.pt"
