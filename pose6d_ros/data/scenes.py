"""Random tabletop scenes: object layouts, camera views, lights and materials.

A scene is one layout of objects (several instances of one object allowed) and
distractors on a table (world frame: z up, the table at z = 0), seen from several cameras
on a view sphere around the table. Objects rest upright (object z up) or lie in random
orientations. All sampling takes a `numpy.random.Generator`, so a seed fixes the scene.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import trimesh
import yaml

from pose6d_ros.core.objects import ObjectModel
from pose6d_ros.data.render import Instance, Lighting, Material, Renderer, simplify_mesh

# LM-O's Kinect intrinsics, the default camera.
LMO_K = ((572.4114, 0.0, 325.2611), (0.0, 573.57043, 242.04899), (0.0, 0.0, 1.0))


class SynthConfigError(ValueError):
    """A synthesis config that cannot be used, naming the file and the field."""


@dataclass
class SynthConfig:
    """Everything that shapes the generated images; YAML keys have the same names."""

    width: int = 640
    height: int = 480
    K: tuple = LMO_K  # 3x3 intrinsics at (width, height)
    focal_jitter: float = 0.05  # relative, per image
    images_per_scene: int = 20
    objects_per_scene: tuple = (3, 8)  # labelled instances, inclusive range
    max_copies: int = 2  # instances of one object per scene
    distractors_per_scene: tuple = (0, 4)
    distance: tuple = (0.35, 1.5)  # metres from the camera to the table point it looks at
    elevation_deg: tuple = (-14.0, 89.0)  # above the table plane
    roll_deg: float = 60.0  # in-plane camera rotation, +- this
    table_radius: float = 0.22  # metres; objects are placed within it
    upright_prob: float = 0.5  # an object stands upright, else a random orientation
    max_faces: int = 4000  # mesh decimation for rendering speed, 0 = full meshes
    ambient: tuple = (0.1, 0.5)
    lights: tuple = (1, 3)
    light_intensity: tuple = (0.3, 1.0)
    light_tint: float = 0.15  # relative spread of light colour per channel
    object_gain: tuple = (0.75, 1.25)  # brightness of the mesh colours
    object_tint: float = 0.08  # relative per-channel colour jitter
    specular: tuple = (0.0, 0.4)
    photo_background_prob: float = 0.7  # when a backgrounds folder is given
    color_jitter: float = 0.2
    blur_sigma: float = 1.2
    noise_std: float = 6.0
    jpeg_quality: tuple = (50, 95)
    # Depth as an RGB-D camera reads it (pose6d_ros/data/depth_sensor.py); false: the
    # renderer's exact object depth, 0 elsewhere.
    depth_sensor: bool = True
    depth_table_extent: float = 1.0  # metres around the world origin that read as table
    depth_noise: tuple = (0.0012, 0.0019)  # (a, b): sigma(z) = a + b (z - 0.4)^2 metres
    depth_edge_jump: float = 0.02  # metres across a 3x3 neighbourhood that make an edge
    depth_edge_dropout: float = 0.6  # probability an edge pixel has no reading
    depth_grey_range: tuple = (25, 245)  # grey levels (0-255) a reading needs ...
    depth_grey_dropout: float = 0.8  # ... else dropped with this probability
    depth_dropout: float = 0.005  # probability any pixel has no reading
    depth_quantisation: float = 0.0025  # q: disparity steps of q z^2 metres at depth z
    depth_range: tuple = (0.2, 8.0)  # metres a reading can have; nearer or further read 0

    @classmethod
    def from_yaml(cls, path: str | Path) -> SynthConfig:
        """Defaults overridden by the keys of a YAML file; unknown keys are errors."""
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise SynthConfigError(f"{path}: cannot read: {exc}") from exc
        if not isinstance(data, dict):
            raise SynthConfigError(f"{path}: expected a mapping of settings")
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> SynthConfig:
        """Defaults overridden by `data`, checked."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise SynthConfigError(f"{source}: unknown field(s) {unknown}; known: "
                                   f"{sorted(known)}")
        cfg = cls(**{k: _freeze(v) for k, v in data.items()})
        cfg.check(source)
        return cfg

    def check(self, source: str = "config") -> None:
        """Raise SynthConfigError naming the first field that makes no sense."""
        def fail(name: str, why: str) -> SynthConfigError:
            return SynthConfigError(f"{source}: {name}: {why} (got {getattr(self, name)!r})")

        if self.width < 16 or self.height < 16:
            raise fail("width", "image sides must be >= 16 pixels")
        K = np.asarray(self.K, float)
        if K.shape != (3, 3) or not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
            raise fail("K", "expected a 3x3 pinhole matrix with positive focal lengths")
        for name in ("objects_per_scene", "distractors_per_scene", "distance", "elevation_deg",
                     "ambient", "lights", "light_intensity", "object_gain", "specular",
                     "jpeg_quality"):
            lo, hi = _pair(getattr(self, name), lambda why, n=name: fail(n, why))
            if lo > hi or lo < (-90 if name == "elevation_deg" else 0):
                raise fail(name, "expected [low, high] with 0 <= low <= high")
        if self.distance[0] <= 0:
            raise fail("distance", "must be positive")
        if self.elevation_deg[1] > 90:
            raise fail("elevation_deg", "must lie within [-90, 90]")
        if not 1 <= self.lights[1] <= 4:
            raise fail("lights", "between 1 and 4 lights")
        if self.images_per_scene < 1 or self.max_copies < 1:
            raise fail("images_per_scene" if self.images_per_scene < 1 else "max_copies",
                       "must be >= 1")
        if not 1 <= self.jpeg_quality[0] <= self.jpeg_quality[1] <= 100:
            raise fail("jpeg_quality", "within 1..100")
        self._check_depth(fail)

    def _check_depth(self, fail: Callable[[str, str], SynthConfigError]) -> None:
        """The `depth_*` fields; `fail(name, why)` builds the error."""
        if not isinstance(self.depth_sensor, bool):
            raise fail("depth_sensor", "expected true or false")
        a, b = _pair(self.depth_noise, lambda why: fail("depth_noise", "expected [a, b]"))
        if not (a >= 0 and b >= 0):
            raise fail("depth_noise", "expected [a, b] with a, b >= 0 metres")
        lo, hi = _pair(self.depth_grey_range, lambda why: fail("depth_grey_range", why))
        if not 0 <= lo <= hi <= 255:  # False for NaN
            raise fail("depth_grey_range", "expected [low, high] with 0 <= low <= high <= 255")
        for name in ("depth_table_extent", "depth_quantisation"):
            value = getattr(self, name)
            if not (_is_number(value) and value >= 0):
                raise fail(name, "expected a number >= 0")
        if not (_is_number(self.depth_edge_jump) and self.depth_edge_jump > 0):
            raise fail("depth_edge_jump", "expected a positive number of metres")
        near, far = _pair(self.depth_range, lambda why: fail("depth_range", why))
        if not 0 <= near < far:  # False for NaN
            raise fail("depth_range", "expected [near, far] metres with 0 <= near < far")
        for name in ("depth_edge_dropout", "depth_grey_dropout", "depth_dropout"):
            value = getattr(self, name)
            if not (_is_number(value) and 0 <= value <= 1):
                raise fail(name, "expected a probability within [0, 1]")

    def to_dict(self) -> dict[str, Any]:
        """Plain lists and numbers, for YAML/JSON."""
        return {k: _thaw(v) for k, v in asdict(self).items()}


