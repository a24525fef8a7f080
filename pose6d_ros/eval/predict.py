"""`pose6d predict`: poses for image files or a BOP scene folder, written as a BOP19 CSV,
one JSON per image and overlay images."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from pose6d_ros.core.camera import scale_intrinsics
from pose6d_ros.core.depth import check_depth
from pose6d_ros.core.draw import draw_poses
from pose6d_ros.data.bop import (
    MM,
    BopFormatError,
    BopResult,
    load_camera,
    load_camera_size,
    load_depth_scales,
    load_scene_camera,
    load_scene_camera_poses,
    read_depth_image,
    read_image,
    write_results_csv,
    write_rgb,
)
from pose6d_ros.fusion.multiview import MultiViewFuser, View, poses_in_view
from pose6d_ros.pipeline import Estimator, ObjectPose

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class ImageItem:
    """One image to process and its camera."""

    path: Path
    scene_id: int
    im_id: int
    K: np.ndarray  # (3, 3)
    size: tuple[int, int] | None = None  # (width, height) K is for, where the camera says
    camera: Path | None = None  # the camera JSON K came from
    T_cam_world: np.ndarray | None = None  # (4, 4) camera pose in the scene, when known
    depth: Path | None = None  # registered depth image, if any
    metres_per_unit: float = 1e-3  # of the depth image's integer pixels


@dataclass
class PredictSummary:
    """What `predict` did."""

    images: int = 0
    poses: int = 0
    seconds: float = 0.0
    failed: list[tuple[Path, str]] = field(default_factory=list)

    def lines(self) -> list[str]:
        """A human summary."""
        ok = self.images - len(self.failed)
        rate = f", {ok / self.seconds:.2f} images/s" if self.seconds > 0 and ok else ""
        out = [f"predict: {ok}/{self.images} images, {self.poses} poses{rate}"]
        out += [f"  failed: {p}: {why}" for p, why in self.failed]
        return out


def _number(stem: str, default: int) -> int:
    return int(stem) if stem.isdigit() else default


def collect_images(inputs: Sequence[str | Path], camera: str | Path | None) -> list[ImageItem]:
    """The images of `inputs` (files, folders of images, or one BOP scene folder with
    `rgb/` and `scene_camera.json`) with their intrinsics; `camera` is the camera JSON
    for anything that is not a BOP scene."""
    items: list[ImageItem] = []
    loose: list[Path] = []
    for inp in map(Path, inputs):
        if (inp / "scene_camera.json").is_file():
            cams = load_scene_camera(inp / "scene_camera.json")
            cam_poses = load_scene_camera_poses(inp / "scene_camera.json")
            scene_id = _number(inp.name, 0)
            folder = inp / "rgb" if (inp / "rgb").is_dir() else inp
            for path in sorted(folder.iterdir()):
                if path.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                im_id = _number(path.stem, -1)
                if im_id not in cams:
                    raise BopFormatError(f"{inp / 'scene_camera.json'}: no entry for image "
                                         f"{path.name}")
                items.append(ImageItem(path, scene_id, im_id, cams[im_id],
                                       T_cam_world=cam_poses.get(im_id)))
        elif inp.is_dir():
            loose += sorted(p for p in inp.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif inp.is_file():
            loose.append(inp)
        else:
            raise FileNotFoundError(f"{inp}: no such image, folder or BOP scene")
    if loose:
        if camera is None:
            raise FileNotFoundError(f"{loose[0]}: not in a BOP scene folder; give --camera "
                                    "camera.json")
        K, size = load_camera(camera), load_camera_size(camera)
        items += [ImageItem(p, 0, _number(p.stem, i), K, size, Path(camera))
                  for i, p in enumerate(loose)]
    if not items:
        raise FileNotFoundError(f"no images in {', '.join(map(str, inputs))}")
    return items


DEPTH_SUFFIXES = (".png", ".tif", ".tiff", ".exr")


def attach_depth(items: Sequence[ImageItem], depth: str | Path, metres_per_unit: float
                 ) -> list[ImageItem]:
    """`items` with their depth images from `depth`: a BOP scene folder (`depth/IMID.png`,
    its `scene_camera.json` depth_scale) or a folder of depth images named like the colour
    images (integer pixels times `metres_per_unit`, floating-point ones in metres)."""
    depth = Path(depth)
    if not depth.is_dir():
        raise FileNotFoundError(f"{depth}: no such depth folder or BOP scene")
    scales: dict[int, float] = {}
    folder = depth
    if (depth / "scene_camera.json").is_file():
        scales = load_depth_scales(depth / "scene_camera.json")
        folder = depth / "depth"
    out = []
    for item in items:
        stem = item.path.stem
        found = [p for p in (folder / f"{stem}{s}" for s in DEPTH_SUFFIXES) if p.is_file()]
        unit = scales[item.im_id] * MM if item.im_id in scales else metres_per_unit
        # A missing file fails that image (reported, skipped), not the whole run.
        out.append(replace(item, depth=found[0] if found else folder / f"{stem}.png",
                           metres_per_unit=unit))
    return out


def pose_record(p: ObjectPose) -> dict:
    """A JSON-ready dict of one pose (t in metres, R row-major)."""
    return {"name": p.name, "object_id": p.object_id, "instance": p.instance,
            "score": round(p.score, 6), "R": np.round(p.R, 8).tolist(),
            "t": np.round(p.t, 8).tolist(), "inliers": p.inliers,
            "box_xywh": [round(v, 2) for v in p.box]}


def intrinsics_for(item: ImageItem, width: int, height: int, *, scale: bool = False
                   ) -> np.ndarray:
    """`item`'s intrinsics for its image of `width` x `height`: as given when the camera
    names no size or the same one; scaled with `scale` when only the resolution differs
    (same aspect ratio); else a ValueError naming the image and the camera file."""
    if item.size is None or item.size == (width, height):
        return item.K
    w0, h0 = item.size
    what = (f"{item.path}: image is {width}x{height}, but the intrinsics of {item.camera} "
            f"are for {w0}x{h0}")
    if abs(width / w0 - height / h0) > 0.01 * width / w0:
        raise ValueError(f"{what} (another aspect ratio: give that camera's intrinsics)")
    if not scale:
        raise ValueError(f"{what} (same aspect ratio: --scale-intrinsics scales them)")
    return scale_intrinsics(torch.from_numpy(item.K), width / w0, height / h0).numpy()


def predict(estimator: Estimator, items: Sequence[ImageItem], out: str | Path, *,
            overlays: bool = True, progress: bool = True, scale: bool = False,
            views: int = 1) -> PredictSummary:
    """Run the estimator on every image; an image that fails (unreadable, a size its
    intrinsics are not for, see `intrinsics_for`) is reported and skipped. With `views` > 1,
    consecutive groups of that many images of a BOP scene (with camera poses) are fused:
    each image's outputs are then the fused poses in its camera frame (its own under
    `single_view_poses` in its JSON)."""
    from tqdm import tqdm

    out = Path(out)
    (out / "json").mkdir(parents=True, exist_ok=True)
    if overlays:
        (out / "overlays").mkdir(exist_ok=True)
    summary = PredictSummary(images=len(items))
    results: list[BopResult] = []
    fuser = MultiViewFuser(estimator.objects, refiner=estimator.refiner) if views > 1 else None
    groups = [list(items[i:i + views]) for i in range(0, len(items), views)]
    bar = tqdm(total=len(items), desc="predict", unit="image", disable=not progress)
    for group in groups:
        done = []
        for item in group:
            bar.update(1)
            try:
                if fuser is not None and item.T_cam_world is None:
                    raise BopFormatError(f"{item.path}: no camera pose (cam_R_w2c / cam_t_w2c "
                                         "in scene_camera.json), which --views needs")
                rgb = read_image(item.path)
                K = intrinsics_for(item, rgb.shape[1], rgb.shape[0], scale=scale)
                depth = None
                if item.depth is not None:
                    depth = check_depth(read_depth_image(item.depth, item.metres_per_unit),
                                        rgb.shape, str(item.depth))
                start = time.perf_counter()
                poses = estimator.estimate(rgb, K, depth=depth)
                seconds = time.perf_counter() - start
            except (BopFormatError, ValueError, RuntimeError) as exc:
                summary.failed.append((item.path, str(exc)))
                continue
            done.append((item, rgb, K, poses, seconds,
                         View(rgb, K, np.linalg.inv(item.T_cam_world), poses, depth)
                         if fuser is not None else None))
        fused = fuser([d[-1] for d in done]) if fuser is not None and done else None
        for i, (item, rgb, K, single, seconds, view) in enumerate(done):
            poses = (poses_in_view(fused, view, i, estimator.objects) if fused is not None
                     else single)
            summary.seconds += seconds
            summary.poses += len(poses)
            # BOP19: `time` is the wall-clock time of the whole image, the same for its rows.
            results += [BopResult(item.scene_id, item.im_id, p.object_id, p.score, p.R, p.t,
                                  seconds) for p in poses]
            name = f"{item.scene_id:06d}_{item.im_id:06d}"
            record = {"image": str(item.path),
                      "depth": str(item.depth) if item.depth is not None else None,
                      "scene_id": item.scene_id, "im_id": item.im_id,
                      "K": K.tolist(), "seconds": round(seconds, 6),
                      "timings_ms": {k: round(v, 3) for k, v in
                                     (single[0].timings if single else {}).items()},
                      "poses": [pose_record(p) for p in poses]}
            if fused is not None:
                record["views"] = [str(d[0].path) for d in done]
                record["single_view_poses"] = [pose_record(p) for p in single]
            (out / "json" / f"{name}.json").write_text(json.dumps(record, indent=1))
            if overlays:
                write_rgb(out / "overlays" / f"{name}.png",
                          draw_poses(rgb, K, poses, estimator.objects))
    bar.close()
    write_results_csv(out / "results_bop19.csv", results)
    return summary
