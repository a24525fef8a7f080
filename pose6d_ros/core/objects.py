"""The objects registry: one YAML lists every known object, its mesh and its symmetries.

    objects:
      - name: eggbox            # letters, digits, underscores (used in TF frame names)
        id: 10                  # integer class id (the BOP obj_id for BOP objects)
        mesh: ../models/lmo/obj_000010.ply   # relative to this YAML
        mesh_units: mm          # mm, cm or m; everything is metres after loading
        diameter: 164.628       # optional, mesh units; computed from the mesh when absent
        symmetries_discrete:    # optional, BOP models_info vocabulary, 4x4 row-major,
          - [-1, 0, 0, 0.23, 0, -1, 0, 0.69, 0, 0, 1, -0.08, 0, 0, 0, 1]  # t in mesh units
        symmetries_continuous:  # optional: rotation about `axis` through `offset` (mesh units)
          - {axis: [0, 0, 1], offset: [0, 0, 0]}

Units are converted here, once: an ObjectModel holds metres.
"""

import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
import trimesh
import yaml

from pose6d_ros.core.rotations import axis_angle_to_matrix, matrix_to_axis_angle

UNITS = {"mm": 1e-3, "cm": 1e-2, "m": 1.0}
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_SNAP_RADIANS = np.deg2rad(3.0)
_FIELDS = {"name", "id", "mesh", "mesh_units", "diameter", "symmetries_discrete",
           "symmetries_continuous"}


class ObjectsConfigError(ValueError):
    """A problem in an objects YAML (or models_info.json), naming file, object and field."""


def read_mesh(path: str | Path, context: str = "") -> trimesh.Trimesh:
    """The mesh in `path` as stored (file units, unprocessed); an ObjectsConfigError naming
    the file (after `context`, e.g. the object) when it is missing, unreadable, without
    triangles or with non-finite vertices."""
    path = Path(path)
    if not path.is_file():
        raise ObjectsConfigError(f"{path}: {context}mesh file not found")
    try:
        mesh = trimesh.load(path, force="mesh", process=False)
    except Exception as exc:
        raise ObjectsConfigError(f"{path}: {context}cannot read mesh: {exc}") from exc
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise ObjectsConfigError(f"{path}: {context}the file holds no triangles")
    if not np.isfinite(mesh.vertices).all():
        raise ObjectsConfigError(f"{path}: {context}vertices that are not finite numbers")
    return mesh

@dataclass(frozen=True)
class ContinuousSymmetry:
    """Rotation by any angle about the unit `axis` through `offset` (metres), object frame."""

    axis: np.ndarray  # (3,)
    offset: np.ndarray  # (3,)


@dataclass(frozen=True)
class ObjectModel:
    """One known object, in metres."""

    name: str
    id: int
    mesh_path: Path
    mesh_scale: float  # metres per mesh unit
    symmetries_discrete: tuple[np.ndarray, ...] = ()  # each (4, 4), translation in metres
    symmetries_continuous: tuple[ContinuousSymmetry, ...] = ()
    given_diameter: float | None = field(default=None, repr=False)  # metres

    @cached_property
    def mesh(self) -> trimesh.Trimesh:
        """The mesh in metres (loaded on first use)."""
        mesh = read_mesh(self.mesh_path, f"object {self.name!r}: ")
        mesh.apply_scale(self.mesh_scale)
        return mesh

    @cached_property
    def diameter(self) -> float:
        """Largest distance between two mesh vertices, metres (given, or computed)."""
        if self.given_diameter is not None:
            return self.given_diameter
        return hull_diameter(self.mesh)

    @property
    def bounds(self) -> np.ndarray:
        """`(2, 3)` axis-aligned bounding box (min, max) of the mesh, metres."""
        return np.asarray(self.mesh.bounds)

    @property
    def is_symmetric(self) -> bool:
        """True when the object has any symmetry."""
        return bool(self.symmetries_discrete or self.symmetries_continuous)


def hull_diameter(mesh: trimesh.Trimesh) -> float:
    """Largest distance between two vertices (those of the convex hull), mesh units."""
    hull = np.asarray(mesh.convex_hull.vertices)
    return float(np.linalg.norm(hull[:, None, :] - hull[None, :, :], axis=-1).max())


