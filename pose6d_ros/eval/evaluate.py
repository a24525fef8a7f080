"""`pose6d eval`: pose accuracy of the estimator on a BOP-format dataset.

Targets are the annotated instances at least 10 % visible (BOP's). With ground-truth boxes
each target's crop goes through CoordNet, correspondence selection and PnP; with the
detector, the whole image does, and each target takes the estimate of its object whose box
overlaps it most. Reported: ADD(-S) recall at 0.1 d per object, BOP's
AR_MSSD and AR_MSPD, rotation/translation errors, and with the detector its own figures
(AP50, recall and precision of its boxes at the estimator's score threshold); written: a
BOP19 results CSV, a JSON of the figures and a PNG of ADD(-S) recall curves.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from pose6d_ros.core.boxes import box_iou_xywh
from pose6d_ros.core.depth import DepthError
from pose6d_ros.core.draw import draw_poses
from pose6d_ros.core.objects import ObjectRegistry
from pose6d_ros.core.symmetry import SymmetryPools
from pose6d_ros.data.bop import (
    BopFormatError,
    BopResult,
    GroundTruth,
    load_depth_scales,
    load_scene_camera,
    load_scene_camera_poses,
    load_scene_gt,
    load_scene_gt_info,
    read_depth,
    read_image,
    write_results_csv,
    write_rgb,
)
from pose6d_ros.eval import metrics
from pose6d_ros.eval.detection import ImageDetections, detection_metrics
from pose6d_ros.eval.instances import INSTANCES_CSV, write_instances_csv
from pose6d_ros.fusion.camera_poses import CameraPoseEstimator
from pose6d_ros.fusion.multiview import MultiViewFuser, View, poses_in_view
from pose6d_ros.pipeline import Boxes, Estimator, ObjectPose

if TYPE_CHECKING:
    from pose6d_ros.nets.detector import Detections

MIN_VISIB_FRACT = 0.1  # BOP19 evaluates instances at least this visible
MATCH_IOU = 0.5  # a detector box matches a target from this overlap on
RECALL_THRESHOLDS = np.linspace(0.0, 0.5, 51)  # ADD(-S) thresholds, fractions of diameter


def find_scenes(path: str | Path, split: str | None = None) -> list[Path]:
    """Scene folders (with scene_gt.json) of a BOP dataset: `path` itself, `path/split/*`,
    or `path/*`."""
    path = Path(path)
    if (path / "scene_gt.json").exists():
        return [path]
    base = path / split if split and (path / split).is_dir() else path
    scenes = sorted(p for p in base.iterdir() if (p / "scene_gt.json").exists()) \
        if base.is_dir() else []
    if not scenes:
        raise FileNotFoundError(f"{path}: no BOP scene folders (scene_gt.json) found")
    return scenes


def _rgb_path(scene: Path, im_id: int) -> Path:
    for ext in (".png", ".jpg"):
        p = scene / "rgb" / f"{im_id:06d}{ext}"
        if p.exists():
            return p
    raise FileNotFoundError(f"{scene / 'rgb'}: no image {im_id:06d}.png or .jpg")


@dataclass
class EvalReport:
    """Per-instance errors and the summary figures."""

    objects: list[str]
    labels: list[int] = field(default_factory=list)
    add: list[float] = field(default_factory=list)  # ADD or ADD-S, metres
    mssd: list[float] = field(default_factory=list)
    mspd: list[float] = field(default_factory=list)
    re: list[float] = field(default_factory=list)  # degrees
    te: list[float] = field(default_factory=list)  # metres
    ok: list[bool] = field(default_factory=list)  # a pose was found
    scene_ids: list[int] = field(default_factory=list)
    im_ids: list[int] = field(default_factory=list)
    gt_index: list[int] = field(default_factory=list)  # the target's place in scene_gt
    scores: list[float] = field(default_factory=list)
    results: list[BopResult] = field(default_factory=list)
    detections: list[ImageDetections] = field(default_factory=list)  # with the detector
    image_width: int = 640
    depth_images: int = 0  # images whose depth the estimator was given
    depth_rejected: int = 0  # images whose depth failed its checks (then RGB only)
    seconds: float = 0.0
    fused: EvalReport | None = None  # the same targets, multi-view fused (`views` > 1)
    # With estimated extrinsics, one row per non-reference view of a group: placed, weak,
    # support, and its errors against scene_camera.json's poses where it has them.
    placements: list[dict[str, Any]] = field(default_factory=list)

    def summary(self, diameters: np.ndarray) -> dict[str, Any]:
        """Figures as plain numbers (JSON-ready)."""
        lab = np.asarray(self.labels, int)
        add = np.asarray(self.add)
        d = diameters[lab]
        hit = add < 0.1 * d
        per_object = {}
        for i, name in enumerate(self.objects):
            sel = lab == i
            if sel.any():
                per_object[name] = {"instances": int(sel.sum()),
                                    "add_0.1d": float(hit[sel].mean()),
                                    "failed": int((~np.asarray(self.ok, bool)[sel]).sum())}
        mssd = torch.tensor(self.mssd, dtype=torch.float64)
        ar_mssd = metrics.average_recall_mssd(mssd, torch.from_numpy(d))
        ar_mspd = metrics.average_recall_mspd(torch.tensor(self.mspd, dtype=torch.float64),
                                              self.image_width)
        re, te = np.asarray(self.re), np.asarray(self.te)
        fin = np.isfinite(re)
        # Every kept detection already passed the estimator's score threshold.
        detection = (detection_metrics(self.detections, score_threshold=0.0)
                     if self.detections else None)
        return {
            "instances": len(lab), "failed": int((~np.asarray(self.ok, bool)).sum()),
            "add_0.1d": float(hit.mean()) if len(lab) else 0.0,
            "add_0.1d_mean_over_objects": float(np.mean([v["add_0.1d"]
                                                         for v in per_object.values()]))
            if per_object else 0.0,
            "ar_mssd": ar_mssd, "ar_mspd": ar_mspd, "ar": (ar_mssd + ar_mspd) / 2,
            "median_re_deg": float(np.median(re[fin])) if fin.any() else float("nan"),
            "median_te_mm": float(np.median(te[fin]) * 1e3) if fin.any() else float("nan"),
            "per_object": per_object, "detection": detection, "seconds": self.seconds,
            "depth_images": self.depth_images, "depth_rejected": self.depth_rejected,
            "calibration": (score_calibration(np.asarray(self.scores), hit,
                                              np.asarray(self.ok, bool))
                            if len(self.scores) == len(lab) else None),
            **({"camera_poses": placement_summary(self.placements)} if self.placements
               else {}),
        }


def placement_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Estimated camera poses: how many views were placed (and on one object only), and
    the median errors of the placed ones against the known poses."""
    placed = [r for r in rows if r["placed"]]
    re = np.array([r["re_deg"] for r in placed if r.get("re_deg") is not None])
    te = np.array([r["te_mm"] for r in placed if r.get("te_mm") is not None])
    return {"views": len(rows), "placed": len(placed),
            "weak": sum(bool(r["weak"]) for r in placed),
            "median_re_deg": float(np.median(re)) if len(re) else None,
            "median_te_mm": float(np.median(te)) if len(te) else None,
            "within_5deg_50mm": float(np.mean((re < 5) & (te < 50))) if len(re) else None}


