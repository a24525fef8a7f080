"""`pose6d bench pipeline`: per-stage latency and frames/s of the estimator on 640x480
frames with a fixed number of object instances, against a naive per-object baseline run
in the same process.

The optimised path is `Estimator.estimate`: one upload, one Mask R-CNN forward, one
`roi_align` for every crop, one batched CoordNet forward, batched correspondence selection
and PnP on the device, one download. The baseline is what a straightforward Pix2Pose port
does after the same detector: a Python loop over the instances with, per instance, a crop
by numpy slicing + `cv2.resize`, its upload, one float32 CoordNet forward, the download of
its maps, correspondence selection in numpy and OpenCV's `solvePnPRansac` +
`solvePnPRefineLM` on the CPU, then the same symmetry canonicalisation (on the CPU).

To make the instance count exact whatever the detector finds, both paths run the detector
on the frame for its time but take the frame's ground-truth boxes for the CoordNet stage
(`Estimator.estimate(rgb, K, boxes=...)`, with the detector timed separately on the same
uploaded frame and its time added as the `detect` stage).

Tracking mode (the node's `detect_every` > 1) is measured in the same process, repeats
interleaved with the others: a tracked frame is `Estimator.track` from the frame's
ground-truth poses (one hypothesis per instance, no detector, no coarse stage), reported
per frame, per object and per object and iteration, and as the ratio of a detect-every-frame
frame's time to it.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from pose6d_ros.core.objects import ObjectRegistry
from pose6d_ros.core.paths import sample_scene
from pose6d_ros.core.symmetry import SymmetryPools
from pose6d_ros.core.timing import StageTimer
from pose6d_ros.data.bop import load_scene_camera, load_scene_gt, load_scene_gt_info, read_image
from pose6d_ros.nets.coord_poses import CoordPoseEstimator
from pose6d_ros.nets.correspondences import CorrespondenceOptions
from pose6d_ros.nets.detector import Detector
from pose6d_ros.pipeline import Boxes, Estimator, ObjectPose
from pose6d_ros.pnp import PnPOptions
from pose6d_ros.pnp.init import METHODS

# "templates", "refine" and "verify" (retrieval, refinement, the choice) are the optimised
# path's alone: the baseline is the per-object CoordNet + PnP chain.
STAGES = ("upload", "detect", "crops", "coordnet", "pnp", "templates", "refine", "verify",
          "download")
MIN_VISIB_FRACT = 0.1  # instances less visible than this are not used as benchmark boxes


@dataclass
class BenchFrame:
    """One image with exactly `len(labels)` instances to estimate."""

    rgb: np.ndarray  # (H, W, 3) uint8
    K: np.ndarray  # (3, 3)
    labels: np.ndarray  # (n,) object indices
    boxes_xywh: np.ndarray  # (n, 4) visible boxes, pixels
    source: str  # where the image came from
    R: np.ndarray | None = None  # (n, 3, 3) ground-truth rotations
    t: np.ndarray | None = None  # (n, 3) ground-truth translations, metres


def sample_frame(objects: ObjectRegistry, count: int, scene: str | Path | None = None
                 ) -> BenchFrame:
    """The bundled LM-O photograph with the most annotated instances, with `count` of its
    ground-truth visible boxes (repeated in turn when it has fewer)."""
    if count < 1:
        raise ValueError(f"objects per image: expected >= 1, got {count}")
    scene = Path(scene) if scene is not None else sample_scene()
    gts = load_scene_gt(scene / "scene_gt.json")
    infos = load_scene_gt_info(scene / "scene_gt_info.json")
    cams = load_scene_camera(scene / "scene_camera.json")
    known = {o.id for o in objects}

    def usable(im_id: int) -> list[int]:
        return [k for k, g in enumerate(gts[im_id]) if g.obj_id in known
                and infos[im_id][k]["visib_fract"] >= MIN_VISIB_FRACT
                and min(infos[im_id][k]["bbox_visib"][2:]) > 0]

    im_id = max(sorted(gts), key=lambda i: len(usable(i)))
    keep = usable(im_id)
    if not keep:
        raise FileNotFoundError(f"{scene}: no annotated instance of the objects to use")
    pick = [keep[i % len(keep)] for i in range(count)]
    path = next((scene / "rgb" / f"{im_id:06d}{ext}" for ext in (".png", ".jpg")
                 if (scene / "rgb" / f"{im_id:06d}{ext}").exists()), None)
    if path is None:
        raise FileNotFoundError(f"{scene / 'rgb'}: no image {im_id:06d}.png or .jpg")
    labels = np.array([objects.index_of_id(gts[im_id][k].obj_id) for k in pick], np.int64)
    boxes = np.array([infos[im_id][k]["bbox_visib"] for k in pick], np.float64)
    return BenchFrame(read_image(path), cams[im_id], labels, boxes, str(path),
                      R=np.stack([gts[im_id][k].R for k in pick]),
                      t=np.stack([gts[im_id][k].t for k in pick]))


@dataclass
class NaivePose:
    """One instance's pose from the baseline."""

    R: np.ndarray  # (3, 3)
    t: np.ndarray  # (3,) metres
    ok: bool
    inliers: int  # PnP inliers
    points: int  # correspondences given to PnP


