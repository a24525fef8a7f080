"""A picture of a new object and each symmetry found: the mesh beside its turned copy."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import trimesh
from scipy.spatial.transform import Rotation

from pose6d_ros.data.render import Instance, Renderer
from pose6d_ros.onboard.symmetry_search import FoundSymmetries, axis_point

_SIZE = 240
_VIEW = Rotation.from_euler("xyz", [-115.0, 0.0, 35.0], degrees=True).as_matrix()


def _panel(renderer: Renderer, K: np.ndarray, R: np.ndarray, t: np.ndarray, title: str,
           axis: tuple[np.ndarray, np.ndarray] | None,
           view: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """One rendered view `(S, S, 3)` BGR of the mesh at `(R, t)`, with a title and the
    symmetry `axis` (two object points) seen from the unmoved `view` pose."""
    out = renderer.render(K, [Instance("mesh", R, t)], amodal=False)
    img = np.where(out.instance[..., None] >= 0, out.rgb, 255).astype(np.uint8)[..., ::-1]
    img = np.ascontiguousarray(img)
    if axis is not None:
        ends = np.stack(axis)  # (2, 3) object frame
        cam = ends @ view[0].T + view[1]
        uv = cam @ K.T
        uv = (uv[:, :2] / uv[:, 2:]).round().astype(int)
        cv2.line(img, tuple(map(int, uv[0])), tuple(map(int, uv[1])), (0, 0, 220), 2,
                 cv2.LINE_AA)
    cv2.putText(img, title, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (40, 40, 40), 1,
                cv2.LINE_AA)
    return img


def draw_symmetry_report(mesh_m: trimesh.Trimesh, found_m: FoundSymmetries, path: str | Path
                         ) -> Path:
    """Write a PNG with one row per symmetry (metres): the mesh, then the mesh moved by it
    (identical when the symmetry holds), its axis in red; one row of views when none."""
    center = np.asarray(mesh_m.bounds).mean(0)
    radius = float(np.linalg.norm(mesh_m.extents)) / 2
    f = _SIZE * 1.1
    K = np.array([[f, 0, _SIZE / 2], [0, f, _SIZE / 2], [0, 0, 1.0]])
    distance = 2.6 * radius
    renderer = Renderer(_SIZE, _SIZE, near=distance / 20, far=distance * 4)
    try:
        renderer.add_mesh("mesh", mesh_m)
        rows = []
        R0 = _VIEW
        t0 = np.array([0, 0, distance]) - R0 @ center
        for i, T in enumerate(found_m.discrete):
            rv = Rotation.from_matrix(T[:3, :3]).as_rotvec()
            angle = np.linalg.norm(rv)
            axis_dir = rv / angle
            p = axis_point(T[:3, :3], T[:3, 3], axis_dir)
            p = p + axis_dir * (axis_dir @ (center - p))
            axis = (p - 1.2 * radius * axis_dir, p + 1.2 * radius * axis_dir)
            rows.append([
                _panel(renderer, K, R0, t0, f"discrete {i + 1}: as is", axis, (R0, t0)),
                _panel(renderer, K, R0 @ T[:3, :3], R0 @ T[:3, 3] + t0,
                       f"turned {np.rad2deg(angle):.0f} deg", axis, (R0, t0))])
        for i, c in enumerate(found_m.continuous):
            a, o = np.asarray(c["axis"]), np.asarray(c["offset"])
            o = o + a * (a @ (center - o))
            axis = (o - 1.2 * radius * a, o + 1.2 * radius * a)
            Rc = Rotation.from_rotvec(a * np.pi / 3).as_matrix()
            rows.append([
                _panel(renderer, K, R0, t0, f"continuous {i + 1}: as is", axis, (R0, t0)),
                _panel(renderer, K, R0 @ Rc, R0 @ (o - Rc @ o) + t0, "turned 60 deg", axis,
                       (R0, t0))])
        if not rows:
            views = [Rotation.from_euler("xyz", [a, 0.0, b], degrees=True).as_matrix()
                     for a, b in ((-115, 35), (-70, 200))]
            poses = [(Rv, np.array([0, 0, distance]) - Rv @ center) for Rv in views]
            rows.append([_panel(renderer, K, *pose, "no symmetry found", None, pose)
                         for pose in poses])
    finally:
        renderer.release()
    image = np.vstack([np.hstack(r) for r in rows])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), image)
    return path
