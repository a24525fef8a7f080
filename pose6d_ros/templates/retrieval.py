"""Coarse poses of detections by template retrieval: one batched matmul per frame.

Each detection's crop (the estimator's square crop around its box) goes through the frozen
features; its similarity to a template is the mean over the template's silhouette cells of
the cosine between the two cells' features. The best templates give rotations (allocentric,
turned onto the ray through the object) and translations (depth from the box size against
the template's, position from the box centre and the template's offset).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from pose6d_ros.core.rotations import ray_rotation
from pose6d_ros.nets.coord_poses import crop_instances, square_boxes
from pose6d_ros.templates.bank import BankConfig, ObjectBank
from pose6d_ros.templates.features import CropFeatures


@dataclass
class TemplateHypotheses:
    """The k best templates of B detections, best first."""

    R: Tensor  # (B, k, 3, 3) float64 T_cam_obj rotation
    t: Tensor  # (B, k, 3) float64 metres
    score: Tensor  # (B, k) mean cosine over the template's silhouette, in [-1, 1]
    template: Tensor  # (B, k) index into the object's bank

    def __add__(self, other: TemplateHypotheses) -> TemplateHypotheses:
        """Both sets of hypotheses of the same B detections, `self`'s first."""
        return TemplateHypotheses(*(torch.cat([a, b], 1) for a, b in (
            (self.R, other.R), (self.t, other.t), (self.score, other.score),
            (self.template, other.template))))


class TemplateMatcher:
    """Template banks of every object of a registry, stacked on one device, and retrieval."""

    def __init__(self, banks: Sequence[ObjectBank], cfg: BankConfig, *,
                 features: CropFeatures | None = None, device: str | torch.device = "cpu",
                 top_k: int = 5) -> None:
        self.device = torch.device(device)
        self.cfg, self.top_k = cfg, top_k
        self.features = (features or CropFeatures(cfg.blocks)).to(self.device)
        n_max = max(len(b) for b in banks)
        C, h, w = banks[0].features.shape[1:]
        dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        # (O, N, D): each template's cells weighted by its silhouette and divided by the
        # silhouette's area, so a dot product with a crop's unit cells is the mean cosine.
        mats = torch.zeros(len(banks), n_max, C * h * w, dtype=dtype)
        valid = torch.zeros(len(banks), n_max, dtype=torch.bool)
        rot = torch.zeros(len(banks), n_max, 3, 3)
        ext = torch.ones(len(banks), n_max)
        off = torch.zeros(len(banks), n_max, 2)
        for i, b in enumerate(banks):
            wgt = b.weights.float()
            wgt = wgt / wgt.flatten(1).sum(1).clamp_min(1e-6)[:, None, None]
            mats[i, :len(b)] = (b.features.float() * wgt[:, None]).flatten(1).to(dtype)
            valid[i, :len(b)] = True
            rot[i, :len(b)], ext[i, :len(b)], off[i, :len(b)] = b.rotations, b.extents, b.offsets
        self.matrix = mats.to(self.device)
        self.valid = valid.to(self.device)
        self.rotations = rot.double().to(self.device)
        self.extents = ext.double().to(self.device)
        self.offsets = off.double().to(self.device)
        self.sizes = [len(b) for b in banks]

    @torch.no_grad()
    def similarities(self, crops: Tensor, labels: Tensor) -> Tensor:
        """`(B, N)` similarity of crops `(B, 3, S, S)` in [0, 1] to their object's templates
        (`labels (B,)`); -inf past the end of a bank."""
        q = self.features(crops).flatten(1).to(self.matrix.dtype)  # (B, D)
        n_obj, N, D = self.matrix.shape
        # Against every object's templates at once: one matmul, no per-object loop.
        sim = (q @ self.matrix.view(n_obj * N, D).T).view(len(q), n_obj, N)
        b = torch.arange(len(q), device=q.device)
        sim = sim[b, labels].float()
        return sim.masked_fill(~self.valid[labels], -torch.inf)

    @torch.no_grad()
    def __call__(self, image: Tensor, K: Tensor, labels: Tensor, boxes_xywh: Tensor
                 ) -> TemplateHypotheses:
        """The `top_k` template poses of detections `labels (B,)` with visible boxes
        `boxes_xywh (B, 4)` in `image (3, H, W)` float in [0, 1] through `K (3, 3)`."""
        return self.select(self.scores(image, labels, boxes_xywh), K, labels, boxes_xywh)

    def select(self, sim: Tensor, K: Tensor, labels: Tensor, boxes_xywh: Tensor, *,
               k: int | None = None, rank: Tensor | None = None,
               separation_deg: float = 0.0) -> TemplateHypotheses:
        """The best `k` (default `top_k`) templates by `rank (B, N)` (default the similarity
        `sim (B, N)` of `scores`) as hypotheses, scored by their similarity; at least
        `separation_deg` apart in rotation when > 0 (`spread_topk`)."""
        rank = sim if rank is None else rank
        idx = self.pick(rank, labels, self.top_k if k is None else k, separation_deg)
        R, t = self.poses(K, labels, boxes_xywh, idx)
        return TemplateHypotheses(R=R, t=t, score=sim.gather(1, idx), template=idx)

    def pick(self, rank: Tensor, labels: Tensor, k: int, separation_deg: float = 0.0,
             template: Tensor | None = None) -> Tensor:
        """Columns `(B, k)` of the `k` best of `rank (B, M)`, at least `separation_deg`
        apart in rotation when > 0 (`spread_topk`); column j is template `template[:, j]`
        (default j) of the detection's object `labels (B,)`."""
        k = min(k, rank.shape[1])
        if separation_deg <= 0 or k <= 1:
            return rank.topk(k, dim=1).indices
        rotations = self.rotations[labels.to(self.device)]  # (B, N, 3, 3)
        if template is not None:
            b = torch.arange(len(rank), device=rank.device)[:, None]
            rotations = rotations[b, template]
        return spread_topk(rank, rotations, k, separation_deg)[1]

    @torch.no_grad()
    def scores(self, image: Tensor, labels: Tensor, boxes_xywh: Tensor) -> Tensor:
        """`(B, N)` similarity of detections `labels (B,)` in boxes `boxes_xywh (B, 4)` of
        `image (3, H, W)` to each of their object's templates; -inf past a bank's end."""
        dev = self.device
        crops = crop_instances(image.to(dev),
                               square_boxes(boxes_xywh.to(dev).float(), self.cfg.enlarge),
                               self.cfg.crop_size)
        return self.similarities(crops, labels.to(dev))

    def poses(self, K: Tensor, labels: Tensor, boxes_xywh: Tensor, idx: Tensor
              ) -> tuple[Tensor, Tensor]:
        """Poses `(B, k, 3, 3)`, `(B, k, 3)` float64 of templates `idx (B, k)` of detections
        `labels (B,)` in boxes `boxes_xywh (B, 4)` seen through `K (3, 3)`."""
        dev = self.device
        lab = labels.to(dev)[:, None].expand_as(idx)
        t = box_translation(boxes_xywh.to(dev).double()[:, None].expand(-1, idx.shape[1], -1),
                            self.extents[lab, idx], self.offsets[lab, idx],
                            K.to(dev, torch.float64))
        return ray_rotation(t) @ self.rotations[lab, idx], t