class NaiveBaseline:
    """The per-object loop of a typical Pix2Pose implementation, after the detector, with
    the network, thresholds and PnP settings of `coords` (options override them)."""

    def __init__(self, coords: CoordPoseEstimator, *,
                 corr_options: CorrespondenceOptions | None = None,
                 pnp_options: PnPOptions | None = None, seed: int = 0) -> None:
        self.net, self.device, self.enlarge = coords.net, coords.device, coords.enlarge
        self.size = self.net.config.input_size
        self.center, self.scale = coords.objects.coordinate_normalisation()
        self.pools = SymmetryPools(coords.objects)  # on the CPU, as the rest of the loop
        self.corr = corr_options or coords.corr_options
        self.pnp = pnp_options or coords.pnp_options
        # OpenCV's solver of the same name, else SQPnP (the baseline's PnP is OpenCV's).
        self.cv_method = self.pnp.method if self.pnp.method in METHODS else "sqpnp"
        self.seed = seed

    def crop(self, rgb: np.ndarray, box_xywh: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
        """The `(S, S, 3)` uint8 crop of one instance (square, `enlarge` times the box's
        longer side, rounded to whole pixels, zeros outside the image) and its crop box
        x0, y0, x1, y1 (roi_align(aligned=True) convention)."""
        x, y, w, h = (float(v) for v in box_xywh)
        side = max(w, h, 8.0 / self.enlarge) * self.enlarge
        L = max(1, round(side))
        x0, y0 = round(x + w / 2 - L / 2), round(y + h / 2 - L / 2)
        H, W = rgb.shape[:2]
        patch = np.zeros((L, L, 3), np.uint8)
        sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + L, W), min(y0 + L, H)
        if sx1 > sx0 and sy1 > sy0:
            patch[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = rgb[sy0:sy1, sx0:sx1]
        crop = cv2.resize(patch, (self.size, self.size), interpolation=cv2.INTER_LINEAR)
        return crop, np.array([x0, y0, x0 + L, y0 + L], np.float64)

    def correspondences(self, xyz: np.ndarray, error: np.ndarray, mask_logit: np.ndarray,
                        label: int, crop_box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Full-image pixels `(n, 2)` and object points `(n, 3)` (metres) of one crop's
        maps `xyz (3, S, S)`, `error`, `mask_logit (S, S)`: the selection rule of
        `select_correspondences`, in numpy, with numpy's own random sample."""
        o = self.corr
        S = xyz.shape[-1]
        inside = (1.0 / (1.0 + np.exp(-mask_logit)) > o.mask_threshold).ravel()
        err = error.ravel()
        limit = o.error_threshold
        if o.error_quantile > 0 and inside.any():
            limit = max(limit, float(np.quantile(err[inside], o.error_quantile)))
        idx = np.flatnonzero(inside & (err <= limit))
        if idx.size < o.min_points:  # the instance fails, as in select_correspondences
            idx = idx[:0]
        if idx.size > o.max_points:
            idx = np.sort(np.random.default_rng(self.seed).choice(idx, o.max_points,
                                                                  replace=False))
        v, u = np.divmod(idx, S)
        x0, y0, x1, y1 = crop_box
        x2d = np.stack([(u + 0.5) * (x1 - x0) / S + x0 - 0.5,
                        (v + 0.5) * (y1 - y0) / S + y0 - 0.5], -1)
        x3d = xyz.reshape(3, -1)[:, idx].T.astype(np.float64) * self.scale[label] \
            + self.center[label]
        return x2d, x3d

    def solve(self, x2d: np.ndarray, x3d: np.ndarray, K: np.ndarray, label: int) -> NaivePose:
        """OpenCV PnP (RANSAC over the initial solver when `ransac`, then Levenberg-Marquardt
        on the inliers) and the symmetry canonicalisation, for one instance."""
        o = self.pnp
        fail = NaivePose(np.eye(3), np.zeros(3), False, 0, len(x2d))
        if len(x2d) < max(self.corr.min_points, o.min_points):
            return fail
        obj, img = np.ascontiguousarray(x3d), np.ascontiguousarray(x2d)
        try:
            if o.ransac:
                found, rvec, tvec, inl = cv2.solvePnPRansac(
                    obj, img, K, None, iterationsCount=o.ransac_iterations,
                    reprojectionError=o.reprojection_px, confidence=o.confidence,
                    flags=METHODS[self.cv_method])
                sel = inl.ravel() if found and inl is not None else np.zeros(0, np.int64)
            else:
                found, rvec, tvec = cv2.solvePnP(obj, img, K, None,
                                                 flags=METHODS[self.cv_method])
                sel = np.arange(len(obj))
            if not found or sel.size < o.min_points:
                return fail
            criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_COUNT, o.max_iterations,
                        o.step_tolerance)
            rvec, tvec = cv2.solvePnPRefineLM(obj[sel], img[sel], K, None, rvec, tvec,
                                              criteria=criteria)
        except cv2.error:
            return fail
        R, t = cv2.Rodrigues(rvec)[0], tvec.ravel()
        if not (np.isfinite(R).all() and np.isfinite(t).all()
                and ((obj[sel] @ R.T + t)[:, 2] > 0).all()):
            return fail
        Rc, tc = self.pools.canonicalise(torch.tensor([label]), torch.from_numpy(R)[None],
                                         torch.from_numpy(t)[None])
        return NaivePose(Rc[0].numpy(), tc[0].numpy(), True, int(sel.size), len(x2d))

    @torch.no_grad()
    def instance(self, crop: np.ndarray, label: int, crop_box: np.ndarray, K: np.ndarray,
                 timer: StageTimer | None = None) -> NaivePose:
        """The pose of one instance from its crop `(S, S, 3)` (uint8, or float in [0, 1]);
        stages upload, coordnet, download, pnp marked on `timer` when given."""
        mark = timer.mark if timer is not None else (lambda stage: None)
        x = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1)[None]
        x = x.float().div_(255.0) if crop.dtype == np.uint8 else x.float()
        x, lab = x.to(self.device), torch.tensor([label], device=self.device)
        mark("upload")
        out = self.net(x, lab)
        mark("coordnet")
        xyz, err = out.xyz[0].float().cpu().numpy(), out.error[0, 0].float().cpu().numpy()
        logit = out.mask_logit[0, 0].float().cpu().numpy()
        mark("download")
        x2d, x3d = self.correspondences(xyz, err, logit, label, crop_box)
        pose = self.solve(x2d, x3d, np.asarray(K, np.float64), label)
        mark("pnp")
        return pose

    def __call__(self, rgb: np.ndarray, K: np.ndarray, labels: Sequence[int],
                 boxes_xywh: np.ndarray, timer: StageTimer | None = None) -> list[NaivePose]:
        """Poses of the instances `labels (n,)` with visible boxes `(n, 4)` in `rgb`."""
        out = []
        for label, box in zip(labels, boxes_xywh, strict=True):
            crop, crop_box = self.crop(rgb, box)
            if timer is not None:
                timer.mark("crops")
            out.append(self.instance(crop, int(label), crop_box, K, timer))
        return out


