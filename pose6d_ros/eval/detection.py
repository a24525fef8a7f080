"""Detection quality: AP at box IoU 0.5 (mean over classes) and recall / precision at a score
threshold, from detections and ground truth of a set of images."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import box_iou


@dataclass
class ImageDetections:
    """One image: detections `(n, 4)` x0, y0, x1, y1 boxes with `(n,)` labels and scores,
    and its ground truth `(m, 4)` boxes with `(m,)` labels."""

    boxes: Tensor
    labels: Tensor
    scores: Tensor
    gt_boxes: Tensor
    gt_labels: Tensor


def match(image: ImageDetections, iou: float = 0.5) -> Tensor:
    """`(n,)` bool: detection i (by decreasing score) is a true positive, greedily matched
    to an unmatched ground-truth box of its class with IoU >= `iou` (the best one)."""
    order = torch.argsort(image.scores, descending=True, stable=True)
    overlaps = box_iou(image.boxes[order], image.gt_boxes)
    overlaps[image.labels[order, None] != image.gt_labels[None]] = 0
    taken = torch.zeros(len(image.gt_boxes), dtype=torch.bool)
    hit = torch.zeros(len(order), dtype=torch.bool)
    for i in range(len(order)):
        if not len(taken):
            break
        best = torch.where(taken, torch.zeros_like(overlaps[i]), overlaps[i]).max(0)
        if float(best.values) >= iou:
            taken[best.indices] = hit[i] = True
    out = torch.zeros_like(hit)
    out[order] = hit
    return out


def _average_precision(scores: np.ndarray, hits: np.ndarray, positives: int) -> float:
    """All-point interpolated area under the precision-recall curve."""
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(hits[order])
    recall = tp / positives
    precision = tp / np.arange(1, len(order) + 1)
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    return float(np.sum(np.diff(np.concatenate([[0.0], recall])) * precision))


def detection_metrics(images: list[ImageDetections], *, score_threshold: float = 0.5,
                      iou: float = 0.5) -> dict[str, float]:
    """`ap50` (mean over the classes present in the ground truth), and `recall` and
    `precision` of the detections scoring at least `score_threshold`; `targets` counts the
    ground-truth instances."""
    hits = [match(im, iou) for im in images]
    scores = torch.cat([im.scores for im in images]).numpy() if images else np.zeros(0)
    labels = torch.cat([im.labels for im in images]).numpy() if images else np.zeros(0)
    hit = torch.cat(hits).numpy() if images else np.zeros(0, bool)
    gt = torch.cat([im.gt_labels for im in images]).numpy() if images else np.zeros(0)
    aps = [_average_precision(scores[labels == c], hit[labels == c], int((gt == c).sum()))
           for c in np.unique(gt)]
    kept = scores >= score_threshold
    return {"ap50": float(np.mean(aps)) if aps else 0.0,
            "recall": float(hit[kept].sum() / max(len(gt), 1)),
            "precision": float(hit[kept].sum() / max(int(kept.sum()), 1)),
            "targets": float(len(gt))}
