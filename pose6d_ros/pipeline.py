"""The single-image estimator: RGB image + intrinsics in, object poses out.

`Estimator.estimate(rgb, K)` runs detection, then the coarse poses of every instance,
batched on one device: CoordNet, correspondences and PnP, template retrieval, or both with
the better of each instance's hypotheses kept; then symmetry canonicalisation. The node,
the `pose6d predict` command and the demo all call it. `Estimator.track(rgb, K, poses)`
refines the previous frame's poses against a new frame instead (tracking mode).
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from pose6d_ros.core.camera import check_intrinsics
from pose6d_ros.core.depth import check_depth
from pose6d_ros.core.objects import load_objects
from pose6d_ros.core.symmetry import SymmetryPools
from pose6d_ros.core.timing import StageTimer
from pose6d_ros.nets.coord_poses import (
    DEFAULT_ENLARGE,
    CoordPoseEstimator,
    crop_each,
    square_boxes,
)
from pose6d_ros.nets.coordnet import WeightsError, load_coordnet
from pose6d_ros.nets.precision import network_dtype
from pose6d_ros.pnp import PnPStatus
from pose6d_ros.refine.depth import DepthConfig, DepthRefiner
from pose6d_ros.refine.region import RefineConfig, RegionRefiner
from pose6d_ros.refine.silhouette import MASK_THRESHOLD, SilhouetteScorer
from pose6d_ros.refine.viewpoint_models import ViewpointConfig, load_or_build_viewpoint_models
from pose6d_ros.templates.bank import BankConfig

if TYPE_CHECKING:
    from pose6d_ros.nets.detector import Detections
    from pose6d_ros.templates.retrieval import TemplateHypotheses


@dataclass
class EstimatorConfig:
    """Where the weights are and what counts as found; thresholds may change between calls."""

    objects: str  # objects YAML
    detector_weights: str | None  # Mask R-CNN weights (.pt); None: boxes must be given
    coordnet_weights: str | None  # CoordNet weights (.pt); None with coarse "templates"
    device: str = "auto"  # auto (CUDA when present), cpu, cuda, cuda:N
    # Where coarse poses come from: "coordnet" (CoordNet + PnP), "templates" (retrieval from
    # each object's template bank, no training needed) or "both" (each instance keeps the
    # hypothesis that agrees best with its mask; see pose6d_ros/refine/silhouette.py).
    coarse: str = "both"
    templates_cache: str | None = None  # template bank folder (default: ~/.cache/pose6d_ros)
    template_top_k: int = 5  # template hypotheses per instance
    templates: BankConfig = field(default_factory=BankConfig)  # how banks are built
    # Render-and-compare: every hypothesis is refined against the image (region-based,
    # pose6d_ros/refine/region.py) and the one whose contour (and silhouette, with a mask)
    # agrees best is kept.
    refine: str = "contour"  # "contour" or "none"
    refinement: RefineConfig = field(default_factory=RefineConfig)
    # `track`: contour iterations per tracked frame, on the two finest line spacings
    # (RefineConfig.tracking); read at every call.
    track_iterations: int = 6
    # `track`: a pose that moved more than this many object diameters within one frame is
    # unusable (score 0): the depth refiner slides an object that left the view onto the
    # surface behind it, where much of it agrees.
    track_max_move: float = 0.5
    viewpoints: ViewpointConfig = field(default_factory=ViewpointConfig)  # how models are built
    # With a depth image (`estimate(..., depth=)`): every hypothesis slides along its ray to
    # the measured surface, is refined by point-to-plane ICP (instead of the contour) and
    # verified against the depth (pose6d_ros/refine/depth.py). False ignores depth.
    use_depth: bool = True
    depth: DepthConfig = field(default_factory=DepthConfig)
    # Instances whose pose quality (the verification score, see ObjectPose.score) is below
    # this are dropped.
    min_pose_score: float = 0.0
    detection_score: float = 0.5  # minimum detector score
    min_inliers: int = 12  # fewer PnP inliers: the instance is dropped
    # A pose that cannot be the boxed object is dropped, not published: its projected
    # diameter over `max_size_mismatch` times the box's longer side or under 1 / that, or
    # its projected centre more than `max_centre_offset` box sides from the box centre.
    # 0 switches a check off. Loose on purpose: an occluded object's box is only its
    # visible part.
    max_size_mismatch: float = 4.0
    max_centre_offset: float = 1.0
    max_instances: int = 16  # per image, best detector scores first
    # Network arithmetic: auto (bf16 on CUDA, fp32 on the CPU), fp32, bf16, fp16 (CUDA only).
    # Correspondences and PnP are always float32/float64.
    precision: str = "auto"
    # On CUDA, wait for the device at each stage so per-stage timings are its own (a sync
    # per stage; off, only the total is the frame's).
    sync_timings: bool = False

    def __post_init__(self) -> None:
        if self.coarse not in COARSE_SOURCES:
            raise ValueError(f"coarse: expected one of {COARSE_SOURCES}, got {self.coarse!r}")
        if self.refine not in REFINE_MODES:
            raise ValueError(f"refine: expected one of {REFINE_MODES}, got {self.refine!r}")
        if self.track_iterations < 0:
            raise ValueError(f"track_iterations: expected >= 0, got {self.track_iterations}")
        if self.track_max_move <= 0:
            raise ValueError(f"track_max_move: expected > 0, got {self.track_max_move}")
        if self.coordnet_weights is None and self.coarse != "templates":
            raise ValueError(f"coarse {self.coarse!r} needs CoordNet weights "
                             "(coarse 'templates' does not)")


COARSE_SOURCES = ("coordnet", "templates", "both")
REFINE_MODES = ("contour", "none")
DEFAULT_MASK_CROP = 64  # pixels of a detector mask's crop, for silhouette checks


@dataclass
class ObjectPose:
    """One object instance found in an image: `T_cam_obj` = (R, t) of the mesh origin."""

    name: str  # object name from the objects YAML
    label: int  # index of the object in the objects YAML
    object_id: int  # the object's id (BOP obj_id)
    instance: int  # index among this image's instances of the same object, by score
    # In [0, 1]: the detection score times the pose's quality. With refinement (default),
    # the share of its contour points that the image confirms times the hypothesis's own
    # score (PnP inlier ratio or template similarity), times the silhouette IoU with the
    # instance mask where there is one; without refinement, the IoU when hypotheses were
    # compared, else the hypothesis's own score.
    score: float
    R: np.ndarray  # (3, 3) float64
    t: np.ndarray  # (3,) float64, metres
    inliers: int  # PnP inliers (0 for a template pose)
    box: tuple[float, float, float, float]  # detected visible box x, y, w, h (pixels)
    timings: dict[str, float] = field(default_factory=dict)  # ms per stage, this image


@dataclass
class Boxes:
    """Known instances of an image (e.g. ground truth), instead of the detector's."""

    labels: Tensor  # (n,) object indices in the objects YAML
    boxes_xywh: Tensor  # (n, 4) visible boxes x, y, w, h
    scores: Tensor | None = None  # (n,) in [0, 1]; default 1


