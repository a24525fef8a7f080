"""Several views of a static scene, one pose per physical object (seed 003, CosyPose).

Input: N views, each with its intrinsics, its camera pose in a common frame and the
single-view estimator's poses. Output: one pose per object in that frame, with the views
that support it.
1. Association. Every estimate is a ray from its camera through its object's centre, with
   a distance along it (the weak part of an RGB pose). Estimates of one object from two
   views have rays that pass close to each other, near both distances. Greedily, from the
   best-scored estimate, each other view contributes its estimate of the same object whose
   ray passes closest, if within the tolerances. Two copies of one object stay apart: their
   rays do not meet.
2. Position: the point nearest to every member's ray (triangulation), which removes the
   single view's distance error; with depth (distances already measured), their mean.
3. Rotation, object-level RANSAC over views: each member's rotation in the common frame is a
   candidate; the one most others agree with (symmetry-aware angle) wins, and the members
   that agree are averaged. A view whose pose disagrees does not support the object.
4. Joint refinement: the contour terms of every view that saw the object (and the depth term
   where there is depth) summed into one Gauss-Newton step of the pose in the common frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from pose6d_ros.core.objects import ObjectRegistry
from pose6d_ros.core.symmetry import SymmetryPools
from pose6d_ros.pipeline import ObjectPose, instance_indices
from pose6d_ros.refine.region import RegionRefiner, limited_update, solve_damped


@dataclass(frozen=True)
class FusionConfig:
    """How views are associated, checked and refined together."""

    # A view's ray through an estimate's centre passes within this share of the object's
    # diameter of another view's: the same object.
    ray_tolerance: float = 0.35
    # ...and where the rays meet is within this share of each estimate's own distance.
    distance_tolerance: float = 0.35
    rotation_tolerance_deg: float = 25.0  # members agreeing on the rotation (RANSAC)
    min_ray_angle_deg: float = 5.0  # rays closer than this in direction do not triangulate
    refine: bool = True  # joint contour refinement over all views
    min_views: int = 1  # objects supported by fewer views are dropped


@dataclass
class View:
    """One image of the scene and what the single-view estimator found in it."""

    image: np.ndarray  # (H, W, 3) uint8 RGB
    K: np.ndarray  # (3, 3)
    T_world_cam: np.ndarray  # (4, 4) the camera's pose in the common frame
    poses: list[ObjectPose]  # camera frame
    depth: np.ndarray | None = None  # (H, W) float32 metres, registered; None: RGB only


@dataclass
class FusedObject:
    """One physical object in the common frame."""

    name: str
    label: int
    object_id: int
    instance: int  # among the fused objects of the same label, by score
    score: float  # in [0, 1]
    R: np.ndarray  # (3, 3) float64, T_world_obj
    t: np.ndarray  # (3,) float64 metres
    views: list[int]  # views whose estimate agrees (position and rotation)
    seen_in: list[int]  # views with an estimate associated with it (a superset)
    boxes: dict[int, tuple[float, float, float, float]] = field(default_factory=dict)


class MultiViewFuser:
    """Fuses single-view estimates of the objects of one registry (see module doc)."""

    def __init__(self, objects: ObjectRegistry, config: FusionConfig | None = None, *,
                 refiner: RegionRefiner | None = None) -> None:
        self.objects = objects
        self.config = config or FusionConfig()
        self.refiner = refiner
        self.pools = SymmetryPools(objects)
        centre, _ = objects.coordinate_normalisation()
        self.centres = centre  # (O, 3) model-frame bounding-box middles
        self.diameters = np.array([o.diameter for o in objects])

    def __call__(self, views: Sequence[View]) -> list[FusedObject]:
        """One pose per object seen in `views`, best score first."""
        cfg = self.config
        est = _Estimates.gather(views, self.centres)
        if est.count == 0:
            return []
        clusters = self._associate(est)
        fused = [self._fuse(est, members) for members in clusters]
        fused = [f for f in fused if len(f.views) >= cfg.min_views]
        if cfg.refine and self.refiner is not None and fused:
            self._refine(views, fused)
        fused.sort(key=lambda f: -f.score)
        ranks = instance_indices(np.array([f.label for f in fused]),
                                 np.array([f.score for f in fused]))
        for f, r in zip(fused, ranks, strict=True):
            f.instance = int(r)
        return fused

    def _associate(self, est: _Estimates) -> list[list[int]]:
        """Groups of estimate indices, one object each, at most one estimate per view."""
        cfg = self.config
        diam = self.diameters[est.labels]
        # Closest approach of every pair of rays: o_i + s u_i and o_j + r u_j.
        o, u, d = est.origins, est.rays, est.distances
        w0 = o[:, None] - o[None]  # (E, E, 3)
        b = (u[:, None] * u[None]).sum(-1)
        dd = (u[:, None] * w0).sum(-1)
        e = (u[None] * w0).sum(-1)
        denom = np.maximum(1 - b**2, 1e-12)
        s = (b * e - dd) / denom
        r = (e - b * dd) / denom
        gap = np.linalg.norm(w0 + s[..., None] * u[:, None] - r[..., None] * u[None], axis=-1)
        parallel = b > np.cos(np.deg2rad(cfg.min_ray_angle_deg))
        near = np.linalg.norm(est.centres[:, None] - est.centres[None], axis=-1)
        tol = cfg.ray_tolerance * np.maximum(diam[:, None], diam[None])
        dist_ok = ((np.abs(s - d[:, None]) <= cfg.distance_tolerance * d[:, None])
                   & (np.abs(r - d[None]) <= cfg.distance_tolerance * d[None]))
        meet = np.where(parallel, near <= tol + cfg.distance_tolerance
                        * np.minimum(d[:, None], d[None]), (gap <= tol) & dist_ok)
        cost = np.where(parallel, near, gap)
        same = (est.labels[:, None] == est.labels[None]) & (est.views[:, None] != est.views[None])
        meet &= same
        free = np.ones(est.count, bool)
        clusters = []
        for seed in np.argsort(-est.scores, kind="stable"):
            if not free[seed]:
                continue
            members = [int(seed)]
            free[seed] = False
            for v in np.unique(est.views):
                if v == est.views[seed]:
                    continue
                cand = np.flatnonzero(free & meet[seed] & (est.views == v))
                if len(cand):
                    best = int(cand[np.argmin(cost[seed, cand])])
                    members.append(best)
                    free[best] = False
            clusters.append(members)
        return clusters

    def _fuse(self, est: _Estimates, members: list[int]) -> FusedObject:
        """The common-frame pose of one group of estimates (module doc, steps 2 and 3)."""
        cfg = self.config
        idx = np.array(members)
        label = int(est.labels[idx[0]])
        obj = self.objects[label]
        R_w = torch.from_numpy(est.R_world[idx])
        ref = R_w[:, None].expand(-1, len(idx), -1, -1).reshape(-1, 3, 3)
        cand = R_w[None].expand(len(idx), -1, -1, -1).reshape(-1, 3, 3)
        labels = torch.full((len(ref),), label)
        # Each member turned to its symmetric twin nearest each candidate, then the angle.
        aligned, _ = self.pools.canonicalise(labels, cand, torch.zeros(len(ref), 3), ref)
        cos = ((torch.diagonal(ref.transpose(1, 2) @ aligned, dim1=1, dim2=2).sum(-1) - 1) / 2)
        angle = np.rad2deg(np.arccos(cos.clamp(-1, 1).numpy())).reshape(len(idx), len(idx))
        agree = angle <= cfg.rotation_tolerance_deg
        weight = est.scores[idx]
        best = int(np.argmax((agree * weight[None]).sum(1)))
        inliers = agree[best]
        stack = aligned.numpy().reshape(len(idx), len(idx), 3, 3)[best][inliers]
        R = _mean_rotation(stack, weight[inliers])
        centre = self._position(est, idx)
        t = centre - R @ self.centres[label]
        views = sorted(int(est.views[i]) for i in idx[inliers])
        return FusedObject(
            name=obj.name, label=label, object_id=obj.id, instance=0,
            score=float(np.mean(est.scores[idx[inliers]])), R=R, t=t, views=views,
            seen_in=sorted(int(v) for v in est.views[idx]),
            boxes={int(est.views[i]): est.boxes[i] for i in idx})

    def _position(self, est: _Estimates, idx: np.ndarray) -> np.ndarray:
        """The object centre `(3,)`: nearest to the members' rays, or their mean when the
        rays are nearly parallel or every member view measured depth."""
        o, u = est.origins[idx], est.rays[idx]
        spread = (u @ u.T).min() < np.cos(np.deg2rad(self.config.min_ray_angle_deg))
        if len(idx) < 2 or not spread or est.has_depth[idx].all():
            return est.centres[idx].mean(0)
        proj = np.eye(3)[None] - u[:, :, None] * u[:, None, :]  # (M, 3, 3)
        return np.linalg.solve(proj.sum(0), (proj @ o[:, :, None]).sum(0))[:, 0]

    def _refine(self, views: Sequence[View], fused: list[FusedObject]) -> None:
        """Joint contour refinement of every fused pose over the views that saw it."""
        refiner = self.refiner
        rcfg = refiner.config
        dev = refiner.device
        R = torch.from_numpy(np.stack([f.R for f in fused])).double().to(dev)
        t = torch.from_numpy(np.stack([f.t for f in fused])).double().to(dev)
        t_start = t.clone()
        labels = torch.tensor([f.label for f in fused], device=dev)
        images = [torch.from_numpy(np.ascontiguousarray(v.image)).to(dev).permute(2, 0, 1)
                  .float().div_(255.0) for v in views]
        Ks = [torch.from_numpy(np.asarray(v.K, np.float64)).to(dev) for v in views]
        T_cw = [torch.from_numpy(np.linalg.inv(v.T_world_cam)).double().to(dev) for v in views]
        rows = [torch.tensor([i for i, f in enumerate(fused) if v in f.seen_in], dtype=torch.long,
                             device=dev) for v in range(len(views))]
        reach = torch.stack([torch.linalg.norm(t - torch.from_numpy(v.T_world_cam[:3, 3])
                                               .to(dev), dim=1) for v in views]).min(0).values
        for scale, iters in zip(rcfg.scales, rcfg.iterations, strict=True):
            for _ in range(iters):
                A = torch.zeros(len(fused), 6, 6, dtype=torch.float64, device=dev)
                b = torch.zeros(len(fused), 6, dtype=torch.float64, device=dev)
                seen = torch.zeros(len(fused), dtype=torch.bool, device=dev)
                for v, sel in enumerate(rows):  # a handful of views; objects batched
                    if len(sel) == 0:
                        continue
                    Rc, tc = _to_camera(T_cw[v], R[sel], t[sel])
                    _, tc0 = _to_camera(T_cw[v], R[sel], t_start[sel])
                    Av, bv, ok = refiner.contour_system(images[v], Ks[v], labels[sel], Rc, tc,
                                                        scale, tc0)
                    # Camera-frame (turn, shift) = B^T (world-frame one), B = diag(R_wc, R_wc).
                    B = torch.block_diag(T_cw[v][:3, :3].T, T_cw[v][:3, :3].T)
                    okf = ok[:, None, None].double()
                    A.index_add_(0, sel, okf * (B @ Av @ B.T))
                    b.index_add_(0, sel, ok[:, None].double() * (bv @ B.T))
                    seen[sel] |= ok
                A += torch.eye(6, dtype=A.dtype, device=dev) * 1e-9
                delta = solve_damped(A, b, seen)
                R, t = limited_update(R, t, delta, rcfg.max_step_deg,
                                      rcfg.max_step_distance * reach[:, None])
        agreement = torch.zeros(len(fused), dtype=torch.float64, device=dev)
        count = torch.zeros(len(fused), dtype=torch.float64, device=dev)
        for v, sel in enumerate(rows):
            if len(sel):
                Rc, tc = _to_camera(T_cw[v], R[sel], t[sel])
                agreement.index_add_(0, sel, refiner.agreement(images[v], Ks[v], labels[sel],
                                                               Rc, tc))
                count.index_add_(0, sel, torch.ones(len(sel), dtype=torch.float64, device=dev))
        R_c, t_c = self.pools.canonicalise(labels.cpu(), R.cpu(), t.cpu())
        agree = (agreement / count.clamp_min(1)).cpu().numpy()
        for i, f in enumerate(fused):
            f.R, f.t = R_c[i].numpy(), t_c[i].numpy()
            f.score = float(f.score * agree[i])


def poses_in_view(fused: Sequence[FusedObject], view: View, view_index: int,
                  objects: ObjectRegistry) -> list[ObjectPose]:
    """The fused objects in `view`'s camera frame, as the single-view estimator's poses: the
    box is the view's own estimate's where it had one, else the projected model's; objects
    behind the camera or outside the image are left out."""
    T_cw = np.linalg.inv(view.T_world_cam)
    h, w = view.image.shape[:2]
    out = []
    for f in fused:
        R = T_cw[:3, :3] @ f.R
        t = T_cw[:3, :3] @ f.t + T_cw[:3, 3]
        box = f.boxes.get(view_index)
        if box is None:
            corners = _box_corners(objects[f.label].bounds) @ R.T + t
            if (corners[:, 2] <= 0).any():
                continue
            uv = corners @ np.asarray(view.K).T
            uv = uv[:, :2] / uv[:, 2:]
            x0, y0 = np.clip(uv.min(0), 0, [w, h])
            x1, y1 = np.clip(uv.max(0), 0, [w, h])
            if x1 - x0 < 1 or y1 - y0 < 1:
                continue
            box = (float(x0), float(y0), float(x1 - x0), float(y1 - y0))
        out.append(ObjectPose(name=f.name, label=f.label, object_id=f.object_id,
                              instance=f.instance, score=f.score, R=R, t=t, inliers=0, box=box))
    return out


def _box_corners(bounds: np.ndarray) -> np.ndarray:
    """The 8 corners `(8, 3)` of an axis-aligned box `bounds (2, 3)`."""
    idx = np.array([[i >> 2 & 1, i >> 1 & 1, i & 1] for i in range(8)])
    return np.where(idx == 1, bounds[1], bounds[0])


def _to_camera(T_cw: Tensor, R: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """World poses `R (N, 3, 3)`, `t (N, 3)` in the camera frame of `T_cw (4, 4)`."""
    return T_cw[:3, :3] @ R, t @ T_cw[:3, :3].T + T_cw[:3, 3]


def _mean_rotation(R: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The chordal mean `(3, 3)` of rotations `R (M, 3, 3)` with `weights (M,)`."""
    M = (R * weights[:, None, None]).sum(0)
    U, _, Vt = np.linalg.svd(M)
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    return U @ D @ Vt


