"""BOP dataset files: the one place they are read and written.

Poses are converted at load: `cam_R_m2c` becomes a float64 `(3, 3)` array, `cam_t_m2c`
(millimetres in BOP) a `(3,)` array in metres. Results CSVs (BOP19) store t in mm too.
Besides the BOP files, synthetic scenes carry per-instance object-coordinate maps,
`xyz/IMID_GTIDX.npz` (see `write_xyz`).
"""

import csv
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pose6d_ros.core.depth import depth_to_metres

MM = 1e-3  # metres per BOP millimetre
RESULTS_HEADER = ["scene_id", "im_id", "obj_id", "score", "R", "t", "time"]


class BopFormatError(ValueError):
    """A BOP file that cannot be read, naming the file and the entry."""


@dataclass(frozen=True)
class GroundTruth:
    """One annotated object instance."""

    obj_id: int
    R: np.ndarray  # (3, 3) float64, T_cam_obj
    t: np.ndarray  # (3,) float64, metres


@dataclass(frozen=True)
class BopResult:
    """One estimated pose, a row of a BOP19 results CSV."""

    scene_id: int
    im_id: int
    obj_id: int
    score: float
    R: np.ndarray  # (3, 3)
    t: np.ndarray  # (3,) metres
    time: float = -1.0  # seconds for the whole image, -1 when unknown


def _read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BopFormatError(f"{path}: cannot read: {exc}") from exc


def _matrix(path: Path, key: str, value: Any, shape: tuple[int, ...]) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64).reshape(shape)
    except (TypeError, ValueError):
        raise BopFormatError(f"{path}: {key}: expected {int(np.prod(shape))} numbers") from None
    if not np.isfinite(arr).all():
        raise BopFormatError(f"{path}: {key}: not finite")
    return arr


def load_scene_gt(path: str | Path) -> dict[int, list[GroundTruth]]:
    """`scene_gt.json`: image id -> annotated instances (metres)."""
    path = Path(path)
    out: dict[int, list[GroundTruth]] = {}
    for im_id, entries in _read_json(path).items():
        out[int(im_id)] = [
            GroundTruth(
                obj_id=int(e["obj_id"]),
                R=_matrix(path, f"{im_id}[{i}].cam_R_m2c", e["cam_R_m2c"], (3, 3)),
                t=_matrix(path, f"{im_id}[{i}].cam_t_m2c", e["cam_t_m2c"], (3,)) * MM)
            for i, e in enumerate(entries)]
    return out


def load_scene_camera(path: str | Path) -> dict[int, np.ndarray]:
    """`scene_camera.json`: image id -> intrinsics `K (3, 3)`."""
    path = Path(path)
    return {int(im_id): _matrix(path, f"{im_id}.cam_K", e["cam_K"], (3, 3))
            for im_id, e in _read_json(path).items()}


def load_scene_camera_poses(path: str | Path) -> dict[int, np.ndarray]:
    """`scene_camera.json`: image id -> world-to-camera pose `T_cam_world (4, 4)` (metres),
    for the images that have `cam_R_w2c` and `cam_t_w2c`."""
    path = Path(path)
    out = {}
    for im_id, e in _read_json(path).items():
        if "cam_R_w2c" in e and "cam_t_w2c" in e:
            T = np.eye(4)
            T[:3, :3] = _matrix(path, f"{im_id}.cam_R_w2c", e["cam_R_w2c"], (3, 3))
            T[:3, 3] = _matrix(path, f"{im_id}.cam_t_w2c", e["cam_t_w2c"], (3,)) * MM
            out[int(im_id)] = T
    return out


def load_camera(path: str | Path) -> np.ndarray:
    """Intrinsics `K (3, 3)` of a camera JSON: BOP's camera.json (fx, fy, cx, cy), or an
    object with `cam_K` (9 numbers, row-major) or `K` (3x3)."""
    path = Path(path)
    data = _read_json(path)
    if not isinstance(data, dict):
        raise BopFormatError(f"{path}: expected a JSON object with fx/fy/cx/cy, cam_K or K")
    if "cam_K" in data or "K" in data:
        key = "cam_K" if "cam_K" in data else "K"
        return _matrix(path, key, data[key], (3, 3))
    missing = [k for k in ("fx", "fy", "cx", "cy") if k not in data]
    if missing:
        raise BopFormatError(f"{path}: missing {', '.join(missing)} (or cam_K / K)")
    v = _matrix(path, "fx/fy/cx/cy", [data[k] for k in ("fx", "fy", "cx", "cy")], (4,))
    return np.array([[v[0], 0.0, v[2]], [0.0, v[1], v[3]], [0.0, 0.0, 1.0]])