def resolve_device(name: str) -> torch.device:
    """`auto` is CUDA when present, else the CPU; other names as torch spells them."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def consistent_with_boxes(R: Tensor, t: Tensor, K: Tensor, boxes_xywh: Tensor,
                          centres: Tensor, diameters: Tensor, *, max_size_mismatch: float,
                          max_centre_offset: float) -> Tensor:
    """`(B,)` bool: pose `R (B, 3, 3)`, `t (B, 3)` of objects with model-frame `centres
    (B, 3)` and `diameters (B,)` (metres) projects through `K (3, 3)` where its box
    `(B, 4)` x, y, w, h says (sizes within the mismatch factor, centre within the offset, in
    box sides; 0 skips a test). Poses behind the camera fail."""
    c = (R @ centres.to(R)[..., None])[..., 0] + t  # (B, 3) camera frame
    z = c[:, 2]
    ok = z > 0
    side = boxes_xywh[:, 2:].max(1).values.to(R).clamp_min(1.0)
    if max_size_mismatch > 0:
        ratio = diameters.to(R) * K[0, 0] / z.clamp_min(1e-9) / side
        ok &= (ratio <= max_size_mismatch) & (ratio >= 1.0 / max_size_mismatch)
    if max_centre_offset > 0:
        uv = (c @ K.T)[:, :2] / z.clamp_min(1e-9)[:, None]
        mid = boxes_xywh[:, :2].to(R) + boxes_xywh[:, 2:].to(R) / 2
        ok &= ((uv - mid).abs().max(1).values / side) <= max_centre_offset
    return ok


def instance_indices(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Per instance `(n,)`, its rank by descending score among instances of its label."""
    order = np.lexsort((-scores, labels))  # by label, then score
    ranks = np.empty(len(labels), np.int64)
    sorted_labels = labels[order]
    starts = np.searchsorted(sorted_labels, sorted_labels, side="left")
    ranks[order] = np.arange(len(labels)) - starts
    return ranks


