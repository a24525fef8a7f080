"""The pose node's callback, free of rclpy: (image, camera_info[, depth]) in, every output
message out.

`FrameProcessor.process` decodes and checks the pair (and the registered depth image, when
one comes with it), runs the estimator (with `detect_every` > 1, on the frames between
detections only its refinement, from the previous poses: DetectionSchedule), drops
non-finite poses, keeps instance indices and symmetry choices stable over time
(SymmetryTracker) and builds the output messages with the image's header. With `fusion`
on, it also looks up the camera's pose in `fixed_frame` at the image stamp (its
`transforms`: the node's tf2 buffer, `pose6d bag`'s TfBuffer), adds the view to the fusion
window and builds the fused outputs in `fixed_frame`; a view without a camera pose is left
out of the fusion and counted, its per-view outputs published as usual. A bad frame is
rejected with a reason and counted; nothing raises out, so the node keeps running.
`pose6d bag` calls the same code.
"""

from __future__ import annotations

import dataclasses
import importlib
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import cv2
import numpy as np
import torch

from pose6d_ros.core.camera import scale_intrinsics
from pose6d_ros.core.depth import DepthError
from pose6d_ros.core.draw import draw_depth_residual, draw_poses
from pose6d_ros.core.objects import ObjectRegistry
from pose6d_ros.core.timing import StageTimer
from pose6d_ros.core.tracking import DetectionSchedule, SymmetryTracker
from pose6d_ros.fusion.multiview import View
from pose6d_ros.pipeline import EstimatorConfig, ObjectPose
from pose6d_ros.ros import messages as m
from pose6d_ros.ros.fusion_window import (
    TransformSource,
    ViewFusion,
    check_camera_pose,
    fused_poses,
)
from pose6d_ros.ros.parameters import PoseSettings, estimator_config

_EMA = 0.1  # weight of the newest sample in the rate and latency averages
FUSED_PREFIX = "fused_"  # TF child frames of fused objects: <tf_prefix>fused_<object>_<index>

T = TypeVar("T")


class EstimatorLike(Protocol):
    """What the processor uses of `pose6d_ros.pipeline.Estimator`."""

    config: EstimatorConfig
    objects: ObjectRegistry
    device: torch.device

    def estimate(self, rgb: np.ndarray, K: np.ndarray, *, depth: np.ndarray | None = None
                 ) -> list[ObjectPose]: ...

    # Optional (tracking mode; without them every frame detects): `can_track(depth: bool)
    # -> bool` and `track(rgb, K, poses, depth=None) -> list[ObjectPose]`, as the Estimator's.


def import_class(spec: str) -> type:
    """The class named `module:Class`."""
    module, _, name = spec.partition(":")
    if not module or not name:
        raise ValueError(f"estimator class {spec!r}: expected 'module:Class'")
    return getattr(importlib.import_module(module), name)


def load_estimator(settings: PoseSettings) -> tuple[EstimatorLike | None, str | None]:
    """The estimator `settings` describe, or None and a one-line error (naming the file).

    Every failure is caught: a node without weights stays up, says why in its diagnostics
    and loads them when the weight parameters are set again.
    """
    try:
        return import_class(settings.estimator)(estimator_config(settings)), None
    except Exception as exc:  # reported, never raised: see above
        return None, f"cannot load the estimator: {type(exc).__name__}: {exc}"


def scale_input(rgb: np.ndarray, K: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """`rgb (H, W, 3)` resized by `scale` and its intrinsics `K (3, 3)` to match."""
    if scale == 1.0:
        return rgb, K
    h, w = rgb.shape[:2]
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    out = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else
                     cv2.INTER_LINEAR)
    return out, scale_intrinsics(torch.from_numpy(K), nw / w, nh / h).numpy()