class ObjectRegistry(Sequence[ObjectModel]):
    """Objects in YAML order; index = the class index used by the networks."""

    def __init__(self, objects: Sequence[ObjectModel], source: Path | None = None) -> None:
        self._objects = tuple(objects)
        self.source = source
        self._by_name = {o.name: i for i, o in enumerate(self._objects)}
        self._by_id = {o.id: i for i, o in enumerate(self._objects)}

    def __getitem__(self, index):  # type: ignore[override]
        return self._objects[index]

    def __len__(self) -> int:
        return len(self._objects)

    def __iter__(self) -> Iterator[ObjectModel]:
        return iter(self._objects)

    def coordinate_normalisation(self) -> tuple[np.ndarray, np.ndarray]:
        """`center (O, 3)` and `scale (O, 3)` (bounding-box middle and half extents, metres):
        the networks see object coordinates as `(x - center) / scale`, within [-1, 1]."""
        bounds = np.stack([o.bounds for o in self._objects])  # (O, 2, 3)
        return bounds.mean(1), (bounds[:, 1] - bounds[:, 0]) / 2

    def index_of_name(self, name: str) -> int:
        """Class index of the object called `name`."""
        if name not in self._by_name:
            raise KeyError(f"unknown object name {name!r}; known: {sorted(self._by_name)}")
        return self._by_name[name]

    def index_of_id(self, obj_id: int) -> int:
        """Class index of the object with integer id `obj_id`."""
        if obj_id not in self._by_id:
            raise KeyError(f"unknown object id {obj_id}; known: {sorted(self._by_id)}")
        return self._by_id[obj_id]


