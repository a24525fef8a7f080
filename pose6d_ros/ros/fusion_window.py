"""The node's `fusion` mode without rclpy: recent views of a static scene, fused.

`FusionWindow` keeps the last views (image, K, camera pose in the fixed frame, the
single-view poses) under the window rules: at most `size` views, none older than `max_age_s`
before the newest, and a view whose camera centre is within `min_baseline` of one already
kept replaces the nearest such view instead of being added, so a camera standing still does
not fill the window with one viewpoint. `ViewFusion` runs `MultiViewFuser` over the window
and keeps the fused objects' instance indices and symmetry choices stable over time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from pose6d_ros.core.objects import ObjectRegistry
from pose6d_ros.core.tracking import SymmetryTracker
from pose6d_ros.fusion.multiview import FusedObject, MultiViewFuser, View
from pose6d_ros.pipeline import ObjectPose
from pose6d_ros.refine.region import RegionRefiner


class TransformSource(Protocol):
    """Where camera poses come from: the node's tf2 buffer, or `pose6d bag`'s TfBuffer."""

    def lookup(self, target: str, source: str, stamp_ns: int) -> np.ndarray:
        """`T_target_source (4, 4)` at `stamp_ns`; LookupError (with the reason) if none."""
        ...


@dataclass
class WindowView:
    """One view in the window and the stamp (ns) of its image."""

    stamp_ns: int
    view: View

    @property
    def centre(self) -> np.ndarray:
        """The camera centre `(3,)` in the fixed frame."""
        return np.asarray(self.view.T_world_cam, np.float64)[:3, 3]


class FusionWindow:
    """The recent views, oldest first (see the module doc)."""

    def __init__(self) -> None:
        self.entries: list[WindowView] = []

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def views(self) -> list[View]:
        """The views in the window, oldest first."""
        return [e.view for e in self.entries]

    def clear(self) -> None:
        """Forget every view."""
        self.entries.clear()

    def add(self, view: View, stamp_ns: int, *, size: int, max_age_s: float = 0.0,
            min_baseline: float = 0.0) -> bool:
        """Take `view` of stamp `stamp_ns`; True when it replaced a view (too close to it).

        `size`: most views kept; `max_age_s`: views older than this before `stamp_ns` are
        dropped (0: no limit); `min_baseline`: metres between camera centres.
        """
        if self.entries and stamp_ns < self.entries[-1].stamp_ns:
            self.clear()  # time went back (a bag replayed from its start): a new recording
        if max_age_s > 0:
            oldest = stamp_ns - round(max_age_s * 1e9)
            self.entries = [e for e in self.entries if e.stamp_ns >= oldest]
        new = WindowView(stamp_ns, view)
        replaced = False
        if self.entries and min_baseline > 0:
            dist = np.linalg.norm(np.stack([e.centre for e in self.entries]) - new.centre,
                                  axis=1)
            nearest = int(np.argmin(dist))
            if dist[nearest] < min_baseline:
                del self.entries[nearest]
                replaced = True
        self.entries.append(new)
        del self.entries[:max(0, len(self.entries) - size)]
        return replaced


class ViewFusion:
    """The window and the fuser: one view in, the objects fused over the window out."""

    def __init__(self, objects: ObjectRegistry, refiner: RegionRefiner | None = None) -> None:
        self.objects = objects
        self.fuser = MultiViewFuser(objects, refiner=refiner)
        self.window = FusionWindow()
        self.tracker = SymmetryTracker(objects, pools=self.fuser.pools)

    def add(self, view: View, stamp_ns: int, *, size: int, max_age_s: float,
            min_baseline: float, track_gate: float, track_max_missed: int
            ) -> list[FusedObject]:
        """Add `view` (see `FusionWindow.add`) and fuse the window: the objects in the fixed
        frame, best score first, with indices kept while an object stays within
        `track_gate` metres (and for `track_max_missed` fusions unseen)."""
        self.window.add(view, stamp_ns, size=size, max_age_s=max_age_s,
                        min_baseline=min_baseline)
        fused = self.fuser(self.window.views)
        self.tracker.gate, self.tracker.max_missed = track_gate, track_max_missed
        labels = np.array([f.label for f in fused], np.int64)
        R = np.array([f.R for f in fused], np.float64).reshape(-1, 3, 3)
        t = np.array([f.t for f in fused], np.float64).reshape(-1, 3)
        index, R, t = self.tracker.update(labels, R, t)
        for i, f in enumerate(fused):
            f.instance, f.R, f.t = int(index[i]), R[i], t[i]
        return fused

    def reset(self) -> None:
        """Forget the views and the fused objects' indices."""
        self.window.clear()
        self.tracker.reset()


def fused_poses(fused: list[FusedObject]) -> list[ObjectPose]:
    """The fused objects as ObjectPoses (fixed frame), for the output message builders."""
    return [ObjectPose(name=f.name, label=f.label, object_id=f.object_id, instance=f.instance,
                       score=f.score, R=f.R, t=f.t, inliers=0,
                       box=(0.0, 0.0, 0.0, 0.0)) for f in fused]


def check_camera_pose(T: np.ndarray) -> np.ndarray:
    """`T (4, 4)` float64 if it is a finite rigid transform; ValueError otherwise."""
    T = np.asarray(T, np.float64)
    if T.shape != (4, 4) or not np.isfinite(T).all():
        raise ValueError(f"camera pose is not a finite 4x4 transform: {T.tolist()}")
    R = T[:3, :3]
    if not np.allclose(R.T @ R, np.eye(3), atol=1e-4) or np.linalg.det(R) < 0:
        raise ValueError("camera pose rotation is not a rotation")
    return T