def scale_depth(depth: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`depth (H, W)` metres resized to `size` (height, width) by nearest neighbour, which
    never blends readings across an object's edge or with holes (0)."""
    h, w = size
    if depth.shape == (h, w):
        return depth
    return cv2.resize(depth, (w, h), interpolation=cv2.INTER_NEAREST)


@dataclass(frozen=True)
class Rejected:
    """A frame that was not processed: `kind` (counted) and a one-line reason."""

    kind: str
    reason: str


@dataclass
class FusedOutputs:
    """The fused objects after one view, in `fixed_frame` with the view's image stamp."""

    poses: list[ObjectPose]  # fixed frame; stable `instance` index
    detections: Any  # vision_msgs/Detection3DArray
    pose_array: Any  # geometry_msgs/PoseArray
    tf: Any | None  # tf2_msgs/TFMessage, children <tf_prefix>fused_<object>_<index>
    views: int  # views in the window


@dataclass
class FrameOutputs:
    """Every message of one processed frame; None where the output is switched off."""

    poses: list[ObjectPose]  # as published: stable `instance` index, symmetry resolved
    detections: Any  # vision_msgs/Detection3DArray
    pose_array: Any  # geometry_msgs/PoseArray
    class_poses: dict[str, Any]  # object name -> PoseArray (when per-class poses are on)
    tf: Any | None  # tf2_msgs/TFMessage
    markers: Any | None  # visualization_msgs/MarkerArray
    debug_image: Any | None  # sensor_msgs/Image (only when asked for)
    fused: FusedOutputs | None = None  # with `fusion`, unless the view was not fused
    fusion_error: str | None = None  # why the view was not fused (no camera pose, ...)


class InputPairing:
    """Arrivals on the image and camera_info (and, with `depth`, depth) topics against the
    pairs made of them: what found no partner within `slop`, and the stamp offset between
    the topics. The node's raw subscriptions and its synchroniser (or `pose6d bag`) report
    here; thread-safe."""

    KEEP = 32  # recent stamps per topic, for the offset seen

    def __init__(self, slop: float, *, depth: bool = False) -> None:
        self.slop = slop
        self.use_depth = depth
        self.images = self.infos = self.depths = self.paired = self.depth_paired = 0
        self._window = [0, 0, 0]  # images, infos, pairs since the last `window()`
        self._depth_window = 0  # depths since the last `window()`
        self._stamps: tuple[deque[int], deque[int], deque[int]] = (
            deque(maxlen=self.KEEP), deque(maxlen=self.KEEP), deque(maxlen=self.KEEP))
        self._lock = threading.Lock()

    def image(self, stamp_ns: int) -> None:
        """An image arrived."""
        with self._lock:
            self.images += 1
            self._window[0] += 1
            self._stamps[0].append(stamp_ns)

    def info(self, stamp_ns: int) -> None:
        """A camera_info arrived."""
        with self._lock:
            self.infos += 1
            self._window[1] += 1
            self._stamps[1].append(stamp_ns)

    def depth(self, stamp_ns: int) -> None:
        """A depth image arrived."""
        with self._lock:
            self.depths += 1
            self._depth_window += 1
            self._stamps[2].append(stamp_ns)

    def pair(self, *, with_depth: bool = False) -> None:
        """An image and a camera_info were paired (`with_depth`: and a depth image)."""
        with self._lock:
            self.paired += 1
            self.depth_paired += int(with_depth)
            self._window[2] += 1

    def window(self) -> tuple[int, int, int]:
        """Images, camera_infos and pairs since the last call (see `depth_window`)."""
        with self._lock:
            out = tuple(self._window)
            self._window = [0, 0, 0]
        return out  # type: ignore[return-value]

    def depth_window(self) -> int:
        """Depth images since the last call."""
        with self._lock:
            out, self._depth_window = self._depth_window, 0
        return out

    def offset_s(self, other: str = "info") -> float | None:
        """The smallest stamp difference (s) between recent images and camera_infos
        (`other` "info") or depth images ("depth")."""
        with self._lock:
            images = list(self._stamps[0])
            others = list(self._stamps[1 if other == "info" else 2])
        if not images or not others:
            return None
        diff = np.abs(np.asarray(images, np.int64)[:, None] - np.asarray(others, np.int64))
        return float(diff.min()) * 1e-9

    def values(self) -> dict[str, int]:
        """Diagnostics counters: arrivals, pairs, and what is (still) unpaired."""
        with self._lock:
            out = {"frames_arrived": self.images, "camera_infos_arrived": self.infos,
                   "frames_paired": self.paired,
                   "frames_unpaired": max(0, self.images - self.paired),
                   "camera_infos_unpaired": max(0, self.infos - self.paired)}
            if self.use_depth or self.depths:
                out.update(depths_arrived=self.depths,
                           depths_unpaired=max(0, self.depths - self.depth_paired))
            return out


@dataclass
class FrameStats:
    """Counters and averages for diagnostics; updated by the processing thread."""

    processed: int = 0
    dropped: int = 0  # replaced in the newest-frame slot before processing
    rejected: Counter = field(default_factory=Counter)  # kind -> frames
    nan_poses: int = 0  # non-finite poses from the estimator, dropped
    with_depth: int = 0  # processed frames that came with a depth image
    without_depth: int = 0  # processed RGB-only although use_depth is on (no depth came)
    instances: int = 0  # in the last processed frame
    detected: int = 0  # processed frames that ran the detector
    tracked: int = 0  # processed frames that refined the previous poses (tracking mode)
    tracks_lost: int = 0  # tracked instances dropped below track_min_score
    views_fused: int = 0  # processed frames added to the fusion window and fused
    views_without_tf: int = 0  # processed frames without a camera pose: not fused
    fusion_failed: int = 0  # processed frames whose fusion raised: not fused
    fused_objects: int = 0  # after the last fused view
    window_views: int = 0  # views in the fusion window
    last_fusion_error: str = ""  # why the last processed frame was not fused ("": it was)
    last_error: str = ""
    last_rejected: bool = False
    rate_hz: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)  # stage -> moving average
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def values(self, *, fusion: bool = False) -> dict[str, str]:
        """Diagnostics key/values (`fusion`: with the fusion counters)."""
        with self.lock:
            fused = ({"views_fused": self.views_fused,
                      "views_without_tf": self.views_without_tf,
                      "fusion_failed": self.fusion_failed,
                      "fused_objects": self.fused_objects,
                      "fusion_window_views": self.window_views} if fusion else {})
            out = {"frames_processed": self.processed,
                   "frames_dropped": self.dropped,
                   "frames_rejected": sum(self.rejected.values()),
                   **{f"rejected_{k}": v for k, v in sorted(self.rejected.items())},
                   "frames_with_depth": self.with_depth,
                   "frames_without_depth": self.without_depth,
                   "nan_poses_dropped": self.nan_poses, "instances": self.instances,
                   "frames_detected": self.detected, "frames_tracked": self.tracked,
                   "tracks_lost": self.tracks_lost,
                   **fused,
                   "rate_hz": f"{self.rate_hz:.2f}",
                   **{f"latency_{k}_ms": f"{v:.1f}" for k, v in self.latency_ms.items()},
                   "last_error": self.last_error}
        return {k: str(v) for k, v in out.items()}