CALIBRATION_BINS = np.linspace(0.0, 1.0, 11)


def score_calibration(scores: np.ndarray, correct: np.ndarray, found: np.ndarray
                      ) -> dict[str, list[float]]:
    """How often a found pose is correct (ADD(-S) < 0.1 d) per score bin: `scores (n,)`,
    `correct (n,)`, `found (n,)` bool. Bins with no pose read NaN."""
    s, c = scores[found], correct[found]
    idx = np.clip(np.digitize(s, CALIBRATION_BINS[1:-1]), 0, len(CALIBRATION_BINS) - 2)
    count = np.bincount(idx, minlength=len(CALIBRATION_BINS) - 1)
    hits = np.bincount(idx, weights=c.astype(float), minlength=len(CALIBRATION_BINS) - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(count > 0, hits / np.maximum(count, 1), np.nan)
    return {"bin_edges": CALIBRATION_BINS.tolist(), "count": count.tolist(),
            "correct_rate": [float(r) for r in rate]}


def plot_calibration(figures: dict[str, Any], path: str | Path) -> None:
    """The share of correct poses against their score (bars: how many poses per bin)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cal = figures["calibration"]
    if cal is None:
        return
    edges = np.asarray(cal["bin_edges"])
    mid = (edges[1:] + edges[:-1]) / 2
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    ax.plot(mid, cal["correct_rate"], "o-", label="ADD(-S) < 0.1d")
    ax2 = ax.twinx()
    ax2.bar(mid, cal["count"], width=0.08, alpha=0.2, color="k")
    ax2.set_ylabel("poses")
    ax.set_xlabel("pose score")
    ax.set_ylabel("share correct")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def match_estimates(labels: np.ndarray, boxes: np.ndarray, poses: list[ObjectPose],
                    min_iou: float = MATCH_IOU) -> list[ObjectPose | None]:
    """For each target (`labels (n,)`, visible `boxes (n, 4)` x, y, w, h) the estimate of
    its object whose box overlaps it most (at least `min_iou`), each estimate used once,
    best scores first."""
    matched: list[ObjectPose | None] = [None] * len(labels)
    if not poses or not len(labels):
        return matched
    estimated = torch.from_numpy(np.array([p.box for p in poses], np.float64))
    iou = box_iou_xywh(estimated[:, None], torch.from_numpy(boxes)[None]).numpy()
    iou[np.array([p.label for p in poses])[:, None] != labels[None, :]] = 0.0
    for i in np.argsort([-p.score for p in poses], kind="stable"):
        j = int(np.argmax(np.where([m is None for m in matched], iou[i], -1.0)))
        if iou[i, j] >= min_iou and matched[j] is None:
            matched[j] = poses[i]
    return matched


def evaluate(data: str | Path, estimator: Estimator, *, boxes: str = "gt",
             split: str | None = "test", progress: bool = True, max_images: int = 0,
             overlays: str | Path | None = None, depth: bool = True, views: int = 1,
             fuser: MultiViewFuser | None = None, extrinsics: str = "known") -> EvalReport:
    """Run `estimator` on every target instance of the dataset, on ground-truth boxes
    (`boxes="gt"`) or on the detector's (`"detector"`, matched to the targets by box
    overlap; a target without a match counts as a failure). With `depth`, an image's
    `depth/IMID.png` is given to the estimator where the scene has one. With `views` > 1,
    consecutive groups of that many images of a scene (camera poses from
    `scene_camera.json`) are also fused (`fuser`, default settings) and scored per image
    in `report.fused`. With `extrinsics="estimated"` the camera poses are instead estimated
    from the objects the group's views share (`fusion/camera_poses.py`, the view with the
    most estimates as the reference); a view that cannot be placed stays out of the fusion
    and is scored on its own single-view poses, and `report.fused.placements` holds each view's
    placement. With `overlays`, an image of the estimates is written there per image."""
    from tqdm import tqdm

    if boxes not in ("gt", "detector"):
        raise ValueError(f"boxes: expected 'gt' or 'detector', got {boxes!r}")
    if views < 1:
        raise ValueError(f"views: expected >= 1, got {views}")
    if extrinsics not in ("known", "estimated"):
        raise ValueError(f"extrinsics: expected 'known' or 'estimated', got {extrinsics!r}")
    objects = estimator.objects
    placer = CameraPoseEstimator(objects) if views > 1 and extrinsics == "estimated" else None
    scenes = find_scenes(data, split)
    scorer = _TargetScorer(objects)
    report = EvalReport(objects=[o.name for o in objects])
    if views > 1:
        report.fused = EvalReport(objects=report.objects)
        if fuser is None:
            fuser = MultiViewFuser(objects, refiner=estimator.refiner)
    groups = _image_groups(scenes, depth, views)
    if max_images:
        groups = _first_images(groups, max_images)
    if overlays is not None:
        Path(overlays).mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    bar = tqdm(total=sum(map(len, groups)), desc="eval", unit="img", disable=not progress)
    for group in groups:
        seen = []
        for job in group:
            bar.update(1)
            one = _evaluate_image(estimator, scorer, report, job, boxes, overlays, views,
                                  known_extrinsics=placer is None)
            if one is not None:
                seen.append(one)
        if views > 1 and seen:
            _fuse_group(fuser, placer, scorer, report, seen)
    bar.close()
    report.seconds = time.perf_counter() - start
    if report.fused is not None:
        report.fused.seconds = report.seconds
        report.fused.depth_images = report.depth_images
    return report


def _image_groups(scenes: list[Path], depth: bool, views: int) -> list[list[_Job]]:
    """The images of `scenes` as jobs, in consecutive groups of `views` per scene."""
    groups = []
    for scene in scenes:
        gts = load_scene_gt(scene / "scene_gt.json")
        infos = load_scene_gt_info(scene / "scene_gt_info.json")
        cams = load_scene_camera(scene / "scene_camera.json")
        scales = load_depth_scales(scene / "scene_camera.json")
        # Estimated extrinsics use known ones, where there are any, only to score them.
        poses = load_scene_camera_poses(scene / "scene_camera.json") if views > 1 else {}
        scene_id = int(scene.name) if scene.name.isdigit() else 0
        jobs = []
        for im_id in sorted(gts):
            depth_path = scene / "depth" / f"{im_id:06d}.png"
            depth_at = ((depth_path, scales.get(im_id, 1.0))
                        if depth and depth_path.is_file() else None)
            jobs.append(_Job(scene, scene_id, im_id, gts[im_id], infos[im_id], cams[im_id],
                             depth_at, poses.get(im_id)))
        groups += [jobs[i:i + views] for i in range(0, len(jobs), views)]
    return groups


def _evaluate_image(estimator: Estimator, scorer: _TargetScorer, report: EvalReport,
                    job: _Job, boxes: str, overlays: str | Path | None, views: int, *,
                    known_extrinsics: bool) -> _Seen | None:
    """Estimate and score one image; what fusing it needs (its camera pose from the job
    with `known_extrinsics`, else placed later), or None when `views` is 1 or it has
    nothing to score."""
    objects = estimator.objects
    targets = scorer.targets(job)
    if not targets and views == 1:
        return None
    image = read_image(_rgb_path(job.scene, job.im_id))
    report.image_width = image.shape[1]
    labels = np.array([objects.index_of_id(g.obj_id) for _, g in targets], np.int64)
    target_boxes = np.array([job.infos[k]["bbox_visib"] for k, _ in targets],
                            np.float64).reshape(-1, 4)
    given = (Boxes(torch.from_numpy(labels), torch.from_numpy(target_boxes).float())
             if boxes == "gt" else None)
    depth_m = read_depth(*job.depth_at) if job.depth_at is not None else None
    report.depth_images += depth_m is not None
    t0 = time.perf_counter()
    poses = []
    if len(labels) or boxes == "detector":  # a view without targets may still fuse
        try:
            poses = estimator.estimate(image, job.K, given, depth=depth_m)
        except DepthError as exc:  # as the node does: this image goes on without it
            print(f"eval: {job.depth_at[0]}: {exc}; estimated without depth",
                  file=sys.stderr)
            report.depth_images -= 1
            report.depth_rejected += 1
            depth_m = None
            poses = estimator.estimate(image, job.K, given)
    elapsed = time.perf_counter() - t0
    if estimator.last_detections is not None and len(labels):
        report.detections.append(_image_detections(estimator.last_detections, labels,
                                                   target_boxes))
    scorer.score(report, job, targets, labels, target_boxes, poses, elapsed)
    if overlays is not None:
        write_rgb(Path(overlays) / f"{job.scene_id:06d}_{job.im_id:06d}.png",
                  draw_poses(image, job.K, poses, objects))
    if views == 1:
        return None
    T_wc = _camera_pose(job) if known_extrinsics else np.eye(4)
    return _Seen(job, targets, labels, target_boxes, elapsed,
                 View(image, job.K, T_wc, poses, depth_m))


def _fuse_group(fuser: MultiViewFuser, placer: CameraPoseEstimator | None,
                scorer: _TargetScorer, report: EvalReport, seen: list[_Seen]) -> None:
    """Fuse a group's views (camera poses known, or estimated by `placer`) and score the
    fused poses in each view into `report.fused`."""
    t0 = time.perf_counter()
    group_views = [s.view for s in seen]
    if placer is not None:
        group_views = _place_views(placer, [s.job for s in seen], group_views,
                                   report.fused.placements)
    # A view left unplaced (None) is not fused, and keeps its own poses.
    fuse_index = {i: k for k, i in enumerate(
        i for i, v in enumerate(group_views) if v is not None)}
    fused = fuser([v for v in group_views if v is not None])
    elapsed = (time.perf_counter() - t0) / len(seen)
    report.fused.image_width = report.image_width
    for i, s in enumerate(seen):
        in_view = (poses_in_view(fused, group_views[i], fuse_index[i], scorer.objects)
                   if i in fuse_index else s.view.poses)
        scorer.score(report.fused, s.job, s.targets, s.labels, s.target_boxes, in_view,
                     s.elapsed + elapsed)


@dataclass
class _Seen:
    """One evaluated image of a group, kept until the group is fused."""

    job: _Job
    targets: list[tuple[int, GroundTruth]]
    labels: np.ndarray  # (n,) registry indices
    target_boxes: np.ndarray  # (n, 4) visible boxes x, y, w, h
    elapsed: float  # seconds the single-view estimate took
    view: View


@dataclass
class _Job:
    """One image to evaluate."""

    scene: Path
    scene_id: int
    im_id: int
    gts: list[GroundTruth]
    infos: list[dict[str, Any]]
    K: np.ndarray
    depth_at: tuple[Path, float] | None  # depth PNG and its depth_scale
    T_cam_world: np.ndarray | None  # (4, 4) when known


def _camera_pose(job: _Job) -> np.ndarray:
    """`T_world_cam (4, 4)` of a job's camera; a BopFormatError naming the file if absent."""
    if job.T_cam_world is None:
        raise BopFormatError(f"{job.scene / 'scene_camera.json'}: image {job.im_id}: no "
                             "cam_R_w2c / cam_t_w2c (camera pose), which --views needs")
    return np.linalg.inv(job.T_cam_world)