def _peak_rss_mb() -> float:
    """The process's resident-memory high-water mark, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def measure(estimator: Estimator, frame: BenchFrame, *, repeats: int = 10, warmup: int = 2,
            baseline: NaiveBaseline | None = None) -> dict[str, Any]:
    """Median per-stage ms and ms per frame of both paths on `frame`, repeats interleaved
    (optimised, baseline, optimised, ...) so machine load hits both alike."""
    if estimator.detector is None:
        raise ValueError("bench pipeline: the estimator needs detector weights")
    dev = estimator.device
    cuda = dev.type == "cuda"
    baseline = baseline or NaiveBaseline(estimator.coords)
    det = estimator.detector
    det.score_threshold = estimator.config.detection_score
    det.max_instances = estimator.config.max_instances
    # The baseline's detector: the same model in float32.
    base_det = Detector(det.model, device=dev, score_threshold=det.score_threshold,
                        max_instances=det.max_instances)
    given = Boxes(torch.from_numpy(frame.labels), torch.from_numpy(frame.boxes_xywh).float())
    # The detector's input for the optimised path, uploaded untimed: `estimate` times its
    # own upload of the same frame, which in production serves the detector too.
    det_image = torch.from_numpy(frame.rgb).to(dev).permute(2, 0, 1).float().div_(255.0)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(dev)

    def optimised() -> dict[str, float]:
        sync()
        start = time.perf_counter()
        det(det_image)
        sync()
        det_ms = 1e3 * (time.perf_counter() - start)
        estimator.estimate(frame.rgb, frame.K, given)
        ms = dict(estimator.last_timings)
        ms["detect"] = ms.get("detect", 0.0) + det_ms
        ms["total"] += det_ms
        return ms

    def naive() -> dict[str, float]:
        timer = StageTimer(dev, sync=True)
        image = torch.from_numpy(frame.rgb).to(dev).permute(2, 0, 1).float().div_(255.0)
        timer.mark("upload")
        base_det(image)
        timer.mark("detect")
        baseline(frame.rgb, frame.K, frame.labels, frame.boxes_xywh, timer)
        return dict(timer.ms, total=timer.total_ms())

    tracking: Callable[[], dict[str, float]] | None = None
    if frame.R is not None and frame.t is not None and estimator.can_track():
        start = [ObjectPose(name=estimator.objects[int(lab)].name, label=int(lab),
                            object_id=estimator.objects[int(lab)].id, instance=i, score=1.0,
                            R=frame.R[i], t=frame.t[i], inliers=0,
                            box=tuple(float(v) for v in frame.boxes_xywh[i]))
                 for i, lab in enumerate(frame.labels)]

        def track_frame() -> dict[str, float]:
            estimator.track(frame.rgb, frame.K, start)
            return dict(estimator.last_timings)

        tracking = track_frame

    paths = [("optimised", optimised), ("baseline", naive)]
    if tracking is not None:
        paths.append(("tracking", tracking))
    peaks: dict[str, float] = {}
    for name, fn in paths:
        if cuda:
            torch.cuda.reset_peak_memory_stats(dev)
        for _ in range(max(1, warmup) if cuda else warmup):  # CUDA: one for the peak
            fn()
        if cuda:
            peaks[name] = torch.cuda.max_memory_allocated(dev) / 2**20
    runs: dict[str, list[dict[str, float]]] = {name: [] for name, _ in paths}
    for _ in range(repeats):
        for name, fn in paths:
            runs[name].append(fn())

    def medians(rows: list[dict[str, float]]) -> dict[str, float]:
        return {s: float(np.median([r.get(s, 0.0) for r in rows])) for s in (*STAGES, "total")}

    opt, base = medians(runs["optimised"]), medians(runs["baseline"])
    after = sum(opt[s] for s in STAGES if s != "detect")
    base_after = sum(base[s] for s in STAGES if s != "detect")
    cfg = estimator.coords.net.config
    out: dict[str, Any] = {
        "device": str(dev), "objects": len(frame.labels),
        "image": f"{frame.rgb.shape[1]}x{frame.rgb.shape[0]}", "frame": frame.source,
        "coordnet": f"{cfg.encoder}@{cfg.input_size}",
        "precision": str(estimator.coords.dtype or torch.float32).removeprefix("torch."),
        "repeats": repeats, "warmup": warmup,
        "ms_per_frame": opt["total"], "baseline_ms_per_frame": base["total"],
        "fps": 1e3 / opt["total"], "baseline_fps": 1e3 / base["total"],
        "speedup": base["total"] / opt["total"],
        "after_detector_ms": after, "baseline_after_detector_ms": base_after,
        "speedup_after_detector": base_after / max(after, 1e-9),
    }
    for s in STAGES:
        out[f"{s}_ms"] = opt[s]
        out[f"baseline_{s}_ms"] = base[s]
    if tracking is not None:
        tr = {s: float(np.median([r.get(s, 0.0) for r in runs["tracking"]]))
              for s in ("upload", "refine", "download", "total")}
        iterations = max(estimator.config.track_iterations, 1)
        n = len(frame.labels)
        out.update({
            "track_iterations": estimator.config.track_iterations,
            "track_ms_per_frame": tr["total"], "track_refine_ms": tr["refine"],
            "track_fps": 1e3 / tr["total"],
            "track_ms_per_object": tr["refine"] / n,
            "track_ms_per_object_iteration": tr["refine"] / (n * iterations),
            "detect_over_track": opt["total"] / tr["total"],
            "refine_over_track_refine": opt["refine"] / max(tr["refine"], 1e-9)})
        if cuda:
            out["track_peak_cuda_mb"] = peaks["tracking"]
    out["peak_rss_mb"] = _peak_rss_mb()
    if cuda:
        out["peak_cuda_mb"] = peaks["optimised"]
        out["baseline_peak_cuda_mb"] = peaks["baseline"]
    return out


def run(estimator: Estimator, objects_per_image: Sequence[int] = (1, 4, 8), *,
        repeats: int = 10, warmup: int = 2, scene: str | Path | None = None,
        progress: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """`measure` for each instance count on the bundled photograph; `progress` gets each
    configuration's figures as soon as they are measured."""
    rows = []
    for n in objects_per_image:
        row = measure(estimator, sample_frame(estimator.objects, n, scene), repeats=repeats,
                      warmup=warmup)
        rows.append(row)
        if progress is not None:
            progress(row)
    return rows


