"""Template banks: per object, pretrained features of its rendered views, cached on disk.

A template is the object rendered alone on a neutral background, its origin on the optical
axis, cropped as the estimator crops a detection (a square `enlarge` times the silhouette
box's longer side, centred on the box) and seen through the frozen ImageNet features. It
keeps its allocentric rotation and where the object sits in its box (`extent`, `offset`),
which give the translation of a detection from its box. Views that a symmetry of the object
makes equivalent are kept once. A bank file is keyed by the mesh file's bytes, the object's
units and symmetries and the bank settings: a changed mesh builds a new bank.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import Tensor

from pose6d_ros.core.objects import ObjectModel
from pose6d_ros.core.rotations import rotation_angle
from pose6d_ros.core.symmetry import SymmetryPools
from pose6d_ros.nets.coord_poses import DEFAULT_ENLARGE, crop_each
from pose6d_ros.nets.weights import WeightsError
from pose6d_ros.templates.features import CropFeatures
from pose6d_ros.templates.viewpoints import (
    inplane_rotations,
    look_at_rotations,
    sphere_directions,
)

KIND = "template_bank"
FORMAT_VERSION = 2


@dataclass(frozen=True)
class BankConfig:
    """How a bank is built; part of its cache key."""

    view_spacing_deg: float = 15.0  # out-of-plane views on the sphere, about this far apart
    inplane_step_deg: float = 30.0  # in-plane turns of each view
    crop_size: int = 64  # pixels; features at stride 8 -> an 8 x 8 grid
    blocks: int = 7  # MobileNetV2 feature blocks (7: stride 8)
    render_size: int = 192  # pixels of the square render, before cropping
    max_faces: int = 4000  # mesh decimation for rendering
    background: float = 0.5  # grey level behind the object
    enlarge: float = DEFAULT_ENLARGE  # crop side / longer box side, as the estimator crops

    def to_dict(self) -> dict[str, Any]:
        """Plain values (cache key, file header)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> BankConfig:
        """The config `to_dict` wrote."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


@dataclass
class ObjectBank:
    """The N templates of one object."""

    name: str
    features: Tensor  # (N, C, h, w) float16, unit length per cell
    weights: Tensor  # (N, h, w) float16: the silhouette's share of each cell
    rotations: Tensor  # (N, 3, 3) float32 allocentric object -> camera
    extents: Tensor  # (N,) float32 metres: longer box side at the object's depth
    offsets: Tensor  # (N, 2) float32 metres at the object's depth: origin minus box centre

    def __len__(self) -> int:
        return int(self.rotations.shape[0])

    def to_dict(self) -> dict[str, Any]:
        """Tensors and names, safe for `torch.load(weights_only=True)`."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def asset_key(obj: ObjectModel, settings: dict[str, Any]) -> str:
    """sha256 of what a per-object asset depends on: mesh bytes, units, symmetries and the
    asset's `settings` (plain values)."""
    h = hashlib.sha256()
    try:
        h.update(Path(obj.mesh_path).read_bytes())
    except OSError as exc:
        raise WeightsError(f"{obj.mesh_path}: object {obj.name!r}: cannot read mesh: {exc}"
                           ) from exc
    h.update(repr(obj.mesh_scale).encode())
    for S in obj.symmetries_discrete:
        h.update(np.asarray(S, np.float64).round(9).tobytes())
    for c in obj.symmetries_continuous:
        h.update(np.concatenate([c.axis, c.offset]).astype(np.float64).round(9).tobytes())
    h.update(json.dumps(settings, sort_keys=True).encode())
    return h.hexdigest()


def bank_key(obj: ObjectModel, cfg: BankConfig) -> str:
    """The cache key of `obj`'s template bank under `cfg`."""
    return asset_key(obj, {**cfg.to_dict(), "format": FORMAT_VERSION})