def _freeze(value: Any) -> Any:
    return tuple(_freeze(v) for v in value) if isinstance(value, list | tuple) else value


def _thaw(value: Any) -> Any:
    return [_thaw(v) for v in value] if isinstance(value, list | tuple) else value


def _pair(value: Any, fail) -> tuple[float, float]:
    if not isinstance(value, tuple) or len(value) != 2 or not all(map(_is_number, value)):
        raise fail("expected [low, high]")
    return float(value[0]), float(value[1])


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@dataclass
class Placement:
    """A mesh on the table: `label` is the object index, -1 for a distractor."""

    mesh: str
    label: int
    T_world_obj: np.ndarray  # (4, 4)


@dataclass
class View:
    """One image of a scene: camera pose and intrinsics, lights, per-placement materials."""

    T_cam_world: np.ndarray  # (4, 4)
    K: np.ndarray  # (3, 3)
    lighting: Lighting
    materials: list[Material] = field(default_factory=list)

    def instances(self, layout: list[Placement]) -> list[Instance]:
        """Renderer instances of `layout` in this camera's frame."""
        out = []
        for p, m in zip(layout, self.materials, strict=True):
            T = self.T_cam_world @ p.T_world_obj
            out.append(Instance(p.mesh, T[:3, :3], T[:3, 3], m))
        return out


def object_key(label: int) -> str:
    """Renderer mesh key of the object with class index `label`."""
    return f"obj_{label}"


def add_object_meshes(renderer: Renderer, objects: Sequence[ObjectModel],
                      max_faces: int) -> None:
    """Upload every object's mesh, decimated to `max_faces`, under `object_key`."""
    for i, obj in enumerate(objects):
        renderer.add_mesh(object_key(i), simplify_mesh(obj.mesh, max_faces))


def distractor_meshes(rng: np.random.Generator, count: int = 12) -> dict[str, trimesh.Trimesh]:
    """Primitive shapes (boxes, cylinders, spheres, capsules, cones) 3-15 cm, grey."""
    out = {}
    for i in range(count):
        kind = i % 5
        s = rng.uniform(0.015, 0.075, 3)
        if kind == 0:
            mesh = trimesh.creation.box(extents=2 * s)
        elif kind == 1:
            mesh = trimesh.creation.cylinder(radius=s[0], height=2 * s[1], sections=24)
        elif kind == 2:
            mesh = trimesh.creation.icosphere(subdivisions=2, radius=s[0])
        elif kind == 3:
            mesh = trimesh.creation.capsule(height=2 * s[1], radius=s[0], count=[12, 12])
        else:
            mesh = trimesh.creation.cone(radius=s[0], height=2 * s[1], sections=24)
        shade = np.clip(rng.uniform(0.5, 0.9) + rng.normal(0, 0.05, (len(mesh.vertices), 1)),
                        0, 1)
        mesh.visual = trimesh.visual.ColorVisuals(
            mesh, vertex_colors=(np.repeat(shade, 3, 1) * 255).astype(np.uint8))
        out[f"distractor_{i}"] = mesh
    return out


