"""Poses of object instances from their image boxes: crop, CoordNet, correspondences, PnP.

The stage after detection, batched over every instance of an image on one device; the
evaluation and the estimator both call it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import roi_align

from pose6d_ros.core.objects import ObjectRegistry
from pose6d_ros.core.symmetry import SymmetryPools
from pose6d_ros.core.timing import StageTimer
from pose6d_ros.nets.coordnet import CoordNet
from pose6d_ros.nets.correspondences import (
    DEFAULT_CORRESPONDENCES,
    CorrespondenceOptions,
    select_correspondences,
)
from pose6d_ros.nets.precision import autocast, memory_format
from pose6d_ros.pnp import PnPOptions, solve_pnp
from pose6d_ros.pnp.solver import DEFAULT_OPTIONS

DEFAULT_ENLARGE = 1.5  # crop side / longer side of the visible box, as in training


def square_boxes(boxes_xywh: Tensor, enlarge: float = DEFAULT_ENLARGE) -> Tensor:
    """Square crop boxes `(B, 4)` (x0, y0, x1, y1) centred on boxes `(B, 4)` (x, y, w, h),
    sides `enlarge` times their longer side."""
    x, y, w, h = boxes_xywh.unbind(-1)
    half = torch.maximum(w, h).clamp_min(8.0 / enlarge) * enlarge / 2
    cx, cy = x + w / 2, y + h / 2
    return torch.stack([cx - half, cy - half, cx + half, cy + half], -1)


def crop_instances(image: Tensor, boxes: Tensor, size: int) -> Tensor:
    """Crops `(B, 3, size, size)` of `image (3, H, W)` in crop boxes `(B, 4)` (x0, y0, x1,
    y1), one `roi_align` for every instance."""
    return roi_align(image[None], [boxes], output_size=(size, size), spatial_scale=1.0,
                     sampling_ratio=2, aligned=True)


def crop_each(images: Tensor, boxes: Tensor, size: int) -> Tensor:
    """Crops `(B, C, size, size)`: box `b` of `boxes (B, 4)` (x0, y0, x1, y1) cut from
    `images[b]` `(B, C, H, W)` (e.g. each instance's mask from its own mask image)."""
    index = torch.arange(len(boxes), device=boxes.device, dtype=boxes.dtype)[:, None]
    return roi_align(images, torch.cat([index, boxes], 1), output_size=(size, size),
                     spatial_scale=1.0, sampling_ratio=2, aligned=True)


@dataclass
class CropPoses:
    """Poses of B instances."""

    R: Tensor  # (B, 3, 3) float64
    t: Tensor  # (B, 3) float64, metres
    status: Tensor  # (B,) PnPStatus values
    inliers: Tensor  # (B,) PnP inliers used
    points: Tensor  # (B,) correspondences given to PnP
    score: Tensor  # (B,) inlier ratio, in [0, 1]; 0 when failed
    crop_boxes: Tensor  # (B, 4) x0, y0, x1, y1
    mask: Tensor  # (B, S, S) CoordNet's visible-mask probability over each crop


class CoordPoseEstimator:
    """CoordNet + correspondence selection + PnP (+ symmetry canonicalisation); the network
    runs under autocast with `dtype` when given.

    The network's heads are those of the first `num_objects` objects of the registry; an
    object added after it was trained has no head, and its instances come back without a
    pose (status TOO_FEW_POINTS, an empty mask) for other sources to fill.
    """

    def __init__(self, net: CoordNet, objects: ObjectRegistry, *,
                 device: str | torch.device = "cpu",
                 correspondences: CorrespondenceOptions = DEFAULT_CORRESPONDENCES,
                 pnp: PnPOptions = DEFAULT_OPTIONS, enlarge: float = DEFAULT_ENLARGE,
                 dtype: torch.dtype | None = None) -> None:
        if net.config.num_objects > len(objects):
            raise ValueError(f"weights are for {net.config.num_objects} objects, the objects "
                             f"YAML has {len(objects)}")
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.dtype = dtype  # autocast dtype of the network (None: float32)
        self.memory_format = memory_format(self.device)
        self.net.to(memory_format=self.memory_format)
        self.objects, self.enlarge = objects, enlarge
        self.corr_options, self.pnp_options = correspondences, pnp
        center, scale = objects.coordinate_normalisation()
        self.center = torch.from_numpy(center).float().to(self.device)
        self.scale = torch.from_numpy(scale).float().to(self.device)
        self.pools = SymmetryPools(objects, device=self.device)

    @torch.no_grad()
    def __call__(self, image: np.ndarray | Tensor, K: np.ndarray | Tensor, labels: Tensor,
                 boxes_xywh: Tensor, timer: StageTimer | None = None) -> CropPoses:
        """Poses for instances `labels (B,)` with visible boxes `(B, 4)` (x, y, w, h) in
        `image` ((H, W, 3) uint8 RGB array, or (3, H, W) float tensor in [0, 1]); stages
        "crops", "coordnet", "pnp" are marked on `timer` when given."""
        mark = timer.mark if timer is not None else (lambda stage: None)
        dev = self.device
        if isinstance(image, np.ndarray):
            image = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
            image = image.to(dev).float() / 255.0
        image = image.to(dev)
        K = torch.as_tensor(K, dtype=torch.float64, device=dev)
        labels = labels.to(dev)
        boxes = square_boxes(boxes_xywh.to(dev).float(), self.enlarge)
        crops = crop_instances(image, boxes, self.net.config.input_size)
        crops = crops.contiguous(memory_format=self.memory_format)
        mark("crops")
        heads = self.net.config.num_objects
        has_head = labels < heads
        with autocast(dev, self.dtype):
            out = self.net(crops, labels.clamp(max=heads - 1))
        mark("coordnet")
        corr = select_correspondences(out.xyz.float(), out.error.float(),
                                      out.mask_logit.float(), self.center[labels],
                                      self.scale[labels], boxes, self.corr_options)
        res = solve_pnp(corr.x2d.double(), corr.x3d.double(), K,
                        mask=corr.mask & has_head[:, None], options=self.pnp_options)
        R, t = self.pools.canonicalise(labels, res.R, res.t)
        inliers = res.inliers.sum(1)
        points = (corr.mask & has_head[:, None]).sum(1)
        score = inliers / points.clamp_min(1) * res.success
        mark("pnp")
        return CropPoses(R=R, t=t, status=res.status, inliers=inliers, points=points,
                         score=score, crop_boxes=boxes,
                         mask=torch.sigmoid(out.mask_logit.float())[:, 0]
                         * has_head[:, None, None])

