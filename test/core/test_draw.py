"""Overlays: the depth residual tint of the debug image."""

from types import SimpleNamespace

import numpy as np
import trimesh
import yaml

from pose6d_ros.core.draw import draw_depth_residual, outline_mask
from pose6d_ros.core.objects import load_objects

H, W = 120, 160
K = np.array([[200.0, 0, 79.5], [0, 200, 59.5], [0, 0, 1]])


def test_depth_residual_is_green_on_agreement_red_behind_blue_in_front(tmp_path):
    trimesh.creation.box(extents=(0.1, 0.1, 0.1)).export(tmp_path / "box.ply")
    (tmp_path / "objects.yaml").write_text(yaml.safe_dump(
        {"objects": [{"name": "box", "id": 1, "mesh": "box.ply", "mesh_units": "m"}]}))
    objects = load_objects(tmp_path / "objects.yaml")
    pose = SimpleNamespace(label=0, score=1.0, R=np.eye(3), t=np.array([0.0, 0.0, 0.5]))
    inside = outline_mask(objects[0], pose.R, pose.t, K, (H, W)).astype(bool)
    grey = np.full((H, W, 3), 128, np.uint8)
    for offset, channel in ((0.0, 1), (0.05, 0), (-0.05, 2)):
        depth = np.full((H, W), 0.45 + offset, np.float32)  # the front face is at 0.45 m
        out = draw_depth_residual(grey, depth, K, [pose], objects).astype(int)
        centre = out[H // 2 - 5:H // 2 + 5, W // 2 - 5:W // 2 + 5].reshape(-1, 3)
        assert (centre.argmax(1) == channel).all()
        assert (out[~inside] == 128).all()  # nothing outside the silhouette
    no_reading = draw_depth_residual(grey, np.zeros((H, W), np.float32), K, [pose], objects)
    assert (no_reading == 128).all()