def load_camera_size(path: str | Path) -> tuple[int, int] | None:
    """The image size `(width, height)` a camera JSON's intrinsics are for, when it says."""
    data = _read_json(Path(path))
    if isinstance(data, dict) and "width" in data and "height" in data:
        try:
            return int(data["width"]), int(data["height"])
        except (TypeError, ValueError) as exc:
            raise BopFormatError(f"{path}: width/height: expected integers") from exc
    return None


def load_scene_gt_info(path: str | Path) -> dict[int, list[dict[str, Any]]]:
    """`scene_gt_info.json`: image id -> per-instance boxes (x, y, w, h) and visibility."""
    return {int(k): v for k, v in _read_json(Path(path)).items()}


def load_models_info(path: str | Path) -> dict[int, dict[str, Any]]:
    """`models_info.json`: obj_id -> entry, as stored (mesh units)."""
    return {int(k): v for k, v in _read_json(Path(path)).items()}


def load_depth_scales(path: str | Path) -> dict[int, float]:
    """`scene_camera.json`: image id -> depth_scale (depth PNG value x scale = mm)."""
    return {int(im_id): float(e.get("depth_scale", 1.0))
            for im_id, e in _read_json(Path(path)).items()}


def gt_entry(gt: GroundTruth) -> dict[str, Any]:
    """One `scene_gt.json` entry (t in mm)."""
    return {"cam_R_m2c": [float(v) for v in np.asarray(gt.R).reshape(-1)],
            "cam_t_m2c": [float(v) for v in np.asarray(gt.t).reshape(-1) / MM],
            "obj_id": int(gt.obj_id)}


def camera_entry(K: np.ndarray, depth_scale: float,
                 T_cam_world: np.ndarray | None = None) -> dict[str, Any]:
    """One `scene_camera.json` entry; the world-to-camera pose when known (t in mm)."""
    out: dict[str, Any] = {"cam_K": [float(v) for v in np.asarray(K).reshape(-1)],
                           "depth_scale": float(depth_scale)}
    if T_cam_world is not None:
        out["cam_R_w2c"] = [float(v) for v in np.asarray(T_cam_world)[:3, :3].reshape(-1)]
        out["cam_t_w2c"] = [float(v) for v in np.asarray(T_cam_world)[:3, 3] / MM]
    return out


def write_json(path: str | Path, data: dict[int, Any]) -> None:
    """A BOP per-scene JSON (keys are image ids)."""
    Path(path).write_text(json.dumps({str(k): v for k, v in sorted(data.items())}, indent=1))


def read_image(path: str | Path) -> np.ndarray:
    """`(H, W, 3)` uint8 RGB."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise BopFormatError(f"{path}: cannot read image")
    return np.ascontiguousarray(img[..., ::-1])


def write_rgb(path: str | Path, rgb: np.ndarray, quality: int = 95) -> None:
    """An RGB image `(H, W, 3)` uint8 as JPEG (quality 1-100) or PNG, by the suffix."""
    jpeg = Path(path).suffix.lower() in (".jpg", ".jpeg")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if jpeg else []
    if not cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1]), params):
        raise OSError(f"{path}: cannot write")


def read_mask(path: str | Path) -> np.ndarray:
    """`(H, W)` bool from a BOP mask PNG."""
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise BopFormatError(f"{path}: cannot read mask")
    return img > 127


def write_mask(path: str | Path, mask: np.ndarray) -> None:
    """A BOP mask PNG (255 = object) from `(H, W)` bool."""
    cv2.imwrite(str(path), mask.astype(np.uint8) * 255)


def read_depth(path: str | Path, depth_scale: float) -> np.ndarray:
    """`(H, W)` float32 depth in metres (0 = none) from a BOP 16-bit depth PNG."""
    return read_depth_image(path, depth_scale * MM)


def read_depth_image(path: str | Path, metres_per_unit: float) -> np.ndarray:
    """`(H, W)` float32 metres (0 = none) from a depth image file: integer pixels (16-bit
    PNG/TIFF) times `metres_per_unit`, floating-point ones (32-bit TIFF/EXR) as metres."""
    img = cv2.imread(str(path), cv2.IMREAD_ANYDEPTH)
    if img is None or img.ndim != 2:
        raise BopFormatError(f"{path}: cannot read a single-channel depth image")
    scale = 1.0 if np.issubdtype(img.dtype, np.floating) else metres_per_unit
    return depth_to_metres(img, scale)


def write_depth(path: str | Path, depth: np.ndarray, depth_scale: float) -> None:
    """A BOP 16-bit depth PNG from `(H, W)` metres (value x depth_scale = mm)."""
    value = np.round(depth / (depth_scale * MM))
    cv2.imwrite(str(path), np.clip(value, 0, 65535).astype(np.uint16))


def write_xyz(path: str | Path, box: tuple[int, int, int, int], xyz: np.ndarray) -> None:
    """An instance's amodal object-coordinate map: `xyz (h, w, 3)` float32 metres covering
    image pixels `box` = (x0, y0, x1, y1), end exclusive; (0, 0, 0) = not the object."""
    # An .npz written with fast deflate: np.savez_compressed's default level is several
    # times slower for a few percent less space.
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name, arr in (("box", np.asarray(box, np.int32)), ("xyz", xyz.astype(np.float32))):
            with zf.open(f"{name}.npy", "w") as f:
                np.lib.format.write_array(f, arr, allow_pickle=False)


def read_xyz(path: str | Path) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """`(box, xyz)` as written by `write_xyz`."""
    try:
        with np.load(path, allow_pickle=False) as f:
            box = tuple(int(v) for v in f["box"])
            xyz = f["xyz"]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise BopFormatError(f"{path}: cannot read coordinate map: {exc}") from exc
    x0, y0, x1, y1 = box
    if xyz.shape != (y1 - y0, x1 - x0, 3):
        raise BopFormatError(f"{path}: xyz shape {xyz.shape} does not match box {box}")
    return (x0, y0, x1, y1), xyz


def write_results_csv(path: str | Path, results: list[BopResult]) -> None:
    """Write a BOP19 results CSV (R row-major, t in mm)."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(RESULTS_HEADER)
        for r in results:
            w.writerow([r.scene_id, r.im_id, r.obj_id, f"{r.score:.6f}",
                        " ".join(f"{v:.8f}" for v in np.asarray(r.R).reshape(-1)),
                        " ".join(f"{v:.6f}" for v in np.asarray(r.t).reshape(-1) / MM),
                        f"{r.time:.6f}"])