class FrameProcessor:
    """(image, camera_info[, depth]) -> FrameOutputs, for the node and `pose6d bag` alike."""

    def __init__(self, types: m.MessageTypes, settings: PoseSettings, objects: ObjectRegistry,
                 *, estimator: EstimatorLike | None = None, estimator_error: str | None = None,
                 image_topic: str = "image", info_topic: str = "camera_info",
                 depth_topic: str = "depth", clock: Callable[[], float] = time.monotonic,
                 transforms: TransformSource | None = None) -> None:
        """`objects` serve the metadata and the tracker until an estimator brings its own;
        `transforms` answers the camera pose lookups of `fusion`."""
        self.types = types
        self.transforms = transforms
        self.settings = settings
        self.image_topic, self.info_topic = image_topic, info_topic
        self.depth_topic = depth_topic
        self.stats = FrameStats()
        self.pairing = InputPairing(settings.sync_slop, depth=settings.use_depth)
        self.unpaired_warning: str | None = None  # set by `diagnostics` while nothing pairs
        self._clock = clock
        self._last_done: float | None = None
        self._use_objects(objects)
        self.estimator: EstimatorLike | None = None
        self.estimator_error = estimator_error
        self.set_estimator(estimator, estimator_error)

    def _use_objects(self, objects: ObjectRegistry) -> None:
        self.objects = objects
        self.catalog = m.object_catalog(objects)
        self.tracker = SymmetryTracker(objects, gate=self.settings.track_gate,
                                       max_missed=self.settings.track_max_missed)
        self.schedule = DetectionSchedule()
        self._fusion: ViewFusion | None = None  # made on the first view to fuse

    def set_estimator(self, estimator: EstimatorLike | None, error: str | None = None) -> None:
        """Use `estimator` (None: frames are rejected with `error` until one is set)."""
        if estimator is not None and estimator.objects is not self.objects:
            self._use_objects(estimator.objects)
        self.estimator = estimator
        self.estimator_error = None if estimator is not None else (error or "no estimator")
        self._fusion = None  # its joint refinement is the estimator's refiner
        self.schedule.reset()  # tracked poses of another estimator: detect first
        with self.stats.lock:
            self.stats.last_error = self.estimator_error or ""

    @property
    def device(self) -> str:
        """The estimator's device, or 'none'."""
        return str(self.estimator.device) if self.estimator is not None else "none"

    def note_dropped(self, count: int = 1) -> None:
        """Count frames dropped before reaching `process` (newest-frame slot)."""
        with self.stats.lock:
            self.stats.dropped += count

    def process(self, image: Any, info: Any, depth: Any | None = None, *,
                debug_image: bool = False) -> FrameOutputs | Rejected:
        """Process one synchronised pair, with its registered `depth` image (sensor_msgs
        Image) when given; `debug_image` also draws the overlay. A depth image that cannot
        be used rejects the frame (kind "depth"). With `fusion`, also the fused outputs."""
        s = self.settings
        timer = StageTimer(None)
        try:
            rgb = m.decode_image(image, self.image_topic)
            m.check_pair(image.header, rgb.shape[:2], info, image_topic=self.image_topic,
                         info_topic=self.info_topic)
            K = m.camera_matrix(info, rectified=s.rectified, topic=self.info_topic)
            depth_m = None if depth is None else m.decode_depth(
                depth, rgb.shape, scale=s.depth_scale, topic=self.depth_topic)  # (H, W) m
            estimator = self.estimator
            if estimator is None:
                raise m.FrameError("no_estimator", f"no estimator: {self.estimator_error}")
            timer.mark("decode")
            rgb_in, K_in = scale_input(rgb, K, s.input_scale)
            estimator.config.detection_score = s.detection_score
            estimator.config.min_inliers = s.min_inliers
            estimator.config.min_pose_score = s.min_pose_score
            estimator.config.max_size_mismatch = s.max_size_mismatch
            estimator.config.max_centre_offset = s.max_centre_offset
            estimator.config.max_instances = s.max_instances
            estimator.config.track_iterations = s.refine_iterations
            depth_in = None if depth_m is None else scale_depth(depth_m, rgb_in.shape[:2])
            detect = self._detect_now(estimator, depth_in is not None)
            lost = 0
            try:
                if not detect:
                    poses, lost = self.schedule.tracked(
                        estimator.track(rgb_in, K_in, self.schedule.poses, depth=depth_in),
                        s.track_min_score)
                elif depth_in is None:  # estimators without depth support keep working
                    poses = list(estimator.estimate(rgb_in, K_in))
                else:
                    poses = list(estimator.estimate(rgb_in, K_in, depth=depth_in))
            except Exception as exc:
                self.schedule.reset()  # whatever failed, the next frame starts afresh
                if isinstance(exc, DepthError):
                    raise m.FrameError("depth", f"{self.depth_topic}: {exc}") from exc
                # One bad frame must not stop the node.
                raise m.FrameError("estimator", f"estimator failed: {type(exc).__name__}: "
                                                f"{exc}") from exc
            timer.mark("estimate" if detect else "refine_tracked")
        except m.FrameError as exc:
            return self._reject(exc.kind, str(exc))

        try:
            poses, nan_count = _finite(poses)
            poses = self._track(poses)
            if detect:
                self.schedule.detected(poses)
            else:
                self.schedule.keep(poses)
            timer.mark("track")
            outputs = self._outputs(image.header, poses)
            timer.mark("messages")
            if debug_image:
                base = (rgb if depth_m is None else
                        draw_depth_residual(rgb, depth_m, K, poses, self.catalog.objects))
                overlay = draw_poses(base, K, poses, self.catalog.objects)
                outputs.debug_image = m.image_msg(self.types, image.header, overlay)
                timer.mark("debug_image")
        except Exception as exc:  # e.g. a pose of an object the catalog lacks
            return self._reject("output", f"cannot build the outputs: {type(exc).__name__}: "
                                          f"{exc}")
        fusion = None
        if s.fusion:
            fusion = self._fuse(image.header, View(rgb_in, K_in, np.eye(4), poses, depth_in))
            outputs.fused, outputs.fusion_error = fusion[1], fusion[2]
            timer.mark("fusion")
        self._record(timer, poses, nan_count, with_depth=depth_m is not None, fusion=fusion,
                     detected=detect, lost=lost)
        return outputs

    def _detect_now(self, estimator: EstimatorLike, with_depth: bool) -> bool:
        """Whether this frame runs the detector: always with `detect_every` 1, or with an
        estimator that cannot track (no `track`, or nothing to refine with)."""
        every = self.settings.detect_every
        can_track = getattr(estimator, "can_track", None)
        if every <= 1 or not hasattr(estimator, "track") or (
                can_track is not None and not can_track(with_depth)):
            return True
        return self.schedule.should_detect(every)

    def _fuse(self, header: Any, view: View) -> tuple[str, FusedOutputs | None, str | None]:
        """Add `view` (its camera pose looked up here) to the window and fuse: ("fused",
        outputs, None), or ("no_tf" or "failed", None, the reason)."""
        s = self.settings
        frame, stamp = str(header.frame_id), m.stamp_ns(header)
        try:
            if self.transforms is None:
                raise LookupError("no TF source")
            view.T_world_cam = check_camera_pose(self.transforms.lookup(s.fixed_frame, frame,
                                                                        stamp))
        except Exception as exc:  # tf2's errors, a bad transform: the view is skipped
            return "no_tf", None, (f"no camera pose {s.fixed_frame} <- {frame} at "
                                   f"{stamp * 1e-9:.3f} s: {exc}")
        try:
            if self._fusion is None:
                self._fusion = ViewFusion(self.objects,
                                          getattr(self.estimator, "refiner", None))
            fused = self._fusion.add(view, stamp, size=s.fusion_window,
                                     max_age_s=s.fusion_window_s,
                                     min_baseline=s.min_view_baseline,
                                     track_gate=s.track_gate,
                                     track_max_missed=s.track_max_missed)
            poses = fused_poses(fused)
            hdr = m.copy_header(self.types, header, s.fixed_frame)
            return "fused", FusedOutputs(
                poses=poses, detections=m.detections_msg(self.types, hdr, poses, self.catalog),
                pose_array=m.pose_array_msg(self.types, hdr, poses),
                tf=(m.tf_msg(self.types, hdr, poses, s.tf_prefix + FUSED_PREFIX)
                    if s.publish_tf else None),
                views=len(self._fusion.window)), None
        except Exception as exc:  # a numerical failure must not stop the per-view outputs
            return "failed", None, f"fusion failed: {type(exc).__name__}: {exc}"

    def _reject(self, kind: str, reason: str) -> Rejected:
        with self.stats.lock:
            self.stats.rejected[kind] += 1
            self.stats.last_error = reason
            self.stats.last_rejected = True
        return Rejected(kind, reason)

    def _track(self, poses: list[ObjectPose]) -> list[ObjectPose]:
        s = self.settings
        self.tracker.gate, self.tracker.max_missed = s.track_gate, s.track_max_missed
        labels = np.array([p.label for p in poses], np.int64)
        R = np.array([p.R for p in poses], np.float64).reshape(-1, 3, 3)
        t = np.array([p.t for p in poses], np.float64).reshape(-1, 3)
        index, R, t = self.tracker.update(labels, R, t)
        return [dataclasses.replace(p, instance=int(index[i]), R=R[i], t=t[i])
                for i, p in enumerate(poses)]

    def _outputs(self, header: Any, poses: list[ObjectPose]) -> FrameOutputs:
        s, types = self.settings, self.types
        return FrameOutputs(
            poses=poses,
            detections=m.detections_msg(types, header, poses, self.catalog),
            pose_array=m.pose_array_msg(types, header, poses),
            class_poses=(m.class_pose_arrays(types, header, poses,
                                             [o.name for o in self.objects])
                         if s.publish_per_class_poses else {}),
            tf=m.tf_msg(types, header, poses, s.tf_prefix) if s.publish_tf else None,
            markers=(m.markers_msg(types, header, poses, self.catalog, s.marker_lifetime)
                     if s.publish_markers else None),
            debug_image=None)

    def _record(self, timer: StageTimer, poses: list[ObjectPose], nan_count: int, *,
                with_depth: bool,
                fusion: tuple[str, FusedOutputs | None, str | None] | None = None,
                detected: bool = True, lost: int = 0) -> None:
        now = self._clock()
        stages = dict(timer.ms, total=timer.total_ms())
        if poses:
            stages.update({f"estimator_{k}": v for k, v in poses[0].timings.items()})
        with self.stats.lock:
            st = self.stats
            st.processed += 1
            st.detected += int(detected)
            st.tracked += int(not detected)
            st.tracks_lost += lost
            st.nan_poses += nan_count
            if with_depth:
                st.with_depth += 1
            elif self.settings.use_depth:
                st.without_depth += 1
            st.instances = len(poses)
            st.last_rejected = False
            if fusion is not None:
                kind, fused, error = fusion
                st.views_fused += kind == "fused"
                st.views_without_tf += kind == "no_tf"
                st.fusion_failed += kind == "failed"
                st.last_fusion_error = error or ""
                if fused is not None:
                    st.fused_objects, st.window_views = len(fused.poses), fused.views
                else:
                    st.last_error = error or ""
            if self._last_done is not None and now > self._last_done:
                rate = 1.0 / (now - self._last_done)
                st.rate_hz = rate if st.rate_hz == 0 else (1 - _EMA) * st.rate_hz + _EMA * rate
            if "debug_image" not in stages:  # nobody subscribes now: no drawing to report
                st.latency_ms.pop("debug_image", None)
            for k, v in stages.items():
                old = st.latency_ms.get(k)
                st.latency_ms[k] = v if old is None else (1 - _EMA) * old + _EMA * v
        self._last_done = now

    # ---- metadata and diagnostics ------------------------------------------------------

    def label_info(self, header: Any) -> Any:
        """vision_msgs LabelInfo of the objects (latched by the node)."""
        return m.label_info_msg(self.types, header, self.catalog, self.settings.detection_score)

    def object_info(self) -> Any:
        """std_msgs String (JSON) with names, ids, mesh URLs and symmetries (latched)."""
        return m.object_info_msg(self.types, self.catalog, self.settings.tf_prefix)

    def diagnostics(self, header: Any, name: str = "pose6d_ros: pose_node") -> Any:
        """DiagnosticArray: ERROR without an estimator; WARN while inputs arrive and none pair
        (also kept in `unpaired_warning`) or after a rejected frame; else OK. Counters add
        up: frames_arrived = frames_unpaired + frames_paired, and frames_paired =
        frames_processed + frames_rejected + frames_dropped (+ the frame in progress); with
        fusion, frames_processed = views_fused + views_without_tf + fusion_failed. WARN too
        while the last processed view could not be fused (no camera pose in TF)."""
        values = {"device": self.device, **self.pairing.values(),
                  **self.stats.values(fusion=self.settings.fusion)}
        images, infos, pairs = self.pairing.window()
        depths = self.pairing.depth_window()
        self.unpaired_warning = None
        if (images or infos or depths) and not pairs:
            self.unpaired_warning = self._unpaired_message(images, infos, depths)
        if self.estimator is None:
            level, message = "ERROR", str(self.estimator_error)
        elif self.unpaired_warning is not None:
            level, message = "WARN", self.unpaired_warning
        elif self.stats.last_rejected:
            level, message = "WARN", f"frame rejected: {self.stats.last_error}"
        elif self.settings.fusion and self.stats.last_fusion_error:
            level, message = "WARN", f"view not fused: {self.stats.last_fusion_error}"
        else:
            level, message = "OK", f"{self.stats.instances} instance(s) in the last frame"
        return m.diagnostics_msg(self.types, header, name=name, hardware_id=self.device,
                                 level=level, message=message, values=values)


    def _unpaired_message(self, images: int, infos: int, depths: int = 0) -> str:
        """Why nothing paired lately, naming the topics."""
        img, inf, dep = self.image_topic, self.info_topic, self.depth_topic
        if not images and not infos:
            return f"{depths} depth image(s) on {dep} but no image on {img}: nothing to pair"
        if not infos:
            return f"{images} image(s) on {img} but no camera_info on {inf}: nothing to pair"
        if not images:
            return f"{infos} camera_info(s) on {inf} but no image on {img}: nothing to pair"
        if self.pairing.use_depth and not depths:
            return (f"{images} image(s) on {img} but no depth on {dep} (use_depth is on): "
                    "nothing to pair")
        offset = self.pairing.offset_s()
        seen = f"{offset:.3f} s" if offset is not None else "unknown"
        if self.pairing.use_depth and offset is not None and offset <= self.pairing.slop:
            depth_offset = self.pairing.offset_s("depth")
            seen = f"{depth_offset:.3f} s" if depth_offset is not None else "unknown"
            return (f"images on {img} and depth on {dep} do not pair: stamps {seen} apart "
                    f"at best, sync_slop is {self.pairing.slop} s")
        return (f"images on {img} and camera_infos on {inf} do not pair: stamps {seen} apart "
                f"at best, sync_slop is {self.pairing.slop} s")