def _rot_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly distributed rotation `(3, 3)`."""
    q = rng.normal(size=4)
    x, y, z, w = q / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def sample_layout(rng: np.random.Generator, cfg: SynthConfig, bounds: list[np.ndarray],
                  distractor_bounds: dict[str, np.ndarray]) -> list[Placement]:
    """Objects (by index into `bounds`, each `(2, 3)` min/max in metres) and distractors
    resting on the table, not overlapping where the table has room."""
    n_obj = int(rng.integers(cfg.objects_per_scene[0], cfg.objects_per_scene[1] + 1))
    pool = np.repeat(np.arange(len(bounds)), cfg.max_copies)
    labels = rng.choice(pool, size=min(n_obj, len(pool)), replace=False)
    n_dis = int(rng.integers(cfg.distractors_per_scene[0], cfg.distractors_per_scene[1] + 1))
    keys = sorted(distractor_bounds)
    chosen = rng.choice(len(keys), size=n_dis, replace=True) if keys and n_dis else []
    items = [(object_key(int(i)), int(i), bounds[int(i)]) for i in labels]
    items += [(keys[int(k)], -1, distractor_bounds[keys[int(k)]]) for k in chosen]

    placed: list[Placement] = []
    taken: list[tuple[np.ndarray, float]] = []
    for mesh, label, b in items:
        R = _rot_z(rng.uniform(0, 2 * np.pi))
        if rng.random() >= cfg.upright_prob:
            R = random_rotation(rng)
        corners = np.array(np.meshgrid(*b.T)).reshape(3, -1).T @ R.T
        radius = float(np.linalg.norm(corners[:, :2], axis=1).max())
        for _ in range(20):  # rejection sampling; a crowded table accepts overlaps
            r = cfg.table_radius * np.sqrt(rng.random())
            a = rng.uniform(0, 2 * np.pi)
            xy = np.array([r * np.cos(a), r * np.sin(a)])
            if all(np.linalg.norm(xy - c) > 0.8 * (radius + rc) for c, rc in taken):
                break
        taken.append((xy, radius))
        T = np.eye(4)
        T[:3, :3] = R
        T[:3, 3] = [xy[0], xy[1], -corners[:, 2].min()]
        placed.append(Placement(mesh, label, T))
    return placed


def sample_view(rng: np.random.Generator, cfg: SynthConfig, layout: list[Placement]) -> View:
    """A camera on the view sphere looking at the table, with lights and materials."""
    d = rng.uniform(*cfg.distance)
    s_lo, s_hi = np.sin(np.deg2rad(cfg.elevation_deg))
    elev = np.arcsin(rng.uniform(s_lo, s_hi))
    azim = rng.uniform(0, 2 * np.pi)
    target = np.r_[rng.normal(0, cfg.table_radius / 2, 2), rng.uniform(0, 0.05)]
    eye = target + d * np.array([np.cos(elev) * np.cos(azim), np.cos(elev) * np.sin(azim),
                                 np.sin(elev)])
    z = (target - eye) / np.linalg.norm(target - eye)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)  # image down, towards the table below the horizon
    R_world_cam = np.stack([x, y, z], axis=1) @ _rot_z(np.deg2rad(
        rng.uniform(-cfg.roll_deg, cfg.roll_deg)))
    T = np.eye(4)
    T[:3, :3] = R_world_cam.T
    T[:3, 3] = -R_world_cam.T @ eye

    K = np.array(cfg.K, float)
    K[[0, 1], [0, 1]] *= 1 + rng.uniform(-cfg.focal_jitter, cfg.focal_jitter)

    n_lights = int(rng.integers(cfg.lights[0], cfg.lights[1] + 1))
    # Lights come from the camera's side of the objects, mostly from above the image.
    dirs = rng.normal(0, 1, (n_lights, 3)) * [0.8, 0.8, 0.4] + [0.0, -0.4, -1.0]
    intensity = rng.uniform(*cfg.light_intensity, (n_lights, 1))
    colors = intensity * (1 + rng.uniform(-cfg.light_tint, cfg.light_tint, (n_lights, 3)))
    ambient = rng.uniform(*cfg.ambient) * (1 + rng.uniform(-cfg.light_tint, cfg.light_tint, 3))
    lighting = Lighting(ambient=ambient, directions=dirs, colors=colors)

    materials = []
    for p in layout:
        if p.label < 0:  # distractors take any colour
            gain = rng.uniform(0.1, 1.4, 3)
        else:
            gain = rng.uniform(*cfg.object_gain) * (1 + rng.uniform(-cfg.object_tint,
                                                                    cfg.object_tint, 3))
        materials.append(Material(gain=gain, specular=rng.uniform(*cfg.specular),
                                  shininess=rng.uniform(5, 80)))
    return View(T_cam_world=T, K=K, lighting=lighting, materials=materials)