def read_results_csv(path: str | Path) -> list[BopResult]:
    """Read a BOP19 results CSV (t back in metres)."""
    path = Path(path)
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except OSError as exc:
        raise BopFormatError(f"{path}: cannot read: {exc}") from exc
    if not rows or [c.strip() for c in rows[0]] != RESULTS_HEADER:
        raise BopFormatError(f"{path}: header must be {','.join(RESULTS_HEADER)}")
    out = []
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        try:
            scene_id, im_id, obj_id, score, R, t, time = row
            out.append(BopResult(
                scene_id=int(scene_id), im_id=int(im_id), obj_id=int(obj_id),
                score=float(score), R=_matrix(path, f"line {line}: R", R.split(), (3, 3)),
                t=_matrix(path, f"line {line}: t", t.split(), (3,)) * MM, time=float(time)))
        except ValueError as exc:
            raise BopFormatError(f"{path}: line {line}: {exc}") from exc
    return out


def objects_yaml_from_bop(models_info_path: str | Path, yaml_path: str | Path, *,
                          mesh_dir: str | Path | None = None,
                          names: dict[int, str] | None = None, mesh_units: str = "mm"
                          ) -> dict[str, Any]:
    """An objects-YAML mapping (see pose6d_ros.core.objects) for a BOP `models_info.json`.

    Mesh paths (`obj_XXXXXX.ply` in `mesh_dir`, default the JSON's folder) are written
    relative to `yaml_path`'s folder. `names` maps obj_id to a name (default `obj_<id>`).
    """
    models_info_path = Path(models_info_path)
    info = load_models_info(models_info_path)
    mesh_dir = Path(mesh_dir) if mesh_dir is not None else models_info_path.parent
    out_dir = Path(yaml_path).resolve().parent
    objects = []
    for obj_id in sorted(info):
        entry = info[obj_id]
        mesh = (mesh_dir / f"obj_{obj_id:06d}.ply").resolve()
        obj: dict[str, Any] = {
            "name": (names or {}).get(obj_id, f"obj_{obj_id:06d}"),
            "id": obj_id,
            "mesh": Path(os.path.relpath(mesh, out_dir)).as_posix(),
            "mesh_units": mesh_units,
        }
        if "diameter" in entry:
            obj["diameter"] = float(entry["diameter"])
        if entry.get("symmetries_discrete"):
            obj["symmetries_discrete"] = [[float(v) for v in m]
                                          for m in entry["symmetries_discrete"]]
        if entry.get("symmetries_continuous"):
            obj["symmetries_continuous"] = [
                {"axis": [float(v) for v in s["axis"]],
                 "offset": [float(v) for v in s.get("offset", [0, 0, 0])]}
                for s in entry["symmetries_continuous"]]
        objects.append(obj)
    return {"objects": objects}
