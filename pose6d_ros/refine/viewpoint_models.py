"""Sparse viewpoint models: per object, contour points and normals seen from many views.

For each of V directions on a sphere around the object, the mesh's silhouette is rendered
once; `P` points spread evenly along its outer contour are lifted back onto the surface
(model frame) with their outward contour normals, and `S` points spread over the visible
surface with their normals (for the depth term, as ICG's depth modality). At run time
nothing is rasterised: the view nearest the current pose's viewing direction gives points
to project (as RBOT, SRT3D and ICG do). Models are cached beside the template banks, keyed
by the mesh's bytes, units, symmetries and these settings.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import Tensor

from pose6d_ros.core.objects import ObjectModel
from pose6d_ros.nets.weights import WeightsError
from pose6d_ros.templates.bank import asset_key, default_cache_dir, load_asset, save_asset
from pose6d_ros.templates.viewpoints import look_at_rotations, sphere_directions

KIND = "viewpoint_model"
MODEL_FIELDS = ("name", "directions", "points", "normals", "surface", "surface_normals")


@dataclass(frozen=True)
class ViewpointConfig:
    """How viewpoint models are built; part of their cache key."""

    view_spacing_deg: float = 8.0  # views about this far apart (~650 on the sphere)
    points: int = 200  # contour points per view
    surface_points: int = 200  # visible surface points per view (depth term)
    render_size: int = 256  # pixels of the square silhouette render
    max_faces: int = 4000  # mesh decimation for rendering

    def to_dict(self) -> dict[str, Any]:
        """Plain values (cache key, file header)."""
        return {"kind": KIND, **asdict(self)}


@dataclass
class ViewpointModel:
    """One object's views."""

    name: str
    directions: Tensor  # (V, 3) unit, model frame, from the object towards the camera
    points: Tensor  # (V, P, 3) float32 contour points, metres, model frame
    normals: Tensor  # (V, P, 3) float32 unit outward contour normals, model frame
    surface: Tensor  # (V, S, 3) float32 visible surface points, metres, model frame
    surface_normals: Tensor  # (V, S, 3) float32 unit outward surface normals, model frame

    def to_dict(self) -> dict[str, Any]:
        """Tensors and the name, safe for `torch.load(weights_only=True)`."""
        return {"name": self.name, "directions": self.directions, "points": self.points,
                "normals": self.normals, "surface": self.surface,
                "surface_normals": self.surface_normals}


def stack_views(models: Sequence[ViewpointModel], name: str,
                device: str | torch.device = "cpu") -> Tensor:
    """Field `name` of every model stacked `(O, V, ...)` float32 on `device`; objects with
    fewer views are padded with copies of their first view."""
    V = max(len(m.directions) for m in models)
    parts = [getattr(m, name) for m in models]
    return torch.stack([torch.cat([x, x[:1].expand(V - len(x), *x.shape[1:])])
                        for x in parts]).float().to(device)


class NearestView:
    """Finds the view of each pose's object nearest its viewing direction."""

    def __init__(self, models: Sequence[ViewpointModel], device: str | torch.device = "cpu"
                 ) -> None:
        self.directions = stack_views(models, "directions", device)  # (O, V, 3)
        d = self.directions
        # Models built with the same settings share one sphere of directions; then one
        # matmul serves every pose instead of a gather of (N, V, 3).
        self.shared = d[0] if bool((d == d[:1]).all()) else None

    def __call__(self, labels: Tensor, R: Tensor, t: Tensor) -> Tensor:
        """View index `(N,)` of poses `R (N, 3, 3)`, `t (N, 3)` of objects `labels (N,)`."""
        cam = -(R.transpose(1, 2) @ t[..., None])[..., 0].float()  # camera centre, model frame
        if self.shared is not None:
            return (cam @ self.shared.T).argmax(1)
        return torch.einsum("nvk,nk->nv", self.directions[labels], cam).argmax(1)