def table(rows: list[dict[str, Any]]) -> list[str]:
    """The printed table: per instance count, both paths' stage medians and their ratio."""
    head = (f"{'objects':>7} {'path':<9} " + " ".join(f"{s:>8}" for s in STAGES)
            + f" {'total ms':>9} {'frames/s':>8}")
    lines = [head, "-" * len(head)]
    for r in rows:
        for name, pre in (("optimised", ""), ("baseline", "baseline_")):
            total = r[f"{pre}ms_per_frame"]
            lines.append(f"{r['objects']:>7} {name:<9} "
                         + " ".join(f"{r[f'{pre}{s}_ms']:>8.2f}" for s in STAGES)
                         + f" {total:>9.2f} {1e3 / total:>8.2f}")
        ratios = " ".join(f"{_ratio(r[f'baseline_{s}_ms'], r[f'{s}_ms']):>8}" for s in STAGES)
        speedup = f"x{r['speedup']:.2f}"
        lines.append(f"{r['objects']:>7} {'ratio':<9} {ratios} {speedup:>9} {'':>8}   "
                     f"after the detector x{r['speedup_after_detector']:.2f}")
    for r in rows:
        if "track_ms_per_frame" in r:
            lines.append(
                f"{r['objects']:>7} tracking: {r['track_ms_per_frame']:.2f} ms per tracked "
                f"frame ({r['track_fps']:.1f} frames/s), refine {r['track_refine_ms']:.2f} ms "
                f"= {r['track_ms_per_object']:.2f} ms per object, "
                f"{r['track_ms_per_object_iteration']:.2f} per object and iteration "
                f"({r['track_iterations']} iterations); detect-every-frame frame / tracked "
                f"frame x{r['detect_over_track']:.1f}, its refine stage / tracked refine "
                f"x{r['refine_over_track_refine']:.1f}")
    return lines