def _place_views(placer: CameraPoseEstimator, jobs: list[_Job], views: list[View],
                 rows: list[dict[str, Any]]) -> list[View | None]:
    """`views` with camera poses estimated from their shared objects, in the frame of the
    view with the most estimates; None for a view that cannot be placed. Appends one row per
    other view to `rows`, with its errors where the jobs' camera poses are known."""
    ref = max(range(len(views)), key=lambda i: len(views[i].poses))  # first on ties
    placed = placer([v.poses for v in views], reference=ref)
    out: list[View | None] = []
    for i, (job, view, p) in enumerate(zip(jobs, views, placed, strict=True)):
        out.append(None if p is None else replace(view, T_world_cam=p.T_ref_cam))
        if i == ref:
            continue
        row: dict[str, Any] = {"scene_id": job.scene_id, "im_id": job.im_id,
                               "ref_im_id": jobs[ref].im_id, "placed": p is not None,
                               "weak": p is not None and p.weak,
                               "support": p.support if p is not None else 0}
        if p is not None and job.T_cam_world is not None and jobs[ref].T_cam_world is not None:
            truth = jobs[ref].T_cam_world @ np.linalg.inv(job.T_cam_world)  # T_ref_cam
            dR = truth[:3, :3].T @ p.T_ref_cam[:3, :3]
            row["re_deg"] = float(np.rad2deg(np.arccos(np.clip((np.trace(dR) - 1) / 2,
                                                               -1, 1))))
            row["te_mm"] = float(np.linalg.norm(truth[:3, 3] - p.T_ref_cam[:3, 3]) * 1e3)
        rows.append(row)
    return out


