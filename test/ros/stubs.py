"""A stand-in for pose6d_ros.pipeline.Estimator: same interface, poses given by the test.

Also what the launch test plugs into the node (`estimator: test.ros.stubs:StubEstimator`),
so the node's outputs can be checked without trained weights.
"""

from __future__ import annotations

import dataclasses
from functools import lru_cache

import numpy as np
import torch

from pose6d_ros.core.objects import load_objects
from pose6d_ros.pipeline import EstimatorConfig, ObjectPose


@lru_cache(maxsize=4)
def _objects(path: str):
    """One registry per YAML for the whole run: its meshes load once."""
    return load_objects(path)


def make_pose(objects, name: str, t, *, R=None, score: float = 0.9, instance: int = 0
              ) -> ObjectPose:
    """An ObjectPose of object `name` at `t` (metres), rotation `R` (default identity)."""
    label = objects.index_of_name(name)
    return ObjectPose(name=name, label=label, object_id=objects[label].id, instance=instance,
                      score=score, R=np.eye(3) if R is None else np.asarray(R, np.float64),
                      t=np.asarray(t, np.float64), inliers=100, box=(10.0, 20.0, 30.0, 40.0),
                      timings={"detect": 1.0, "pnp": 2.0})


class StubEstimator:
    """Returns `self.poses` (by default an eggbox and a can 0.8 m ahead) for every image, or
    with `self.script` set, its next entry on each call (round robin); raises `self.error`
    when set; records each call's image shape and K, and its depth (None when called
    without). `track` returns the poses it is given, scored from `self.track_scores`."""

    def __init__(self, config: EstimatorConfig) -> None:
        self.config = config
        self.objects = _objects(config.objects)
        self.device = torch.device("cpu")
        self.poses = [make_pose(self.objects, "eggbox", [0.05, -0.02, 0.8], score=0.9),
                      make_pose(self.objects, "can", [-0.1, 0.05, 0.9], score=0.7)]
        self.script: list[list[ObjectPose]] | None = None
        self.error: Exception | None = None
        self.calls: list[tuple[tuple[int, ...], np.ndarray]] = []
        self.depths: list[np.ndarray | None] = []
        # Tracking mode: each `track` call's starting poses; the score every tracked pose
        # gets (a list: per call in turn, the last one repeated).
        self.track_calls: list[list[ObjectPose]] = []
        self.track_scores: list[float] = [0.8]

    def estimate(self, rgb: np.ndarray, K: np.ndarray, *, depth: np.ndarray | None = None
                 ) -> list[ObjectPose]:
        """The preset poses."""
        self.calls.append((rgb.shape, np.array(K)))
        self.depths.append(None if depth is None else np.array(depth))
        if self.error is not None:
            raise self.error
        if self.script:
            return list(self.script[(len(self.calls) - 1) % len(self.script)])
        return list(self.poses)

    def can_track(self, depth: bool = False) -> bool:
        """The stub always tracks."""
        return True

    def track(self, rgb: np.ndarray, K: np.ndarray, poses: list[ObjectPose],
              depth: np.ndarray | None = None) -> list[ObjectPose]:
        """`poses` unmoved, scored by the next entry of `track_scores`."""
        self.track_calls.append(list(poses))
        if self.error is not None:
            raise self.error
        score = self.track_scores[min(len(self.track_calls), len(self.track_scores)) - 1]
        return [dataclasses.replace(p, score=score) for p in poses]