def load_objects(path: str | Path) -> ObjectRegistry:
    """Read and validate an objects YAML; errors name the file, the object and the field."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ObjectsConfigError(f"{path}: cannot read objects file: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ObjectsConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("objects"), list):
        raise ObjectsConfigError(f"{path}: expected a mapping with an 'objects' list")
    if not data["objects"]:
        raise ObjectsConfigError(f"{path}: 'objects' is empty")
    objects = [_parse_object(path, i, entry) for i, entry in enumerate(data["objects"])]
    for key in ("name", "id"):
        seen: dict[Any, int] = {}
        for i, obj in enumerate(objects):
            value = getattr(obj, key)
            if value in seen:
                raise ObjectsConfigError(
                    f"{path}: object {obj.name!r} (entry {i}): field '{key}': {value!r} is "
                    f"already used by entry {seen[value]}")
            seen[value] = i
    return ObjectRegistry(objects, source=path)


def _parse_object(path: Path, index: int, entry: Any) -> ObjectModel:
    where = f"{path}: object entry {index}"
    if not isinstance(entry, dict):
        raise ObjectsConfigError(f"{where}: expected a mapping, got {type(entry).__name__}")
    name = entry.get("name")
    if isinstance(name, str):
        where = f"{path}: object {name!r} (entry {index})"

    def fail(fld: str, problem: str) -> ObjectsConfigError:
        return ObjectsConfigError(f"{where}: field '{fld}': {problem}")

    unknown = set(entry) - _FIELDS
    if unknown:
        raise fail(sorted(unknown)[0], f"unknown field; allowed: {sorted(_FIELDS)}")
    for required in ("name", "id", "mesh"):
        if required not in entry:
            raise fail(required, "missing")
    if not isinstance(name, str) or not _NAME.match(name):
        raise fail("name", f"{name!r} must start with a letter and hold only letters, "
                           "digits and underscores")
    obj_id = entry["id"]
    if isinstance(obj_id, bool) or not isinstance(obj_id, int) or obj_id < 0:
        raise fail("id", f"{obj_id!r} must be a non-negative integer")
    units = entry.get("mesh_units", "m")
    if units not in UNITS:
        raise fail("mesh_units", f"{units!r} must be one of {sorted(UNITS)}")
    scale = UNITS[units]
    mesh = entry["mesh"]
    if not isinstance(mesh, str):
        raise fail("mesh", f"{mesh!r} must be a path")
    mesh_path = (path.parent / mesh).resolve()
    if not mesh_path.is_file():
        raise fail("mesh", f"file not found: {mesh_path}")
    diameter = entry.get("diameter")
    if diameter is not None:
        if isinstance(diameter, bool) or not isinstance(diameter, (int, float)) \
                or not np.isfinite(diameter) or diameter <= 0:
            raise fail("diameter", f"{diameter!r} must be a positive number")
        diameter = float(diameter) * scale
    discrete = tuple(_parse_discrete(fail, i, m, scale)
                     for i, m in enumerate(_as_list(fail, entry, "symmetries_discrete")))
    continuous = tuple(_parse_continuous(fail, i, s, scale)
                       for i, s in enumerate(_as_list(fail, entry, "symmetries_continuous")))
    return ObjectModel(name=name, id=obj_id, mesh_path=mesh_path, mesh_scale=scale,
                       symmetries_discrete=discrete, symmetries_continuous=continuous,
                       given_diameter=diameter)


def _as_list(fail, entry: dict, key: str) -> list:
    value = entry.get(key) or []
    if not isinstance(value, list):
        raise fail(key, "must be a list")
    return value


def _numbers(fail, fld: str, value: Any, count: int) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise fail(fld, f"expected {count} numbers") from None
    if arr.size != count or not np.isfinite(arr).all():
        raise fail(fld, f"expected {count} finite numbers, got {value!r}")
    return arr


def _parse_discrete(fail, i: int, value: Any, scale: float) -> np.ndarray:
    fld = f"symmetries_discrete[{i}]"
    T = _numbers(fail, fld, value, 16).reshape(4, 4)
    if not np.allclose(T[3], [0, 0, 0, 1], atol=1e-6):
        raise fail(fld, "last row must be [0, 0, 0, 1]")
    R = T[:3, :3]
    if not np.allclose(R @ R.T, np.eye(3), atol=1e-3) or np.linalg.det(R) < 0:
        raise fail(fld, "the 3x3 part is not a rotation")
    return _exact_symmetry(R, T[:3, 3] * scale)


def _exact_symmetry(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """A 4x4 finite-order symmetry near `(R, t)`.

    Stored symmetries are estimates (BOP's glue: a 178.5 degree turn), and their powers
    drift away from the identity, so pools would not be groups and equivalent poses would
    canonicalise differently. The angle is snapped to the nearest 2 pi k / n (n <= 12,
    within 3 degrees) and the translation along the axis, which no finite-order
    symmetry has, is removed.
    """
    U, _, Vt = np.linalg.svd(R)
    R = U @ Vt
    rotvec = matrix_to_axis_angle(torch.from_numpy(R)).numpy()
    angle = float(np.linalg.norm(rotvec))
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t
    if angle < 1e-9:
        return T
    axis = rotvec / angle
    for n in range(2, 13):
        snapped = 2 * np.pi * round(angle * n / (2 * np.pi)) / n
        if snapped > 0 and abs(snapped - angle) < _SNAP_RADIANS:
            T[:3, :3] = axis_angle_to_matrix(torch.from_numpy(snapped * axis)).numpy()
            T[:3, 3] = t - axis * (axis @ t)
            break
    return T


def _parse_continuous(fail, i: int, value: Any, scale: float) -> ContinuousSymmetry:
    fld = f"symmetries_continuous[{i}]"
    if not isinstance(value, dict) or "axis" not in value:
        raise fail(fld, "expected a mapping with 'axis' (and optional 'offset')")
    axis = _numbers(fail, f"{fld}.axis", value["axis"], 3)
    if np.linalg.norm(axis) < 1e-9:
        raise fail(f"{fld}.axis", "must not be zero")
    offset = _numbers(fail, f"{fld}.offset", value.get("offset", [0, 0, 0]), 3)
    return ContinuousSymmetry(axis=axis / np.linalg.norm(axis), offset=offset * scale)



def upsert_object_entry(path: str | Path, entry: dict[str, Any]) -> dict[str, Any]:
    """Add `entry` to the objects YAML at `path` (created when missing), or replace the entry
    of the same name; returns the entry as written. The file's leading comment lines stay.

    `entry["mesh"]` may be any path: it is written relative to the YAML's folder. Without an
    `id` the entry keeps its old id, or takes the next free one.
    """
    path = Path(path)
    header, objects = [], []
    if path.is_file():
        text = path.read_text()
        header = [ln for ln in text.splitlines() if ln.startswith("#")][:20]
        data = yaml.safe_load(text) or {}
        objects = list(data.get("objects") or []) if isinstance(data, dict) else []
    entry = dict(entry)
    mesh = Path(entry["mesh"]).resolve()
    try:
        entry["mesh"] = Path(os.path.relpath(mesh, path.resolve().parent)).as_posix()
    except ValueError:  # another drive
        entry["mesh"] = mesh.as_posix()
    old = next((i for i, o in enumerate(objects)
                if isinstance(o, dict) and o.get("name") == entry["name"]), None)
    if "id" not in entry:
        used = {o.get("id") for o in objects if isinstance(o, dict)}
        entry["id"] = (objects[old].get("id") if old is not None
                       else max((i for i in used if isinstance(i, int)), default=0) + 1)
    entry = {"name": entry.pop("name"), "id": entry.pop("id"), **entry}
    if old is None:
        objects.append(entry)
    else:
        objects[old] = entry
    body = yaml.safe_dump({"objects": objects}, sort_keys=False, default_flow_style=None,
                          width=100)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(f"{ln}\n" for ln in header) + body)
    try:
        load_objects(tmp)  # a broken result is an error now, not at the node's start
    except ObjectsConfigError:
        tmp.unlink()
        raise
    tmp.replace(path)
    return entry