def _first_images(groups: list[list[_Job]], count: int) -> list[list[_Job]]:
    """The groups holding the first `count` images (the last one cut short)."""
    out, left = [], count
    for g in groups:
        if left <= 0:
            break
        out.append(g[:left])
        left -= len(out[-1])
    return out


class _TargetScorer:
    """Errors of an image's estimates against its targets, appended to a report."""

    def __init__(self, objects: ObjectRegistry) -> None:
        self.objects = objects
        self.pools = SymmetryPools(objects)
        self.points = [torch.from_numpy(np.asarray(o.mesh.vertices)) for o in objects]
        self.known = {o.id for o in objects}

    def targets(self, job: _Job) -> list[tuple[int, GroundTruth]]:
        """The image's evaluated instances: known objects, visible enough, with a box."""
        return [(k, g) for k, g in enumerate(job.gts)
                if g.obj_id in self.known and job.infos[k]["visib_fract"] >= MIN_VISIB_FRACT
                and job.infos[k]["bbox_visib"][2] > 0]

    def score(self, report: EvalReport, job: _Job, targets: list[tuple[int, GroundTruth]],
              labels: np.ndarray, target_boxes: np.ndarray, poses: list[ObjectPose],
              elapsed: float) -> None:
        """Append `poses`' BOP rows and each target's errors (inf when not found)."""
        objects, pools = self.objects, self.pools
        report.results += [BopResult(job.scene_id, job.im_id, p.object_id, p.score, p.R, p.t,
                                     elapsed) for p in poses]
        if not targets:
            return
        for (k, g), label, est in zip(targets, labels.tolist(),
                                      match_estimates(labels, target_boxes, poses), strict=True):
            obj, pts = objects[label], self.points[label][None]
            pR, pt, pv = pools.R[label][None], pools.t[label][None], pools.valid[label][None]
            Rg, tg = torch.from_numpy(g.R)[None], torch.from_numpy(g.t)[None]
            if est is not None:
                Rj, tj = torch.from_numpy(est.R)[None], torch.from_numpy(est.t)[None]
                add = (metrics.adds if obj.is_symmetric else metrics.add)(Rj, tj, Rg, tg, pts)
                mssd = metrics.mssd(Rj, tj, Rg, tg, pts, pR, pt, pv)
                mspd = metrics.mspd(Rj, tj, Rg, tg, pts, torch.from_numpy(job.K), pR, pt, pv)
                re, te = metrics.symmetric_pose_errors(Rj, tj, Rg, tg, pR, pt, pv)
                vals = [float(v) for v in (add[0], mssd[0], mspd[0], re[0], te[0])]
            else:
                vals = [float("inf")] * 5
            report.labels.append(label)
            report.scene_ids.append(job.scene_id)
            report.im_ids.append(job.im_id)
            report.gt_index.append(k)
            report.scores.append(est.score if est is not None else 0.0)
            for name, v in zip(("add", "mssd", "mspd", "re", "te"), vals, strict=True):
                getattr(report, name).append(v)
            report.ok.append(est is not None)