@dataclass
class _Estimates:
    """Every view's estimates as flat arrays (E rows), in the common frame."""

    views: np.ndarray  # (E,) view index
    labels: np.ndarray  # (E,)
    scores: np.ndarray  # (E,)
    R_world: np.ndarray  # (E, 3, 3)
    centres: np.ndarray  # (E, 3) object centres, world
    origins: np.ndarray  # (E, 3) camera centres, world
    rays: np.ndarray  # (E, 3) unit, camera -> object centre
    distances: np.ndarray  # (E,)
    has_depth: np.ndarray  # (E,) bool: the view had depth
    boxes: list[tuple[float, float, float, float]]

    @property
    def count(self) -> int:
        return len(self.views)

    @classmethod
    def gather(cls, views: Sequence[View], model_centres: np.ndarray) -> _Estimates:
        rows = [(v, p) for v, view in enumerate(views) for p in view.poses]
        if not rows:
            z3 = np.zeros((0, 3))
            return cls(np.zeros(0, int), np.zeros(0, int), np.zeros(0), np.zeros((0, 3, 3)),
                       z3, z3, z3, np.zeros(0), np.zeros(0, bool), [])
        T = np.stack([views[v].T_world_cam for v, _ in rows])  # (E, 4, 4)
        R_c = np.stack([p.R for _, p in rows])
        t_c = np.stack([p.t for _, p in rows])
        labels = np.array([p.label for _, p in rows])
        R_w = T[:, :3, :3] @ R_c
        centre_c = (R_c @ model_centres[labels][:, :, None])[..., 0] + t_c
        centres = (T[:, :3, :3] @ centre_c[:, :, None])[..., 0] + T[:, :3, 3]
        origins = T[:, :3, 3]
        ray = centres - origins
        dist = np.linalg.norm(ray, axis=1)
        return cls(views=np.array([v for v, _ in rows]), labels=labels,
                   scores=np.array([p.score for _, p in rows]), R_world=R_w, centres=centres,
                   origins=origins, rays=ray / np.maximum(dist[:, None], 1e-12),
                   distances=dist,
                   has_depth=np.array([views[v].depth is not None for v, _ in rows]),
                   boxes=[p.box for _, p in rows])