def spread_topk(sim: Tensor, rotations: Tensor, k: int, min_separation_deg: float,
                pool: int = 64) -> tuple[Tensor, Tensor]:
    """Scores and indices `(B, k)` of k templates per row of `sim (B, N)`, picked greedily
    best first among the `pool` most similar, each at least `min_separation_deg` in
    rotation from those picked before (`rotations (B, N, 3, 3)`); when too few are that far
    apart, the next most similar fill the rest.

    Neighbouring templates look alike, so a plain top k often holds one view five times;
    a refinement started from any of them ends in the same place."""
    m = min(max(pool, k), sim.shape[1])
    score, idx = sim.topk(m, dim=1)  # (B, m), best first
    b = torch.arange(len(sim), device=sim.device)
    R = rotations[b[:, None], idx]  # (B, m, 3, 3)
    cos = (torch.einsum("bmij,bnij->bmn", R, R) - 1.0) / 2.0  # cos of the angle between
    near = cos > math.cos(math.radians(min_separation_deg))  # (B, m, m)
    free = torch.isfinite(score)  # not yet picked nor too close to a pick
    left = free.clone()  # not yet picked
    picks = []
    for _ in range(k):  # k steps, batched over B
        j = torch.where(free.any(1), first_true(free), first_true(left))
        picks.append(j)
        free &= ~near[b, j]
        free[b, j] = False
        left[b, j] = False
    pick = torch.stack(picks, 1)  # (B, k)
    return score.gather(1, pick), idx.gather(1, pick)


def first_true(mask: Tensor) -> Tensor:
    """Index `(B,)` of the first True of each row of `mask (B, m)` (0 for none)."""
    return mask.to(torch.uint8).argmax(1)


def box_translation(boxes_xywh: Tensor, extents: Tensor, offsets: Tensor, K: Tensor) -> Tensor:
    """Translations `(*, 3)` of objects in boxes `(*, 4)` x, y, w, h whose templates say the
    longer box side is `extents (*)` metres at the object's depth and the origin projects
    `offsets (*, 2)` metres (at that depth) from the box centre; `K (3, 3)`."""
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    side = boxes_xywh[..., 2:].max(-1).values.clamp_min(1.0)
    z = (fx + fy) / 2 * extents / side
    # Pixel u spans [u, u + 1] in x, y, w, h boxes and is centred at u in K's convention.
    u = boxes_xywh[..., 0] + boxes_xywh[..., 2] / 2 - 0.5 + offsets[..., 0] * fx / z
    v = boxes_xywh[..., 1] + boxes_xywh[..., 3] / 2 - 0.5 + offsets[..., 1] * fy / z
    return torch.stack([(u - cx) / fx * z, (v - cy) / fy * z, z], -1)