def _ratio(base: float, ours: float) -> str:
    return f"x{base / ours:.1f}" if ours > 1e-3 and base > 1e-3 else "-"


def plot(rows: list[dict[str, Any]], path: str | Path) -> None:
    """Stacked bars of the stage medians, optimised vs baseline per instance count: the
    whole frame, and the part after the detector (where the paths differ)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = plt.get_cmap("tab10").colors
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, stages, title in ((axes[0], STAGES, "whole frame"),
                              (axes[1], tuple(s for s in STAGES if s != "detect"),
                               "after the detector")):
        xs, labels = [], []
        for i, r in enumerate(rows):
            for j, (name, pre) in enumerate((("opt.", ""), ("base.", "baseline_"))):
                x = 3 * i + j
                bottom = 0.0
                for s in stages:
                    v = r[f"{pre}{s}_ms"]
                    ax.bar(x, v, bottom=bottom, color=colours[STAGES.index(s)],
                           label=s if i == 0 and j == 0 else None)
                    bottom += v
                xs.append(x)
                labels.append(f"{r['objects']} obj\n{name}")
        ax.set_xticks(xs, labels, fontsize=7)
        ax.set_ylabel("ms per frame (median)")
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    dev = rows[0]["device"] if rows else ""
    fig.suptitle(f"pose6d bench pipeline, {dev}: optimised vs per-object baseline")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