def _image_detections(det: Detections, labels: np.ndarray, boxes_xywh: np.ndarray
                      ) -> ImageDetections:
    """The detector's boxes of one image, on the CPU, with its targets `labels (n,)` and
    visible `boxes_xywh (n, 4)`."""
    gt = torch.from_numpy(boxes_xywh).float()
    return ImageDetections(det.boxes.float().cpu(), det.labels.cpu(), det.scores.float().cpu(),
                           torch.cat([gt[:, :2], gt[:, :2] + gt[:, 2:]], 1),
                           torch.from_numpy(labels))


def plot_recall(report: EvalReport, diameters: np.ndarray, path: str | Path) -> None:
    """ADD(-S) recall against the threshold (fraction of the diameter), one line per object."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lab, add = np.asarray(report.labels, int), np.asarray(report.add)
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, name in enumerate(report.objects):
        sel = lab == i
        if sel.any():
            rel = add[sel] / diameters[i]
            ax.plot(RECALL_THRESHOLDS, [(rel < th).mean() for th in RECALL_THRESHOLDS],
                    label=name)
    if len(lab):
        rel = add / diameters[lab]
        ax.plot(RECALL_THRESHOLDS, [(rel < th).mean() for th in RECALL_THRESHOLDS], "k--",
                lw=2, label="all")
    ax.axvline(0.1, color="grey", lw=0.8)
    ax.set_xlabel("ADD(-S) threshold / object diameter")
    ax.set_ylabel("recall")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_outputs(report: EvalReport, objects: ObjectRegistry, out: str | Path,
                  ) -> dict[str, Any]:
    """Results CSV, per-target CSV (`instances.csv`, what `pose6d compare` pairs), figures
    JSON, recall and score-calibration PNGs into `out`; returns the figures."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    diameters = np.array([o.diameter for o in objects])
    figures = report.summary(diameters)
    write_results_csv(out / "results_bop19.csv", report.results)
    write_instances_csv(out / INSTANCES_CSV, report, diameters)
    (out / "figures.json").write_text(json.dumps(figures, indent=1))
    plot_recall(report, diameters, out / "recall_add.png")
    plot_calibration(figures, out / "calibration.png")
    return figures
