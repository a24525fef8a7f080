"""Shared fixtures: devices, the bundled objects, and synthetic PnP problems."""

from pathlib import Path

import pytest
import torch

from pose6d_ros.core.objects import load_objects

REPO = Path(__file__).resolve().parents[1]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    """Every test using this runs on the CPU and, where present, on CUDA."""
    return request.param


@pytest.fixture(scope="session")
def objects():
    """The bundled LM-O objects registry."""
    return load_objects(REPO / "config" / "objects.yaml")