def contour_samples(mask: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` pixels `(count, 2)` x, y evenly along the largest outer contour of `mask
    (S, S)` and their outward unit normals `(count, 2)`."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_NONE)
    if not contours:
        raise ValueError("a silhouette without a contour")
    c = max(contours, key=len)[:, 0].astype(np.float64)  # (L, 2)
    n = len(c)
    idx = np.linspace(0, n, count, endpoint=False).astype(np.int64)
    step = max(1, n // 100)  # tangent over a few pixels: pixel steps are too coarse
    tangent = c[(idx + step) % n] - c[(idx - step) % n]
    normal = np.stack([tangent[:, 1], -tangent[:, 0]], 1)
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-9)
    # Outward: a few pixels along the normal should leave the silhouette more often than not.
    probe = np.round(c[idx] + 3 * normal).astype(np.int64)
    probe = np.clip(probe, 0, np.array(mask.shape[::-1]) - 1)
    if mask[probe[:, 1], probe[:, 0]].mean() > 0.5:
        normal = -normal
    return c[idx], normal


def surface_samples(depth: np.ndarray, mask: np.ndarray, K_inv: np.ndarray, count: int,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`count` camera-frame points `(count, 3)` spread over the silhouette `mask (S, S)` of
    a render's `depth (S, S)`, and their unit normals `(count, 3)` facing the camera."""
    S = depth.shape[0]
    ys, xs = np.mgrid[0:S, 0:S].astype(np.float64)
    cloud = depth[..., None] * (np.stack([xs, ys, np.ones_like(xs)], -1) @ K_inv.T)
    # Normals from central differences: only where both neighbours are on the object.
    inner = cv2.erode(mask.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    if not inner.any():
        inner = mask
    dx = np.zeros_like(cloud)
    dy = np.zeros_like(cloud)
    dx[:, 1:-1] = cloud[:, 2:] - cloud[:, :-2]
    dy[1:-1] = cloud[2:] - cloud[:-2]
    normal = np.cross(dx, dy)
    normal /= np.maximum(np.linalg.norm(normal, axis=-1, keepdims=True), 1e-12)
    normal[(normal * cloud).sum(-1) > 0] *= -1
    iy, ix = np.nonzero(inner)
    pick = rng.permutation(len(iy))[:count]
    pick = np.resize(pick, count)  # a tiny silhouette repeats points
    return cloud[iy[pick], ix[pick]], normal[iy[pick], ix[pick]]


def build_viewpoint_model(obj: ObjectModel, cfg: ViewpointConfig) -> ViewpointModel:
    """Render `obj`'s silhouette from every view and lift its contour (module docstring)."""
    from pose6d_ros.data.render import Instance, Lighting, Renderer, simplify_mesh

    S = cfg.render_size
    radius = float(np.linalg.norm(np.asarray(obj.mesh.vertices), axis=1).max())
    depth = max(0.5, 4.0 * radius)
    f = 0.45 * S * (depth - radius) / radius
    K = np.array([[f, 0, (S - 1) / 2], [0, f, (S - 1) / 2], [0, 0, 1.0]])
    K_inv = np.linalg.inv(K)
    t = np.array([0.0, 0.0, depth])
    dirs = sphere_directions(cfg.view_spacing_deg)
    views = look_at_rotations(dirs)
    points = np.zeros((len(views), cfg.points, 3))
    normals = np.zeros((len(views), cfg.points, 3))
    surface = np.zeros((len(views), cfg.surface_points, 3))
    surface_normals = np.zeros((len(views), cfg.surface_points, 3))
    rng = np.random.default_rng(0)
    renderer = Renderer(S, S)
    try:
        renderer.add_mesh("obj", simplify_mesh(obj.mesh, cfg.max_faces))
        for v, R in enumerate(views):
            out = renderer.render(K, [Instance("obj", R, t)], Lighting(), amodal=False)
            mask = out.instance == 0
            xy, n2 = contour_samples(mask, cfg.points)
            px = xy.astype(np.int64)
            z = out.depth[px[:, 1], px[:, 0]].astype(np.float64)
            cam = z[:, None] * (np.concatenate([xy, np.ones((len(xy), 1))], 1) @ K_inv.T)
            points[v] = (cam - t) @ R  # R^T (cam - t), row-wise
            normals[v] = np.concatenate([n2, np.zeros((len(n2), 1))], 1) @ R
            cloud, cloud_n = surface_samples(out.depth.astype(np.float64), mask, K_inv,
                                             cfg.surface_points, rng)
            surface[v] = (cloud - t) @ R
            surface_normals[v] = cloud_n @ R
    finally:
        renderer.release()
    return ViewpointModel(name=obj.name, directions=torch.from_numpy(dirs).float(),
                          points=torch.from_numpy(points).float(),
                          normals=torch.from_numpy(normals).float(),
                          surface=torch.from_numpy(surface).float(),
                          surface_normals=torch.from_numpy(surface_normals).float())


def load_or_build_viewpoint_models(objects: Sequence[ObjectModel], cfg: ViewpointConfig, *,
                                   cache_dir: str | Path | None = None, rebuild: bool = False,
                                   log: Callable[[str], None] | None = None
                                   ) -> list[ViewpointModel]:
    """Every object's viewpoint model: from the cache when its key matches, else built."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    models = []
    for obj in objects:
        key = asset_key(obj, cfg.to_dict())
        path = cache / f"{obj.name}-views-{key[:16]}.pt"
        if path.is_file() and not rebuild:
            try:
                data = load_asset(path, KIND, key, "viewpoint model")
                models.append(ViewpointModel(**{k: data[k] for k in MODEL_FIELDS}))
                continue
            except WeightsError as exc:  # a damaged or stale cache file is rebuilt
                if log is not None:
                    log(f"viewpoint models: {exc}; building it again")
        start = time.perf_counter()
        try:
            model = build_viewpoint_model(obj, cfg)
        except ValueError as exc:
            raise WeightsError(f"{obj.mesh_path}: object {obj.name!r}: {exc}") from exc
        save_asset(path, KIND, key, model.to_dict())
        if log is not None:
            log(f"viewpoint models: {obj.name}: {len(model.directions)} views in "
                f"{time.perf_counter() - start:.1f} s -> {path}")
        models.append(model)
    return models
