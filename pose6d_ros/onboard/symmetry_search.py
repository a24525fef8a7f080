"""Finding a mesh's symmetries, in the BOP vocabulary, from its shape alone.

Candidates are turns by 2 pi / n about the principal axes through the surface centroid
(and about axes swept through a plane or the sphere when principal axes are degenerate).
Each candidate is polished by a few ICP steps and kept when the turned surface lies on the
original: the 90th percentile of surface distances under `tolerance` of the diameter. A
continuous symmetry is an axis about which several unrelated angles all pass. Found turns
are closed into a group, because the pools expect every non-identity member listed.
Texture is not looked at: a printed label that breaks a symmetry must be entered by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import trimesh
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from pose6d_ros.core.pose import rigid_fit

_ORDERS = tuple(range(2, 9))
_CONTINUOUS_ANGLES_DEG = (11.0, 37.0, 71.0, 113.0, 157.0)
_SAME_AXIS_COS = np.cos(np.deg2rad(5.0))
_MAX_GROUP = 48
_SAME_MOTION = 0.08  # of the diameter


@dataclass
class SymmetryConfig:
    """How symmetries are searched; lengths as fractions of the diameter."""

    tolerance: float = 0.02  # 90th-percentile surface distance a symmetry may leave
    samples: int = 1500  # surface points moved per test
    reference_samples: int = 20000  # surface points they are compared with
    icp_steps: int = 8
    max_drift_deg: float = 12.0  # ICP may not pull a candidate further than this
    degenerate_ratio: float = 0.06  # principal variances this close count as equal
    seed: int = 0


@dataclass
class FoundSymmetries:
    """Symmetries in the mesh frame; translations in the mesh's own units."""

    discrete: list[np.ndarray] = field(default_factory=list)  # each (4, 4)
    continuous: list[dict[str, list[float]]] = field(default_factory=list)  # axis, offset
    residuals: list[float] = field(default_factory=list)  # per discrete one, of diameter
    notes: list[str] = field(default_factory=list)

    def scaled(self, factor: float) -> FoundSymmetries:
        """The same symmetries with lengths multiplied by `factor` (e.g. mesh units to m)."""
        discrete = []
        for T in self.discrete:
            T = T.copy()
            T[:3, 3] *= factor
            discrete.append(T)
        continuous = [{"axis": list(c["axis"]), "offset": [v * factor for v in c["offset"]]}
                      for c in self.continuous]
        return FoundSymmetries(discrete, continuous, list(self.residuals), list(self.notes))

    def to_yaml_fields(self, decimals: int = 6) -> dict[str, list]:
        """`symmetries_discrete` / `symmetries_continuous` entries for the objects YAML."""
        out: dict[str, list] = {}
        if self.discrete:
            out["symmetries_discrete"] = [
                [round(float(v), decimals) + 0.0 for v in T.reshape(-1)] for T in self.discrete]
        if self.continuous:
            out["symmetries_continuous"] = [
                {k: [round(float(v), decimals) + 0.0 for v in vals] for k, vals in c.items()}
                for c in self.continuous]
        return out

    def describe(self) -> list[str]:
        """One line per symmetry: its axis and angle."""
        lines = []
        for c in self.continuous:
            lines.append(f"continuous about axis {_fmt(c['axis'])} through {_fmt(c['offset'])}")
        for T, r in zip(self.discrete, self.residuals, strict=True):
            rv = Rotation.from_matrix(T[:3, :3]).as_rotvec()
            angle = np.linalg.norm(rv)
            lines.append(f"turn {np.rad2deg(angle):.0f} deg about axis {_fmt(rv / angle)} "
                         f"(surface distance {100 * r:.2f} % of the diameter)")
        return lines or ["none"]


def _fmt(v) -> str:
    return "[" + ", ".join(f"{float(x):+.3f}" for x in v) + "]"


