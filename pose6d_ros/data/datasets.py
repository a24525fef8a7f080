"""Torch datasets over BOP-format synthetic scenes (as written by `pose6d synth`).

`CropDataset` gives object crops for the coordinate network; `DetectionDataset` whole
images for the detector. Class indices are positions in the objects YAML (the registry);
the detector's labels are those plus one (0 is background, torchvision's convention).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from pose6d_ros.core.camera import crop_resize_intrinsics
from pose6d_ros.core.objects import ObjectRegistry
from pose6d_ros.data import appearance
from pose6d_ros.data.bop import (
    load_scene_camera,
    load_scene_gt,
    load_scene_gt_info,
    read_image,
    read_mask,
    read_xyz,
)


@dataclass(frozen=True)
class InstanceRecord:
    """One annotated instance of one image."""

    scene_dir: Path
    im_id: int
    gt_idx: int
    label: int  # class index in the registry
    R: np.ndarray  # (3, 3)
    t: np.ndarray  # (3,) metres
    K: np.ndarray  # (3, 3)
    bbox_visib: tuple[int, int, int, int]  # x, y, w, h
    visib_fract: float


# One dataset folder written by `pose6d synth`, or several trained on as one.
DataRoots = str | Path | Sequence[str | Path]


def scan_split(roots: DataRoots, objects: ObjectRegistry, split: str = "train"
               ) -> list[InstanceRecord]:
    """Every annotated instance under `root/split/<scene>/` of each of `roots` (one dataset
    folder or several), of the registry's objects."""
    scenes = []
    for root in [roots] if isinstance(roots, str | Path) else roots:
        split_dir = Path(root) / split
        found = sorted(p for p in split_dir.glob("[0-9]*") if p.is_dir())
        if not found:
            raise FileNotFoundError(f"{split_dir}: no scene folders (run `pose6d synth` first)")
        scenes += found
    scenes = list(dict.fromkeys(scenes))  # a folder given twice counts once
    records = []
    for scene in scenes:
        gts = load_scene_gt(scene / "scene_gt.json")
        infos = load_scene_gt_info(scene / "scene_gt_info.json")
        cams = load_scene_camera(scene / "scene_camera.json")
        for im_id, entries in sorted(gts.items()):
            for gt_idx, gt in enumerate(entries):
                try:
                    label = objects.index_of_id(gt.obj_id)
                except KeyError:
                    continue  # an object this registry does not train
                info = infos[im_id][gt_idx]
                records.append(InstanceRecord(
                    scene, im_id, gt_idx, label, gt.R, gt.t, cams[im_id],
                    tuple(int(v) for v in info["bbox_visib"]), float(info["visib_fract"])))
    return records


def _rng(index: int) -> np.random.Generator:
    # Different per DataLoader worker and epoch (torch reseeds workers), fixed by the seed.
    return np.random.default_rng([torch.initial_seed() % 2**63, index])