class Estimator:
    """Detector + CoordNet + PnP for the objects of one objects YAML, on one device."""

    def __init__(self, config: EstimatorConfig) -> None:
        self.config = config
        self.device = resolve_device(config.device)
        dtype = network_dtype(config.precision, self.device)
        self.objects = load_objects(config.objects)
        self.detector = None
        if config.detector_weights is not None:
            from pose6d_ros.nets.detector import Detector, load_detector

            model, dcfg = load_detector(config.detector_weights, self.device)
            if dcfg.num_classes > len(self.objects):
                raise WeightsError(f"{config.detector_weights}: detector weights are for "
                                   f"{dcfg.num_classes} objects, {config.objects} has "
                                   f"{len(self.objects)}")
            # Objects added after the detector was trained (pose6d onboard) come last in
            # the YAML: the detector still finds the ones it knows.
            unknown = [o.name for o in self.objects][dcfg.num_classes:]
            if unknown:
                _log(f"detector: not trained on {', '.join(unknown)}: they are not detected "
                     "(boxes given offline still get poses)")
            self.detector = Detector(model, device=self.device, dtype=dtype)
        self.coords = None
        if config.coarse != "templates":
            net = load_coordnet(config.coordnet_weights, self.device)
            headless = [o.name for o in self.objects][net.config.num_objects:]
            if headless and config.coarse == "coordnet":
                raise WeightsError(f"{config.coordnet_weights}: no CoordNet head for "
                                   f"{', '.join(headless)} (coarse 'both' or 'templates' "
                                   "give them template poses)")
            if headless:
                _log(f"coarse: no CoordNet head for {', '.join(headless)}: template poses")
            self.coords = CoordPoseEstimator(net, self.objects, device=self.device,
                                             dtype=dtype)
        self.templates = None
        if config.coarse != "coordnet":
            from pose6d_ros.templates.bank import load_or_build_banks
            from pose6d_ros.templates.retrieval import TemplateMatcher

            bank_cfg = config.templates
            banks = load_or_build_banks(self.objects, bank_cfg,
                                        cache_dir=config.templates_cache, device=self.device,
                                        log=_log)
            self.templates = TemplateMatcher(banks, bank_cfg, device=self.device,
                                             top_k=config.template_top_k)
        self.refiner = self.depth_refiner = None
        if config.refine == "contour" or config.use_depth:
            models = load_or_build_viewpoint_models(self.objects, config.viewpoints,
                                                    cache_dir=config.templates_cache, log=_log)
            if config.refine == "contour":
                self.refiner = RegionRefiner(models, config.refinement, device=self.device)
            if config.use_depth:
                self.depth_refiner = DepthRefiner(models, config.depth, device=self.device)
        self.silhouettes = SilhouetteScorer(self.objects, device=self.device)
        self.pools = SymmetryPools(self.objects, device=self.device)
        center, _ = self.objects.coordinate_normalisation()
        self.centers = torch.from_numpy(center).double().to(self.device)
        self.diameters = torch.tensor([o.diameter for o in self.objects], dtype=torch.float64,
                                      device=self.device)
        # Per-stage ms of the latest `estimate` call, also when it found nothing.
        self.last_timings: dict[str, float] = {}
        # The detector's output of the latest `estimate` call (on the device), before PnP
        # drops any instance; None when the boxes were given.
        self.last_detections: Detections | None = None
        self._tracker: tuple[int, RegionRefiner] | None = None  # `track`'s refiner, by iterations
        self._half_extents: Tensor | None = None  # (O, 3) metres, made on the first `track`

    def estimate(self, rgb: np.ndarray, K: np.ndarray, boxes: Boxes | None = None,
                 depth: np.ndarray | None = None) -> list[ObjectPose]:
        """Poses of the objects in `rgb (H, W, 3)` uint8 seen through `K (3, 3)`, best score
        first; with `boxes`, of those instances instead of the detector's; with `depth
        (H, W)` float32 metres registered to `rgb` (0 = no reading), depth-refined.

        Raises DepthError (a ValueError) for depth that does not fit the image."""
        cfg = self.config
        depth = _checked_inputs(rgb, depth)
        K_t = _checked_intrinsics(K)
        timer = StageTimer(self.device, sync=cfg.sync_timings)
        image = _upload(rgb, self.device)
        timer.mark("upload")
        if boxes is None:
            if self.detector is None:
                raise ValueError("no detector weights configured: give the boxes")
            self.detector.score_threshold = cfg.detection_score
            self.detector.max_instances = cfg.max_instances
            det = self.last_detections = self.detector(image)
            labels, scores, xyxy = det.labels, det.scores, det.boxes
            xywh = torch.cat([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], 1)
        else:
            self.last_detections = None
            labels = boxes.labels.to(self.device)
            xywh = boxes.boxes_xywh.to(self.device).float()
            scores = (boxes.scores.to(self.device) if boxes.scores is not None
                      else torch.ones(len(labels), device=self.device))
        timer.mark("detect")
        if len(labels) == 0:
            self.last_timings = dict(timer.ms, total=timer.total_ms())
            return []
        K_dev = K_t.to(self.device)
        masks = None
        if self.last_detections is not None:
            masks = self.last_detections.masks
        depth_dev = None
        if depth is not None and self.depth_refiner is not None:
            depth_dev = torch.from_numpy(depth).to(self.device)
        poses = self._coarse(image, K_dev, labels, xywh, masks, depth_dev, timer)
        ok = poses.ok & (poses.quality >= cfg.min_pose_score)
        ok &= consistent_with_boxes(poses.R, poses.t, K_dev, xywh, self.centers[labels],
                                    self.diameters[labels],
                                    max_size_mismatch=cfg.max_size_mismatch,
                                    max_centre_offset=cfg.max_centre_offset)
        score = scores.double() * poses.quality
        # One transfer of everything the caller sees.
        host = torch.cat([labels[:, None].double(), score[:, None], poses.inliers[:, None],
                          ok[:, None], xywh.double(), poses.t, poses.R.flatten(1)], 1).cpu()
        timer.mark("download")
        host = host[host[:, 3] > 0].numpy()
        host = host[np.argsort(-host[:, 1], kind="stable")]
        lab = host[:, 0].astype(np.int64)
        ranks = instance_indices(lab, host[:, 1])
        timings = self.last_timings = dict(timer.ms, total=timer.total_ms())
        out = []
        for row, label, rank in zip(host, lab, ranks, strict=True):
            obj = self.objects[int(label)]
            out.append(ObjectPose(
                name=obj.name, label=int(label), object_id=obj.id, instance=int(rank),
                score=float(np.clip(row[1], 0.0, 1.0)), R=row[11:20].reshape(3, 3).copy(),
                t=row[8:11].copy(), inliers=int(row[2]), box=tuple(float(v) for v in row[4:8]),
                timings=timings))
        return out

    def can_track(self, depth: bool = False) -> bool:
        """Whether `track` can refine poses (`depth`: with a depth image): it needs the
        contour refiner (refine 'contour'), or with depth the depth refiner."""
        return self.refiner is not None or (depth and self.depth_refiner is not None)

    def track(self, rgb: np.ndarray, K: np.ndarray, poses: Sequence[ObjectPose],
              depth: np.ndarray | None = None) -> list[ObjectPose]:
        """The previous frame's `poses` refined against `rgb (H, W, 3)` uint8 seen through
        `K (3, 3)`: one hypothesis per pose, all in one batch, no detector, coarse stage or
        mask. With `depth (H, W)` float32 metres and `use_depth`, the depth refiner (as
        `estimate`), else the contour refiner over `track_iterations` iterations on its
        finest lines (`RefineConfig.tracking`). Same order as `poses`; each `score` is the
        verification alone (contour agreement with a confident contour, or the depth
        agreement; no detector score), 0 for an unusable pose (not finite, behind the
        camera, or moved more than `track_max_move` diameters); `box` is the projected
        bounding box of the mesh.

        Raises ValueError for a bad image or K, or when nothing can refine (`can_track`)."""
        cfg = self.config
        depth = _checked_inputs(rgb, depth)
        use_depth = depth is not None and self.depth_refiner is not None
        if not self.can_track(use_depth):
            raise ValueError("track: needs refine 'contour' (or a depth image with use_depth)")
        K_t = _checked_intrinsics(K)
        timer = StageTimer(self.device, sync=cfg.sync_timings)
        if not poses:
            self.last_timings = dict(timer.ms, total=timer.total_ms())
            return []
        dev = self.device
        K_dev = K_t.to(dev)
        labels = torch.tensor([p.label for p in poses], dtype=torch.long, device=dev)
        R = torch.from_numpy(np.stack([p.R for p in poses])).to(dev, torch.float64)
        t = torch.from_numpy(np.stack([p.t for p in poses])).to(dev, torch.float64)
        t_start = t
        if use_depth:
            timer.mark("upload")
            out = self.depth_refiner(torch.from_numpy(depth).to(dev), K_dev, labels, R, t)
            R, t, q = out.R, out.t, out.score
            timer.mark("depth")
        else:
            image = _upload(rgb, dev)
            timer.mark("upload")
            out = self._tracking_refiner(cfg.track_iterations)(image, K_dev, labels, R, t)
            R, t, q = out.R, out.t, out.contour
            timer.mark("refine")
        jumped = (t - t_start).norm(dim=1) > cfg.track_max_move * self.diameters[labels]
        R, t = self.pools.canonicalise(labels, R, t)
        ok = (torch.isfinite(R).flatten(1).all(1) & torch.isfinite(t).all(1) & (t[:, 2] > 0)
              & ~jumped)
        q = torch.where(ok, q.double().clamp(0.0, 1.0), torch.zeros_like(q, dtype=torch.float64))
        box = self._projected_boxes(labels, R, t, K_dev, rgb.shape[:2])
        host = torch.cat([q[:, None], box, t, R.flatten(1)], 1).cpu().numpy()
        timer.mark("download")
        timings = self.last_timings = dict(timer.ms, total=timer.total_ms())
        return [replace(p, score=float(row[0]), box=tuple(float(v) for v in row[1:5]),
                        t=row[5:8].copy(), R=row[8:17].reshape(3, 3).copy(), inliers=0,
                        timings=timings)
                for p, row in zip(poses, host, strict=True)]

    def _tracking_refiner(self, iterations: int) -> RegionRefiner:
        """The contour refiner with the tracking schedule of `iterations` (its views shared)."""
        cached = self._tracker
        if cached is None or cached[0] != iterations:
            refiner = copy.copy(self.refiner)
            refiner.config = self.config.refinement.tracking(iterations)
            self._tracker = cached = (iterations, refiner)
        return cached[1]

    def _projected_boxes(self, labels: Tensor, R: Tensor, t: Tensor, K: Tensor,
                         size: tuple[int, int]) -> Tensor:
        """`(N, 4)` x, y, w, h (pixels, clipped to the `size` (H, W) image) of the projected
        corners of each object's bounding box at `R (N, 3, 3)`, `t (N, 3)`."""
        if self._half_extents is None:
            _, half = self.objects.coordinate_normalisation()
            self._half_extents = torch.from_numpy(half).double().to(self.device)
        signs = torch.tensor([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1)
                              for sz in (-1, 1)], dtype=torch.float64, device=self.device)
        corners = self.centers[labels][:, None] + signs * self._half_extents[labels][:, None]
        cam = corners @ R.transpose(1, 2) + t[:, None]  # (N, 8, 3)
        uv = (cam @ K.T)[..., :2] / cam[..., 2:].clamp_min(1e-6)
        h, w = size
        lo = torch.stack([uv[..., 0].amin(1).clamp(0, w), uv[..., 1].amin(1).clamp(0, h)], 1)
        hi = torch.stack([uv[..., 0].amax(1).clamp(0, w), uv[..., 1].amax(1).clamp(0, h)], 1)
        return torch.cat([lo, hi - lo], 1)

    def _coarse(self, image: Tensor, K: Tensor, labels: Tensor, xywh: Tensor,
                masks: Tensor | None, depth: Tensor | None, timer: StageTimer) -> CoarsePoses:
        """Each instance's pose from CoordNet, the templates, or the better of both.

        Hypotheses: CoordNet's PnP pose (when it passes the inlier checks) and the
        templates' top k. With more than one and a mask to compare with (the detector's,
        else CoordNet's), the one whose silhouette has the highest IoU with the mask wins.
        """
        cfg = self.config
        n = len(labels)
        dev = self.device
        Rs, ts, valid, quality = [], [], [], []
        crop_boxes = square_boxes(xywh.float(), DEFAULT_ENLARGE)
        mask_crops = None
        inliers = torch.zeros(n, dtype=torch.float64, device=dev)
        if self.coords is not None:
            poses = self.coords(image, K, labels, xywh, timer=timer)
            ok = ((poses.status == int(PnPStatus.OK)) & (poses.inliers >= cfg.min_inliers)
                  & torch.isfinite(poses.R).flatten(1).all(1) & torch.isfinite(poses.t).all(1))
            Rs.append(poses.R[:, None])
            ts.append(poses.t[:, None])
            valid.append(ok[:, None])
            quality.append(poses.score[:, None].double())
            inliers = poses.inliers.double()
            crop_boxes, mask_crops = poses.crop_boxes, poses.mask
        if self.templates is not None:
            sim = self.templates.scores(image, labels, xywh)
            hyp = self.templates.select(sim, K, labels, xywh)
            if depth is not None and self.depth_refiner is not None and cfg.depth.search_k > 0:
                timer.mark("templates")
                hyp = hyp + self._depth_templates(sim, depth, K, labels, xywh)
                timer.mark("depth search")
            R_t, t_t = hyp.R, hyp.t
            k = R_t.shape[1]
            flat = labels[:, None].expand(-1, k).reshape(-1)
            R_c, t_c = self.pools.canonicalise(flat, R_t.reshape(-1, 3, 3), t_t.reshape(-1, 3))
            Rs.append(R_c.view(n, k, 3, 3))
            ts.append(t_c.view(n, k, 3))
            valid.append(torch.ones(n, k, dtype=torch.bool, device=dev))
            quality.append(hyp.score.double().clamp(0.0, 1.0))
            timer.mark("templates")
        R, t = torch.cat(Rs, 1), torch.cat(ts, 1)  # (B, H, 3, 3), (B, H, 3)
        ok, q = torch.cat(valid, 1), torch.cat(quality, 1)
        if depth is not None and self.depth_refiner is not None:
            # With depth, the depth term alone refines: on synthetic validation the contour
            # term before or after it lowered ADD(-S) (docs/depth.md).
            R, t, agree = self._depth(depth, K, labels, xywh, R, t, ok, masks)
            q = agree * q
            timer.mark("depth")
        elif self.refiner is not None:
            R, t, contour = self._refine(image, K, labels, R, t, ok, masks)
            q = contour * q  # geometry and appearance (PnP inliers, template similarity)
            timer.mark("refine")
        if masks is not None:  # the detector's, over the whole image
            mask_crops = crop_each(masks[:, None].float(), crop_boxes.float(),
                                   DEFAULT_MASK_CROP)[:, 0]
        if mask_crops is not None and (R.shape[1] > 1 or self.refiner is not None):
            iou = self.silhouettes.iou(labels, R, t, K, crop_boxes, mask_crops).double()
            # An empty mask (e.g. an object without a CoordNet head) says nothing: such an
            # instance keeps its hypotheses' own scores.
            has_mask = (mask_crops.flatten(1) > MASK_THRESHOLD).any(1)[:, None]
            agree = iou * q if self.refiner is not None else iou
            q = torch.where(has_mask, agree, q)
            timer.mark("verify")
        q = torch.where(ok, q, torch.full_like(q, -1.0))
        best = q.argmax(1)
        b = torch.arange(n, device=dev)
        is_pnp = best == 0 if self.coords is not None else torch.zeros_like(ok[:, 0])
        return CoarsePoses(R=R[b, best], t=t[b, best], quality=q[b, best].clamp(0.0, 1.0),
                           inliers=torch.where(is_pnp, inliers, torch.zeros_like(inliers)),
                           ok=ok[b, best] & torch.isfinite(R[b, best]).flatten(1).all(1)
                           & torch.isfinite(t[b, best]).all(1))

    def _refine(self, image: Tensor, K: Tensor, labels: Tensor, R: Tensor, t: Tensor,
                ok: Tensor, masks: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """Every hypothesis `R (B, H, 3, 3)`, `t (B, H, 3)` refined against the image,
        canonicalised again, and its contour agreement `(B, H)`."""
        B, H = R.shape[:2]
        flat, R0, t0, owner = _flatten_hypotheses(labels, R, t, ok)
        out = self.refiner(image, K, flat, R0, t0, masks, owner if masks is not None else None)
        R_c, t_c = self.pools.canonicalise(flat, out.R, out.t)
        return R_c.view(B, H, 3, 3), t_c.view(B, H, 3), out.contour.view(B, H)

    def _depth_templates(self, sim: Tensor, depth: Tensor, K: Tensor, labels: Tensor,
                         xywh: Tensor) -> TemplateHypotheses:
        """More template hypotheses, chosen by the depth image: every template of each
        instance (`sim (B, N)` their similarity), slid along its ray onto the measured
        surface, ranked by its agreement with it (plus a little similarity); the best
        `search_edge_pool` again with their silhouette's edges on the box's."""
        from pose6d_ros.templates.retrieval import TemplateHypotheses

        dcfg = self.config.depth
        B, N = sim.shape
        idx = torch.arange(N, device=sim.device).expand(B, -1)
        R, t = self.templates.poses(K, labels, xywh, idx)
        valid = torch.isfinite(sim)
        R = torch.where(valid[..., None, None], R, torch.eye(3, dtype=R.dtype, device=R.device))
        agree, t = self._search(depth, K, labels, xywh, R, t)
        rank = (agree + dcfg.search_similarity * sim).masked_fill(~valid, -torch.inf)
        b = torch.arange(B, device=sim.device)[:, None]
        M = min(dcfg.search_edge_pool, N)
        if M > 0:
            top = rank.topk(M, dim=1).indices  # (B, M)
            moved = self.depth_refiner.edge_placements(
                K, labels[:, None].expand(-1, M).reshape(-1), R[b, top].reshape(-1, 3, 3),
                t[b, top].reshape(-1, 3), xywh[:, None].expand(-1, M, -1).reshape(-1, 4))
            S = moved.shape[1]
            idx_e = top[:, :, None].expand(-1, -1, S).reshape(B, M * S)
            R_e = R[b, idx_e]
            agree_e, t_e = self._search(depth, K, labels, xywh, R_e, moved.view(B, M * S, 3))
            rank = torch.cat([rank, agree_e + dcfg.search_similarity * sim.gather(1, idx_e)], 1)
            R, t, idx = torch.cat([R, R_e], 1), torch.cat([t, t_e], 1), torch.cat([idx, idx_e], 1)
        pick = self.templates.pick(rank, labels, dcfg.search_k, dcfg.search_separation_deg, idx)
        template = idx.gather(1, pick)
        return TemplateHypotheses(R=R[b, pick], t=t[b, pick], score=sim.gather(1, template),
                                  template=template)

    def _search(self, depth: Tensor, K: Tensor, labels: Tensor, xywh: Tensor, R: Tensor,
                t: Tensor) -> tuple[Tensor, Tensor]:
        """Rough poses `R (B, M, 3, 3)`, `t (B, M, 3)` of instances `labels (B,)` with visible
        boxes `xywh (B, 4)` slid onto the depth image: their depth agreement `(B, M)` and
        their slid translations `(B, M, 3)` (`DepthRefiner.search`)."""
        B, M = R.shape[:2]
        out = self.depth_refiner.search(depth, K, labels[:, None].expand(-1, M).reshape(-1),
                                        R.reshape(-1, 3, 3), t.reshape(-1, 3),
                                        boxes=xywh[:, None].expand(-1, M, -1).reshape(-1, 4))
        return out.score.view(B, M).float(), out.t.view(B, M, 3).to(t)

    def _depth(self, depth: Tensor, K: Tensor, labels: Tensor, xywh: Tensor, R: Tensor,
               t: Tensor, ok: Tensor, masks: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """Every hypothesis `R (B, H, 3, 3)`, `t (B, H, 3)` of the instances with visible
        boxes `xywh (B, 4)`, aligned with and refined on the depth image `(H, W)` metres,
        canonicalised again, and its depth agreement `(B, H)`."""
        B, H = R.shape[:2]
        flat, R0, t0, owner = _flatten_hypotheses(labels, R, t, ok)
        out = self.depth_refiner(depth, K, flat, R0, t0, masks,
                                 owner if masks is not None else None, boxes=xywh[owner])
        R_c, t_c = self.pools.canonicalise(flat, out.R, out.t)
        return R_c.view(B, H, 3, 3), t_c.view(B, H, 3), out.score.view(B, H)


@dataclass
class CoarsePoses:
    """The pose kept for each of B instances."""

    R: Tensor  # (B, 3, 3) float64
    t: Tensor  # (B, 3) float64
    quality: Tensor  # (B,) in [0, 1]
    inliers: Tensor  # (B,) PnP inliers, 0 for a template pose
    ok: Tensor  # (B,) bool: a usable pose


def _flatten_hypotheses(labels: Tensor, R: Tensor, t: Tensor, ok: Tensor
                        ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Hypotheses `R (B, H, 3, 3)`, `t (B, H, 3)` as `B * H` rows: their labels, poses and
    owning instance. Unusable ones (`ok (B, H)` false, e.g. a failed PnP) get a harmless
    stand-in; they stay unusable."""
    B, H = R.shape[:2]
    good = ok.reshape(-1)
    R0 = torch.where(good[:, None, None], R.reshape(-1, 3, 3),
                     torch.eye(3, dtype=R.dtype, device=R.device))
    t0 = torch.where(good[:, None], t.reshape(-1, 3),
                     torch.tensor([0.0, 0.0, 1.0], dtype=t.dtype, device=t.device))
    owner = torch.arange(B, device=R.device)[:, None].expand(-1, H).reshape(-1)
    return labels[owner], R0, t0, owner


def _checked_inputs(rgb: np.ndarray, depth: np.ndarray | None) -> np.ndarray | None:
    """Raise ValueError unless `rgb` is `(H, W, 3)` uint8; `depth` checked against it
    (DepthError, a ValueError), or None."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or rgb.size == 0:
        raise ValueError(f"image: expected (H, W, 3) uint8 RGB, got {rgb.shape} {rgb.dtype}")
    return None if depth is None else check_depth(depth, rgb.shape)


def _checked_intrinsics(K: np.ndarray) -> Tensor:
    """`K (3, 3)` as a float64 tensor, checked."""
    K_t = torch.as_tensor(np.asarray(K, np.float64))
    check_intrinsics(K_t, "K")
    return K_t


def _upload(rgb: np.ndarray, device: torch.device) -> Tensor:
    """`rgb (H, W, 3)` uint8 as a `(3, H, W)` float image in [0, 1] on `device`."""
    image = torch.from_numpy(np.ascontiguousarray(rgb)).to(device)
    return image.permute(2, 0, 1).float().div_(255.0)


def _log(message: str) -> None:
    print(message, file=sys.stderr)