class _Surface:
    """Surface samples of a mesh with a nearest-neighbour distance for moved points."""

    def __init__(self, mesh: trimesh.Trimesh, cfg: SymmetryConfig) -> None:
        rng = np.random.default_rng(cfg.seed)
        ref, ref_faces = trimesh.sample.sample_surface(mesh, cfg.reference_samples, seed=rng)
        pts, _ = trimesh.sample.sample_surface(mesh, cfg.samples, seed=rng)
        self.ref = np.asarray(ref)
        self.normals = np.asarray(mesh.face_normals)[ref_faces]
        self.points = np.asarray(pts)
        self.tree = cKDTree(self.ref)
        self.centroid = self.ref.mean(0)
        spacing = np.sqrt(mesh.area / cfg.reference_samples)
        self.snap = 3.0 * spacing

    def distances(self, R: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Distances `(N,)` of the moved samples to the surface and their neighbours' index."""
        moved = self.points @ R.T + t
        dist, idx = self.tree.query(moved)
        plane = np.abs(((moved - self.ref[idx]) * self.normals[idx]).sum(-1))
        # Point-to-plane where the neighbour is close (sampling gaps do not count),
        # point-to-point further away.
        return np.where(dist < self.snap, plane, dist), idx

    def residual(self, R: np.ndarray, t: np.ndarray) -> float:
        return float(np.percentile(self.distances(R, t)[0], 90))

    def icp(self, R: np.ndarray, t: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
        """Point-to-point ICP from `(R, t)`, trimmed to the better 80 % of pairs."""
        for _ in range(steps):
            moved = self.points @ R.T + t
            dist, idx = self.tree.query(moved)
            keep = dist <= np.percentile(dist, 80)
            step = rigid_fit(moved[keep], self.ref[idx[keep]])
            R, t = step[:3, :3] @ R, step[:3, :3] @ t + step[:3, 3]
        return R, t


def _turn(axis: np.ndarray, angle: float, point: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    R = Rotation.from_rotvec(axis * angle).as_matrix()
    return R, point - R @ point


def axis_point(R: np.ndarray, t: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """The point on a turn's axis closest to the origin: solves (I - R) p = t off the axis."""
    A = np.vstack([np.eye(3) - R, axis[None, :]])
    return np.linalg.lstsq(A, np.concatenate([t, [0.0]]), rcond=None)[0]


def _exact(R: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, int] | None:
    """`(R, t, n)` snapped to a turn by 2 pi k / n about a fixed axis, or None."""
    rv = Rotation.from_matrix(R).as_rotvec()
    angle = float(np.linalg.norm(rv))
    if angle < np.deg2rad(10):
        return None
    axis = rv / angle
    for n in _ORDERS:
        k = round(angle * n / (2 * np.pi))
        snapped = 2 * np.pi * k / n
        if k > 0 and abs(snapped - angle) < np.deg2rad(4):
            R2 = Rotation.from_rotvec(axis * snapped).as_matrix()
            p = axis_point(R, t, axis)
            return R2, p - R2 @ p, n
    return None


def _candidate_axes(surface: _Surface, cfg: SymmetryConfig
                    ) -> list[tuple[np.ndarray, tuple[int, ...]]]:
    """Candidate axes with the turn orders to try about each: the principal axes first."""
    cov = np.cov((surface.ref - surface.centroid).T)
    var, vec = np.linalg.eigh(cov)
    order = np.argsort(var)[::-1]
    var, vec = var[order], vec[:, order]
    axes = [(vec[:, i], _ORDERS) for i in range(3)]
    close = [abs(var[i] - var[j]) / var[i] < cfg.degenerate_ratio for i, j in ((0, 1), (1, 2))]
    if all(close):  # no preferred direction (a cube?): sweep the sphere
        golden = np.pi * (3 - np.sqrt(5))
        k = np.arange(60)
        z = 1 - (k + 0.5) / 60  # upper hemisphere: an axis and its negative are one
        r = np.sqrt(1 - z * z)
        sweep = np.stack([r * np.cos(golden * k), r * np.sin(golden * k), z], 1) @ vec.T
        axes += [(a, (2, 3, 4)) for a in sweep]
    else:  # a plane without a preferred direction: sweep it for flips
        for (i, j), equal in zip(((0, 1), (1, 2)), close, strict=True):
            if equal:
                axes += [(np.cos(a) * vec[:, i] + np.sin(a) * vec[:, j], (2,))
                         for a in np.deg2rad(np.arange(7.5, 180, 7.5))]
    return axes


def _continuous_axis(surface: _Surface, axis: np.ndarray, tol: float, cfg: SymmetryConfig
                     ) -> tuple[np.ndarray, np.ndarray] | None:
    """`(axis, point)` when every test angle about `axis` (polished once) passes."""
    R, t = _turn(axis, np.deg2rad(_CONTINUOUS_ANGLES_DEG[1]), surface.centroid)
    R, t = surface.icp(R, t, cfg.icp_steps)
    rv = Rotation.from_matrix(R).as_rotvec()
    angle = np.linalg.norm(rv)
    if angle < np.deg2rad(5) or abs(rv / angle @ axis) < _SAME_AXIS_COS:
        return None
    refined = rv / angle * np.sign(rv @ axis)
    point = axis_point(R, t, refined)
    for deg in _CONTINUOUS_ANGLES_DEG:
        if surface.residual(*_turn(refined, np.deg2rad(deg), point)) > tol:
            return None
    return refined, point


def _rotation_gap(Ra: np.ndarray, Rb: np.ndarray) -> float:
    """Angle between two rotations, degrees."""
    return float(np.rad2deg(Rotation.from_matrix(Ra.T @ Rb).magnitude()))


def _close_group(group: list[tuple[np.ndarray, np.ndarray]], member: tuple[np.ndarray, np.ndarray],
                 centroid: np.ndarray, diameter: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """`group` (identity first) with `member` and every product added, each snapped to an
    exact turn. Two transforms are one when no surface point is moved more than a few
    per cent of the diameter apart by them."""
    group = list(group)

    def known(R, t):
        return any(np.linalg.norm((R - G) @ centroid + t - g)
                   + np.deg2rad(_rotation_gap(R, G)) * diameter / 2 < _SAME_MOTION * diameter
                   for G, g in group)

    frontier = [member] if not known(*member) else []
    group += frontier
    while frontier and len(group) < _MAX_GROUP:
        new = []
        for Ra, ta in list(group):
            for Rb, tb in frontier:
                for R, t in ((Ra @ Rb, Ra @ tb + ta), (Rb @ Ra, Rb @ ta + tb)):
                    exact = _exact(R, t)
                    if exact is None:
                        continue  # the identity, up to the snapping's rounding
                    if not known(*exact[:2]):
                        group.append(exact[:2])
                        new.append(exact[:2])
        frontier = new
    return group


def find_symmetries(mesh: trimesh.Trimesh, diameter: float,
                    cfg: SymmetryConfig | None = None) -> FoundSymmetries:
    """Discrete and continuous symmetries of `mesh` (its own units, `diameter` in them)."""
    cfg = cfg or SymmetryConfig()
    surface = _Surface(mesh, cfg)
    tol = cfg.tolerance * diameter
    found = FoundSymmetries()
    axes = _candidate_axes(surface, cfg)

    cont_axis: np.ndarray | None = None
    cont_point = surface.centroid
    for axis, _ in axes[:3]:
        hit = _continuous_axis(surface, axis, tol, cfg)
        if hit is None:
            continue
        if cont_axis is not None:
            found.notes.append("more than one continuous axis (a sphere?): only one is kept, "
                               "and pools support one")
            break
        cont_axis, cont_point = hit
        found.continuous.append({"axis": list(cont_axis), "offset": list(cont_point)})

    passing: list[tuple[float, np.ndarray, np.ndarray]] = []
    for axis, orders in axes:
        if cont_axis is not None and abs(axis @ cont_axis) > _SAME_AXIS_COS:
            continue
        for n in orders:
            if cont_axis is not None and n > 2:
                continue  # off a continuous axis only flips can map the surface onto itself
            R0, t0 = _turn(axis, 2 * np.pi / n, surface.centroid)
            R, t = surface.icp(R0, t0, cfg.icp_steps)
            drift = np.rad2deg(Rotation.from_matrix(R0.T @ R).magnitude())
            if drift > cfg.max_drift_deg or surface.residual(R, t) > surface.residual(R0, t0):
                R, t = R0, t0  # ICP minimises point distances, not the test's percentile
            exact = _exact(R, t)
            if exact is not None:
                residual = surface.residual(*exact[:2])
                if residual <= tol:
                    passing.append((residual, *exact[:2]))
    # The best-fitting turns first: a sweep also passes axes a few degrees off a true one,
    # and those must fold into the true one, not seed the group.
    group: list[tuple[np.ndarray, np.ndarray]] = [(np.eye(3), np.zeros(3))]
    for _, R, t in sorted(passing, key=lambda p: p[0]):
        group = _close_group(group, (R, t), surface.centroid, diameter)
    group = group[1:]
    if cont_axis is not None:
        group = _modulo_axis(group, cont_axis)
    for R, t in group:
        if surface.residual(R, t) > tol:
            rotvec = _fmt(Rotation.from_matrix(R).as_rotvec())
            found.notes.append(f"the product of found turns {rotvec} fails the surface "
                               "test and is left out; the group may be incomplete")
            continue
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = R, t
        found.discrete.append(T)
        found.residuals.append(surface.residual(R, t) / diameter)
    return found


def _modulo_axis(group: list[tuple[np.ndarray, np.ndarray]], axis: np.ndarray
                 ) -> list[tuple[np.ndarray, np.ndarray]]:
    """One representative per class modulo turns about `axis`; turns about it are dropped."""
    kept: list[tuple[np.ndarray, np.ndarray]] = []
    for R, t in group:
        if abs((R @ axis) @ axis - 1) < 1e-3:
            continue  # a turn about the continuous axis itself
        if any(abs((Rk.T @ R @ axis) @ axis - 1) < 1e-3 for Rk, _ in kept):
            continue
        kept.append((R, t))
    return kept