def default_cache_dir() -> Path:
    """Where banks are cached: $POSE6D_CACHE/templates, else ~/.cache/pose6d_ros/templates."""
    root = os.environ.get("POSE6D_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "pose6d_ros")
    return Path(root) / "templates"


def bank_path(cache_dir: str | Path, obj: ObjectModel, cfg: BankConfig) -> Path:
    """The cache file of `obj`'s bank under these settings."""
    return Path(cache_dir) / f"{obj.name}-{bank_key(obj, cfg)[:16]}.pt"


def template_rotations(obj: ObjectModel, cfg: BankConfig) -> tuple[np.ndarray, np.ndarray]:
    """`(view index (N,), rotation (N, 3, 3))` of the templates to render: views times
    in-plane turns, without those a symmetry of `obj` makes equivalent to a kept one."""
    views = look_at_rotations(sphere_directions(cfg.view_spacing_deg))  # (V, 3, 3)
    turns = inplane_rotations(cfg.inplane_step_deg)  # (P, 3, 3)
    R = np.einsum("pij,vjk->vpik", turns, views).reshape(-1, 3, 3)
    view = np.repeat(np.arange(len(views)), len(turns))
    if not obj.is_symmetric:
        return view, R
    pools = SymmetryPools([obj])
    Rt = torch.from_numpy(R)
    Rc, _ = pools.canonicalise(torch.zeros(len(R), dtype=torch.long), Rt,
                               torch.zeros(len(R), 3, dtype=torch.float64))
    if not obj.symmetries_continuous:
        # Finitely many equivalents: keep the templates that are their class's canonical
        # member (the one nearest the identity), an even sampling of one symmetry cell.
        keep = rotation_angle(Rc, Rt) < 1e-6
    else:
        # The canonical members lie on a thinner set: greedy, a template stays unless an
        # earlier kept one is closer than half a step.
        radius = np.deg2rad(0.5 * min(cfg.view_spacing_deg, cfg.inplane_step_deg))
        keep = torch.zeros(len(R), dtype=torch.bool)
        close = torch.zeros(len(R), dtype=torch.bool)
        for i in range(len(R)):  # build time only
            if close[i]:
                continue
            keep[i] = True
            close |= rotation_angle(Rc, Rc[i].expand_as(Rc)) < radius
    idx = keep.nonzero()[:, 0].numpy()
    return view[idx], R[idx]


def _rotate_image(image: np.ndarray, angle_cos: float, angle_sin: float,
                  centre: tuple[float, float], border: float) -> np.ndarray:
    """`image` turned about `centre` as a camera turned about its optical axis sees it."""
    c, s = angle_cos, angle_sin
    cx, cy = centre
    M = np.array([[c, -s, cx - c * cx + s * cy], [s, c, cy - s * cx - c * cy]])
    flags = cv2.INTER_LINEAR if image.dtype != np.uint8 or image.ndim == 3 else cv2.INTER_NEAREST
    return cv2.warpAffine(image, M, (image.shape[1], image.shape[0]), flags=flags,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=border)


def build_object_bank(obj: ObjectModel, cfg: BankConfig, features: CropFeatures, *,
                      device: str | torch.device = "cpu", batch: int = 256,
                      progress: Callable[[int, int], None] | None = None) -> ObjectBank:
    """Render `obj`'s templates and compute their features (see the module docstring)."""
    from pose6d_ros.data.render import Instance, Lighting, Renderer, simplify_mesh

    view_idx, R_all = template_rotations(obj, cfg)
    S = cfg.render_size
    verts = np.asarray(obj.mesh.vertices)
    radius = float(np.linalg.norm(verts, axis=1).max())
    depth = max(0.5, 4.0 * radius)
    f = 0.45 * S * (depth - radius) / radius  # the bounding sphere fills 90 % of the render
    K = np.array([[f, 0, (S - 1) / 2], [0, f, (S - 1) / 2], [0, 0, 1.0]])
    renderer = Renderer(S, S)
    try:
        renderer.add_mesh("obj", simplify_mesh(obj.mesh, cfg.max_faces))
        lighting = Lighting(ambient=np.full(3, 0.45), directions=np.array([[0.0, 0.0, -1.0]]),
                            colors=np.full((1, 3), 0.6))
        views = look_at_rotations(sphere_directions(cfg.view_spacing_deg))
        images, masks = [], []
        grey = round(255 * cfg.background)
        for n, v in enumerate(np.unique(view_idx)):
            out = renderer.render(K, [Instance("obj", views[v], np.array([0.0, 0.0, depth]))],
                                  lighting, amodal=False)
            mask = (out.instance == 0).astype(np.uint8)
            rgb = np.where(mask[..., None] > 0, out.rgb, grey).astype(np.uint8)
            for i in np.nonzero(view_idx == v)[0]:
                # R_all[i] = turn @ views[v]: the turn's cos/sin sit in its top-left block.
                turn = R_all[i] @ views[v].T
                c, s = float(turn[0, 0]), float(turn[1, 0])
                centre = (K[0, 2], K[1, 2])
                images.append(_rotate_image(rgb, c, s, centre, grey))
                masks.append(_rotate_image(mask, c, s, centre, 0))
            if progress is not None:
                progress(n + 1, len(np.unique(view_idx)))
    finally:
        renderer.release()
    mask_arr = np.stack(masks)  # (N, S, S) uint8
    boxes, extents, offsets = _silhouette_boxes(mask_arr, K, depth, cfg.enlarge)
    feats, weights = [], []
    for lo in range(0, len(images), batch):
        rgb = torch.from_numpy(np.stack(images[lo:lo + batch])).permute(0, 3, 1, 2)
        rgb = rgb.to(device).float() / 255.0
        m = torch.from_numpy(mask_arr[lo:lo + batch]).to(device).float()[:, None]
        b = boxes[lo:lo + batch].to(device)
        crops = crop_each(rgb - cfg.background, b, cfg.crop_size) + cfg.background
        f_ = features(crops)
        w = torch.nn.functional.adaptive_avg_pool2d(crop_each(m, b, cfg.crop_size),
                                                    f_.shape[-2:])[:, 0]
        feats.append(f_.half().cpu())
        weights.append(w.half().cpu())
    return ObjectBank(name=obj.name, features=torch.cat(feats), weights=torch.cat(weights),
                      rotations=torch.from_numpy(R_all).float(), extents=extents,
                      offsets=offsets)


def _silhouette_boxes(masks: np.ndarray, K: np.ndarray, depth: float, enlarge: float
                      ) -> tuple[Tensor, Tensor, Tensor]:
    """For silhouettes `masks (N, S, S)` of an object at `depth` on the axis of `K`: square
    crop boxes `(N, 4)`, extents `(N,)` and offsets `(N, 2)` (see ObjectBank)."""
    if not masks.any(axis=(1, 2)).all():
        raise ValueError("a template view shows nothing of the object")
    rows = masks.any(axis=2)
    cols = masks.any(axis=1)
    y0 = rows.argmax(1)
    y1 = masks.shape[1] - rows[:, ::-1].argmax(1)
    x0 = cols.argmax(1)
    x1 = masks.shape[2] - cols[:, ::-1].argmax(1)
    # Boxes as roi_align (aligned) and BOP's x, y, w, h take them: pixel u spans [u, u + 1],
    # so the box centre in K's convention (pixel u centred at u) is half a pixel less.
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    side = np.maximum(x1 - x0, y1 - y0)
    half = side * enlarge / 2
    boxes = np.stack([cx - half, cy - half, cx + half, cy + half], 1)
    f = (K[0, 0] + K[1, 1]) / 2
    extents = side * depth / f
    offsets = np.stack([K[0, 2] - (cx - 0.5), K[1, 2] - (cy - 0.5)], 1) * depth / f
    return (torch.from_numpy(boxes).float(), torch.from_numpy(extents).float(),
            torch.from_numpy(offsets).float())


def save_asset(path: str | Path, kind: str, key: str, values: dict[str, Any]) -> None:
    """Write a cached per-object asset (`kind`, cache `key`, tensors and plain values)
    atomically: a crash leaves no half file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save({"kind": kind, "key": key, **values}, tmp)
    tmp.replace(path)


def load_asset(path: str | Path, kind: str, key: str | None, what: str) -> dict[str, Any]:
    """An asset written by `save_asset` (weights_only); with `key`, it must be that one.
    WeightsError names the file and the asset (`what`)."""
    path = Path(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{path}: cannot read {what}: {exc}") from exc
    if not isinstance(data, dict) or data.get("kind") != kind:
        raise WeightsError(f"{path}: not a {what}")
    if key is not None and data.get("key") != key:
        raise WeightsError(f"{path}: {what} of another mesh or settings")
    return data


def save_bank(path: str | Path, bank: ObjectBank, cfg: BankConfig, key: str) -> None:
    """Write a bank atomically."""
    save_asset(path, KIND, key, {"config": cfg.to_dict(), **bank.to_dict()})


def load_bank(path: str | Path, key: str | None = None) -> ObjectBank:
    """A bank written by `save_bank`; with `key`, it must be that bank's."""
    data = load_asset(path, KIND, key, "template bank")
    return ObjectBank(**{f.name: data[f.name] for f in fields(ObjectBank)})


def load_or_build_banks(objects: Sequence[ObjectModel], cfg: BankConfig, *,
                        cache_dir: str | Path | None = None, features: CropFeatures | None = None,
                        device: str | torch.device = "cpu", rebuild: bool = False,
                        log: Callable[[str], None] | None = None) -> list[ObjectBank]:
    """Every object's bank: from the cache when its key matches, else built and cached."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    banks = []
    for obj in objects:
        key = bank_key(obj, cfg)
        path = bank_path(cache, obj, cfg)
        if path.is_file() and not rebuild:
            try:
                banks.append(load_bank(path, key))
                continue
            except WeightsError as exc:
                if log is not None:
                    log(f"templates: {exc}; building it again")
        if features is None:
            features = CropFeatures(cfg.blocks).to(device)
        start = time.perf_counter()
        bank = build_object_bank(obj, cfg, features, device=device)
        save_bank(path, bank, cfg, key)
        if log is not None:
            log(f"templates: {obj.name}: {len(bank)} templates in "
                f"{time.perf_counter() - start:.1f} s -> {path}")
        banks.append(bank)
    return banks