def _finite(poses: list[ObjectPose]) -> tuple[list[ObjectPose], int]:
    """The poses with finite R, t and score, and how many were dropped."""
    if not poses:
        return poses, 0
    flat = np.array([np.concatenate([np.ravel(p.R), np.ravel(p.t), [p.score]])
                     for p in poses], np.float64)  # (N, 13)
    ok = np.isfinite(flat).all(1)
    return [p for p, keep in zip(poses, ok, strict=True) if keep], int((~ok).sum())


class LatestSlot(Generic[T]):
    """A one-item mailbox between a producer and a slow consumer: `put` replaces an item not
    yet taken (a drop, counted), so the consumer always gets the newest and nothing queues."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: T | None = None
        self._full = False
        self._closed = False
        self.dropped = 0

    def put(self, item: T) -> bool:
        """Offer `item`; True when it replaced (dropped) an older one."""
        with self._cond:
            replaced = self._full
            self.dropped += int(replaced)
            self._item, self._full = item, True
            self._cond.notify()
            return replaced

    def take(self, timeout: float | None = None) -> T | None:
        """The newest item, waiting up to `timeout` s; None on timeout or when closed."""
        with self._cond:
            self._cond.wait_for(lambda: self._full or self._closed, timeout)
            if not self._full:
                return None
            item, self._item, self._full = self._item, None, False
            return item

    def close(self) -> None:
        """Wake the consumer for good."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        """True after `close`."""
        return self._closed