def photometric(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """On-the-fly colour jitter, blur and noise of an `(H, W, 3)` uint8 image."""
    img = appearance.jitter_colors(rng, img)
    img = appearance.blur(rng, img, max_sigma=1.0, motion_prob=0.1)
    return appearance.add_noise(rng, img, max_std=4.0)


class CropDataset(Dataset):
    """Square crops around each visible instance, resized to `size` x `size`.

    The crop box is the visible box, made square, enlarged by `enlarge` and jittered like a
    detector's box (`shift`, `scale_jitter`, fractions of the side). An item holds:
    `image (3, S, S)` float in [0, 1]; `K (3, 3)` the crop's intrinsics; `box (4,)` the crop
    in the full image (x0, y0, x1, y1, roi_align(aligned=True) convention); `xyz (3, S, S)`
    amodal object coordinates in metres and `xyz_norm` = (xyz - center) / scale (0 off the
    object); `mask_full`, `mask_visib (S, S)` float; `label`; `R (3, 3)`, `t (3,)`;
    `center`, `scale (3,)`. Symmetry pools come from `SymmetryPools(objects)[label]`.
    With `occlude`, random patches hide parts of the object (mask_visib shrinks; the
    amodal targets stay).
    """

    def __init__(self, root: DataRoots, objects: ObjectRegistry, *, split: str = "train",
                 size: int = 128, enlarge: float = 1.5, shift: float = 0.1,
                 scale_jitter: float = 0.15, min_visib_fract: float = 0.1,
                 augment: bool = True, occlude: float = 0.3) -> None:
        self.objects, self.size = objects, size
        self.enlarge, self.shift, self.scale_jitter = enlarge, shift, scale_jitter
        self.augment, self.occlude = augment, occlude
        self.records = [r for r in scan_split(root, objects, split)
                        if r.visib_fract >= min_visib_fract and r.bbox_visib[2] > 0]
        center, scale = objects.coordinate_normalisation()
        self.center = center.astype(np.float32)
        self.scale = scale.astype(np.float32)

    def __len__(self) -> int:
        return len(self.records)

    def crop_box(self, rec: InstanceRecord, rng: np.random.Generator | None) -> np.ndarray:
        """`(4,)` square crop box (x0, y0, x1, y1) in pixels, jittered when rng is given."""
        x, y, w, h = rec.bbox_visib
        cx, cy = x + w / 2, y + h / 2
        side = max(w, h) * self.enlarge
        if rng is not None:
            side *= 1 + rng.uniform(-self.scale_jitter, self.scale_jitter)
            cx += rng.uniform(-self.shift, self.shift) * side
            cy += rng.uniform(-self.shift, self.shift) * side
        side = max(side, 8.0)
        return np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rec = self.records[index]
        rng = _rng(index) if self.augment else None
        stem = f"{rec.im_id:06d}_{rec.gt_idx:06d}"
        img = read_image(rec.scene_dir / "rgb" / f"{rec.im_id:06d}.jpg")
        visib = read_mask(rec.scene_dir / "mask_visib" / f"{stem}.png")
        (x0, y0, x1, y1), xyz_crop = read_xyz(rec.scene_dir / "xyz" / f"{stem}.npz")
        H, W = img.shape[:2]
        xyz = np.zeros((H, W, 4), np.float32)  # xyz + amodal mask in one warp
        xyz[y0:y1, x0:x1, :3] = xyz_crop
        xyz[y0:y1, x0:x1, 3] = np.any(xyz_crop != 0, axis=-1)

        box = self.crop_box(rec, rng)
        S = self.size
        K_crop = crop_resize_intrinsics(torch.from_numpy(rec.K), torch.from_numpy(box)[None],
                                        (S, S))[0].numpy()
        A = (K_crop @ np.linalg.inv(rec.K))[:2]  # full-image pixel -> crop pixel
        image = cv2.warpAffine(img, A, (S, S), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT)
        near = dict(flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT)
        xyzm = cv2.warpAffine(xyz, A, (S, S), **near)
        mask_visib = cv2.warpAffine(visib.astype(np.uint8), A, (S, S), **near) > 0
        mask_full = xyzm[..., 3] > 0
        if rng is not None:
            if rng.random() < self.occlude:
                image, hidden = _occlude(rng, image)
                mask_visib &= ~hidden
            image = photometric(rng, image)

        c, s = self.center[rec.label], self.scale[rec.label]
        xyz_m = xyzm[..., :3]
        xyz_norm = np.where(mask_full[..., None], (xyz_m - c) / s, 0.0).astype(np.float32)
        return {
            "image": torch.from_numpy(image).permute(2, 0, 1).float() / 255.0,
            "K": torch.from_numpy(K_crop).float(),
            "box": torch.from_numpy(box).float(),
            "xyz": torch.from_numpy(np.ascontiguousarray(xyz_m)).permute(2, 0, 1),
            "xyz_norm": torch.from_numpy(xyz_norm).permute(2, 0, 1),
            "mask_full": torch.from_numpy(mask_full).float(),
            "mask_visib": torch.from_numpy(mask_visib).float(),
            "label": torch.tensor(rec.label),
            "R": torch.from_numpy(rec.R).float(),
            "t": torch.from_numpy(rec.t).float(),
            "center": torch.from_numpy(c),
            "scale": torch.from_numpy(s),
        }


def _occlude(rng: np.random.Generator, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cover a random rectangle or ellipse (10-40 % of the crop) with random texture."""
    S = image.shape[0]
    hidden = np.zeros((S, S), np.uint8)
    w, h = (rng.uniform(0.3, 0.65, 2) * S).astype(int)
    x, y = int(rng.integers(0, S - w + 1)), int(rng.integers(0, S - h + 1))
    if rng.random() < 0.5:
        hidden[y:y + h, x:x + w] = 1
    else:
        cv2.ellipse(hidden, (x + w // 2, y + h // 2), (w // 2, h // 2), rng.uniform(0, 180),
                    0, 360, 1, -1)
    patch = appearance.procedural_background(rng, S, S)
    hidden = hidden.astype(bool)
    return np.where(hidden[..., None], patch, image), hidden


class DetectionDataset(Dataset):
    """Images with torchvision detection targets, whole or as random square crops.

    An item is `(image (3, H, W) float in [0, 1], target)` with target `boxes (n, 4)`
    (x0, y0, x1, y1), `labels (n,)` int64 = class index + 1, `masks (n, H, W)` uint8 visible
    masks, of the instances at least `min_visib_fract` visible and `min_pixels` large.

    With `crop_size` > 0 each item is the image resized as the detector resizes it at test
    time (short side to `min_size`, long side at most `max_size`) times a random factor in
    [1 - scale_jitter, 1 + scale_jitter], then cropped to `crop_size` x `crop_size` at a
    random place (padded with zeros where the image is smaller); boxes are the tight boxes
    of the cropped masks. The network then sees objects at their test-time size, for a
    fraction of a whole image's compute.
    """

    def __init__(self, root: DataRoots, objects: ObjectRegistry, *, split: str = "train",
                 min_visib_fract: float = 0.1, min_pixels: int = 16,
                 augment: bool = True, crop_size: int = 0, min_size: int = 480,
                 max_size: int = 640, scale_jitter: float = 0.0) -> None:
        if crop_size < 0 or min_size < 1 or max_size < 1 or not 0 <= scale_jitter < 1:
            raise ValueError("crop_size must be >= 0, min_size and max_size >= 1, "
                             "0 <= scale_jitter < 1")
        self.augment = augment
        self.crop_size, self.scale_jitter = crop_size, scale_jitter
        self.sizes = (min_size, max_size)
        by_image: dict[tuple[Path, int], list[InstanceRecord]] = {}
        for r in scan_split(root, objects, split):
            by_image.setdefault((r.scene_dir, r.im_id), [])
            if r.visib_fract >= min_visib_fract and r.bbox_visib[2] * r.bbox_visib[3] > 0:
                by_image[(r.scene_dir, r.im_id)].append(r)
        self.images = sorted(by_image.items(), key=lambda kv: (str(kv[0][0]), kv[0][1]))
        self.min_pixels = min_pixels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        (scene, im_id), recs = self.images[index]
        rng = _rng(index)
        img = read_image(scene / "rgb" / f"{im_id:06d}.jpg")
        masks = [read_mask(scene / "mask_visib" / f"{im_id:06d}_{r.gt_idx:06d}.png")
                 for r in recs]
        labels = [r.label + 1 for r in recs]
        if self.crop_size:
            img, masks = self._random_crop(rng, img, masks)
        if self.augment:
            img = photometric(rng, img)
        keep = [i for i, m in enumerate(masks) if m.sum() >= self.min_pixels]
        H, W = img.shape[:2]
        stack = np.stack([masks[i] for i in keep]) if keep else np.zeros((0, H, W), bool)
        target = {
            "boxes": _tight_boxes(stack),
            "labels": torch.tensor([labels[i] for i in keep], dtype=torch.int64),
            "masks": torch.from_numpy(stack).to(torch.uint8),
        }
        return torch.from_numpy(img).permute(2, 0, 1).float() / 255.0, target

    def _random_crop(self, rng: np.random.Generator, img: np.ndarray, masks: list[np.ndarray]
                     ) -> tuple[np.ndarray, list[np.ndarray]]:
        H, W = img.shape[:2]
        f = min(self.sizes[0] / min(H, W), self.sizes[1] / max(H, W))
        f *= rng.uniform(1 - self.scale_jitter, 1 + self.scale_jitter)
        h, w = max(1, round(H * f)), max(1, round(W * f))
        S = self.crop_size
        y0, x0 = int(rng.integers(0, max(0, h - S) + 1)), int(rng.integers(0, max(0, w - S) + 1))

        def cut(a: np.ndarray, interp: int) -> np.ndarray:
            a = cv2.resize(a, (w, h), interpolation=interp)[y0:y0 + S, x0:x0 + S]
            out = np.zeros((S, S, *a.shape[2:]), a.dtype)
            out[:a.shape[0], :a.shape[1]] = a
            return out

        return (cut(img, cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR),
                [cut(m.astype(np.uint8), cv2.INTER_NEAREST).astype(bool) for m in masks])


def _tight_boxes(masks: np.ndarray) -> torch.Tensor:
    """`(n, 4)` float32 x0, y0, x1, y1 enclosing each of the `(n, H, W)` masks' pixels."""
    boxes = np.zeros((len(masks), 4), np.float32)
    for i, m in enumerate(masks):
        ys, xs = np.nonzero(m.any(1))[0], np.nonzero(m.any(0))[0]
        boxes[i] = xs[0], ys[0], xs[-1] + 1, ys[-1] + 1
    return torch.from_numpy(boxes)
