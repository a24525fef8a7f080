"""Overlays of estimated poses on images: object axes, projected mesh outlines, labels."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import cv2
import numpy as np

from pose6d_ros.core.objects import ObjectModel, ObjectRegistry

# Distinct RGB colours, one per object index (cycled).
PALETTE = np.array([(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200),
                    (245, 130, 48), (145, 30, 180), (70, 240, 240), (240, 50, 230),
                    (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40)], np.uint8)


class DrawablePose(Protocol):
    """What `draw_poses` reads of a pose (ObjectPose has it)."""

    label: int
    score: float
    R: np.ndarray
    t: np.ndarray


def project_points(points: np.ndarray, R: np.ndarray, t: np.ndarray, K: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Pixels `(N, 2)` of object points `(N, 3)` under pose (R, t) and whether each lies in
    front of the camera `(N,)`."""
    p = points @ R.T + t
    z = p[:, 2]
    uv = (p @ K.T)[:, :2] / np.where(np.abs(z) < 1e-9, 1e-9, z)[:, None]
    return uv, z > 1e-6


def outline_mask(obj: ObjectModel, R: np.ndarray, t: np.ndarray, K: np.ndarray,
                 size: tuple[int, int]) -> np.ndarray:
    """The object's silhouette `(H, W)` uint8 (0/1) under (R, t), `size` = (H, W)."""
    mesh = obj.mesh
    uv, front = project_points(np.asarray(mesh.vertices), R, t, K)
    faces = np.asarray(mesh.faces)
    faces = faces[front[faces].all(1)]
    mask = np.zeros(size, np.uint8)
    if len(faces):
        # Sub-pixel precision (4 fractional bits) for small objects. One triangle at a time:
        # fillPoly given them all fills by parity, and overlapping ones cancel out.
        tri = np.round(uv[faces] * 16).astype(np.int32)
        for corners in tri:
            cv2.fillConvexPoly(mask, corners, 1, lineType=cv2.LINE_8, shift=4)
    return mask


def draw_poses(rgb: np.ndarray, K: np.ndarray, poses: Sequence[DrawablePose],
               objects: ObjectRegistry, *, axes: bool = True, outline: bool = True,
               labels: bool = True, thickness: int = 2) -> np.ndarray:
    """A copy of `rgb (H, W, 3)` uint8 with each pose's mesh outline (object colour),
    axes (x red, y green, z blue, half the object's diameter long) and name + score."""
    out = np.ascontiguousarray(rgb).copy()
    H, W = out.shape[:2]
    K = np.asarray(K, np.float64)
    for pose in poses:
        obj = objects[pose.label]
        colour = tuple(int(c) for c in PALETTE[pose.label % len(PALETTE)])
        R, t = np.asarray(pose.R, np.float64), np.asarray(pose.t, np.float64)
        if outline:
            contours, _ = cv2.findContours(outline_mask(obj, R, t, K, (H, W)),
                                           cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(out, contours, -1, colour, thickness, cv2.LINE_AA)
        pts = np.vstack([np.zeros(3), 0.5 * obj.diameter * np.eye(3)])
        uv, front = project_points(pts, R, t, K)
        if not front.all() or not np.isfinite(uv).all():
            continue
        o = tuple(round(v) for v in uv[0])
        if axes:
            for k, c in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
                tip = tuple(round(v) for v in np.clip(uv[k + 1], -1e4, 1e4))
                cv2.line(out, o, tip, c, thickness, cv2.LINE_AA)
        if labels:
            text = f"{obj.name} {pose.score:.2f}"
            cv2.putText(out, text, (o[0] + 4, o[1] - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                        (0, 0, 0), 3, cv2.LINE_AA)
            cv2.putText(out, text, (o[0] + 4, o[1] - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                        colour, 1, cv2.LINE_AA)
    return out


_SURFACE: dict[tuple[str, float], np.ndarray] = {}


def _surface_points(obj: ObjectModel, count: int = 20000) -> np.ndarray:
    """`(count, 3)` points spread over the object's surface, metres (computed once)."""
    key = (str(obj.mesh_path), obj.mesh_scale)
    if key not in _SURFACE:
        import trimesh

        points, _ = trimesh.sample.sample_surface_even(obj.mesh, count, seed=0)
        _SURFACE[key] = np.asarray(points) if len(points) else np.asarray(obj.mesh.vertices)
    return _SURFACE[key]


def draw_depth_residual(rgb: np.ndarray, depth: np.ndarray, K: np.ndarray,
                        poses: Sequence[DrawablePose], objects: ObjectRegistry, *,
                        tolerance: float = 0.01, alpha: float = 0.55) -> np.ndarray:
    """A copy of `rgb (H, W, 3)` uint8 tinted, inside each pose's silhouette where `depth`
    `(H, W)` float32 metres (0: no reading) has a reading, by the measured minus the model's
    depth: green within `tolerance` metres, red where the surface is further than the model
    (the pose floats in front of it), blue where it is nearer (the pose is too far, or
    something occludes the object)."""
    out = np.ascontiguousarray(rgb).copy()
    H, W = out.shape[:2]
    model = np.full((H, W), np.inf, np.float32)  # nearest model depth per pixel
    K = np.asarray(K, np.float64)
    for pose in poses:
        R, t = np.asarray(pose.R, np.float64), np.asarray(pose.t, np.float64)
        verts = _surface_points(objects[pose.label])
        z = verts @ R[2] + t[2]
        uv, front = project_points(verts, R, t, K)
        u, v = np.round(uv[front]).astype(np.int64).T
        inside = (u >= 0) & (u < W) & (v >= 0) & (v < H)
        np.minimum.at(model, (v[inside], u[inside]), z[front][inside].astype(np.float32))
    # Points leave gaps between them: a small minimum filter closes them.
    model = cv2.erode(np.where(np.isfinite(model), model, 1e9).astype(np.float32),
                      np.ones((5, 5), np.uint8))
    silhouette = np.zeros((H, W), bool)
    for pose in poses:
        silhouette |= outline_mask(objects[pose.label], np.asarray(pose.R, np.float64),
                                   np.asarray(pose.t, np.float64), K, (H, W)).astype(bool)
    seen = silhouette & (depth > 0) & (model < 1e8)
    residual = depth - model
    tint = np.zeros((H, W, 3), np.float32)
    tint[seen & (np.abs(residual) <= tolerance)] = (0, 200, 0)
    tint[seen & (residual > tolerance)] = (230, 0, 0)
    tint[seen & (residual < -tolerance)] = (0, 60, 230)
    out[seen] = (out[seen] * (1 - alpha) + tint[seen] * alpha).astype(np.uint8)
    return out
