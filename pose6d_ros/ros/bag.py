"""`pose6d bag`: the node's offline twin on rosbag2 files (mcap or sqlite3), through rosbags.

Each image of the input bag is paired with the camera_info nearest in stamp (within `slop`),
with `depth_topic` also with the depth image nearest in stamp (within `slop`; without one it
is processed RGB-only), and goes through the node's own `FrameProcessor`; the outputs are
written, with the image's log time, into a new bag that `ros2 bag play` and Foxglove open:
`detections`, `poses`, `/tf`, `markers`, latched `label_info` and `object_info`,
`/diagnostics` at the end, and a copy of the input image, camera_info and depth topics.
With the `fusion` parameter, the camera poses come from the bag's /tf and /tf_static (see
TfBuffer), the fused outputs go to `fused/poses`, `fused/detections` and `/tf`, and the
input TF topics are copied too.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pose6d_ros.ros import messages as m
from pose6d_ros.ros.frame_processor import FrameProcessor, Rejected
from pose6d_ros.ros.tf_buffer import TfBuffer

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
INFO_TYPE = "sensor_msgs/msg/CameraInfo"
DEPTH_TYPE = "sensor_msgs/msg/Image"
TF_TYPE = "tf2_msgs/msg/TFMessage"
TF_TOPICS = {"/tf": False, "/tf_static": True}  # topic -> static
SAMPLE_DEPTH_TOPIC = "/camera/aligned_depth_to_color/image_raw"  # as realsense2_camera names it
BAG_VERSION = 8  # rosbag2 metadata version that Humble's reader and newer ones accept
SAMPLE_START_NS = 1_700_000_000 * 10**9  # stamp of a sample bag's first image


class BagError(ValueError):
    """A bag that cannot be used, naming the file and the topic."""


@dataclass
class BagSummary:
    """What `process_bag` did."""

    images: int = 0
    processed: int = 0
    with_depth: int = 0  # processed with a depth image
    instances: int = 0
    views_fused: int = 0  # with fusion: processed images whose view was fused
    views_without_tf: int = 0  # with fusion: processed images without a camera pose
    fused_objects: int = 0  # after the last fused view
    detected: int = 0  # processed images that ran the detector
    tracked: int = 0  # processed images that refined the previous poses (detect_every > 1)
    tracks_lost: int = 0  # tracked instances dropped below track_min_score
    seconds: float = 0.0  # wall-clock time in the processing of the images (not the bag I/O)
    rejected: Counter = field(default_factory=Counter)  # kind -> images
    written: Counter = field(default_factory=Counter)  # output topic -> messages


def _storage(name: str) -> Any:
    from rosbags.rosbag2 import StoragePlugin

    plugins = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
    if name not in plugins:
        raise BagError(f"unknown bag storage {name!r}; known: {sorted(plugins)}")
    return plugins[name]


def _latched_qos() -> list:
    from rosbags.interfaces import (
        Qos,
        QosDurability,
        QosHistory,
        QosLiveliness,
        QosReliability,
        QosTime,
    )

    zero = QosTime(0, 0)  # unspecified: the ROS defaults
    return [Qos(QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL,
                zero, zero, QosLiveliness.AUTOMATIC, zero, False)]


class _Out:
    """Output connections, registered on first use."""

    def __init__(self, writer: Any, store: Any, namespace: str, summary: BagSummary) -> None:
        self.writer, self.store, self.summary = writer, store, summary
        self.namespace = f"/{namespace.strip('/')}" if namespace.strip("/") else ""
        self.connections: dict[str, Any] = {}

    def topic(self, name: str) -> str:
        return name if name.startswith("/") else f"{self.namespace}/{name}"

    def write(self, name: str, msg: Any, timestamp: int, *, latched: bool = False) -> None:
        topic = self.topic(name)
        if topic not in self.connections:
            self.connections[topic] = self.writer.add_connection(
                topic, msg.__msgtype__, typestore=self.store,
                offered_qos_profiles=_latched_qos() if latched else ())
        self.writer.write(self.connections[topic], timestamp,
                          self.store.serialize_cdr(msg, msg.__msgtype__))
        self.summary.written[topic] += 1


def process_bag(src: str | Path, dst: str | Path, processor: FrameProcessor, store: Any, *,
                image_topic: str, info_topic: str, depth_topic: str | None = None,
                slop: float = 0.05, storage: str = "mcap", namespace: str = "",
                copy_input: bool = True, debug_image: bool = False) -> BagSummary:
    """Run `processor` on every image of bag `src`; write the outputs into the new bag `dst`.

    `store` is the rosbags typestore the processor's message types come from; with
    `depth_topic` each image also gets the depth image nearest in stamp within `slop`. With
    the processor's `fusion` on and no `transforms` of its own, camera poses come from the
    bag's TF (the nearest transform within `slop` where the recorded ones end).
    """
    from rosbags.rosbag2 import Reader, ReaderError, WriterError

    src, dst = Path(src), Path(dst)
    if not src.exists():
        raise BagError(f"{src}: cannot read bag: no such file or folder")
    summary = BagSummary()
    own_tf = processor.transforms is None  # this bag's TF, set by _process, not kept
    try:
        with (Reader(src) as reader, _writer(dst, storage) as writer,
              _DepthIndex(src, store, depth_topic, slop) as depths):
            _process(reader, writer, processor, store, summary, depths, src=src,
                     image_topic=image_topic, info_topic=info_topic, slop=slop,
                     namespace=namespace, copy_input=copy_input, debug_image=debug_image)
    except ReaderError as exc:
        raise BagError(f"{src}: cannot read bag: {exc}") from exc
    except WriterError as exc:
        raise BagError(f"{dst}: cannot write bag: {exc}") from exc
    finally:
        if own_tf:
            processor.transforms = None
    return summary


def _writer(dst: Path, storage: str) -> Any:
    from rosbags.rosbag2 import Writer

    return Writer(dst, version=BAG_VERSION, storage_plugin=_storage(storage))


def _time(store: Any, ns: int) -> Any:
    return store.types["builtin_interfaces/msg/Time"](sec=ns // 10**9, nanosec=ns % 10**9)


class _DepthIndex:
    """The depth images of a bag by stamp, read one at a time when an image needs one.

    Only the stamps stay in memory (depth images are large); the message itself is read
    again, through a reader of its own, by its log time.
    """

    def __init__(self, src: Path, store: Any, topic: str | None, slop: float) -> None:
        self.src, self.store, self.topic, self.slop = src, store, topic, slop
        self.reader: Any = None
        self.connections: list = []
        self.stamps = np.zeros(0, np.int64)  # header stamps (ns), sorted
        self.log_times = np.zeros(0, np.int64)  # the same messages' log times

    def __enter__(self) -> _DepthIndex:
        if self.topic is None:
            return self
        from rosbags.rosbag2 import Reader

        self.reader = Reader(self.src)
        self.reader.open()
        try:
            self.connections = _connections(self.reader, self.src, self.topic, (DEPTH_TYPE,))
            stamps, logs = [], []
            for conn, timestamp, raw in self.reader.messages(connections=self.connections):
                stamps.append(m.stamp_ns(self.store.deserialize_cdr(raw, conn.msgtype).header))
                logs.append(timestamp)
        except BaseException:
            self.reader.close()
            raise
        order = np.argsort(np.asarray(stamps, np.int64), kind="stable")
        self.stamps = np.asarray(stamps, np.int64)[order]
        self.log_times = np.asarray(logs, np.int64)[order]
        return self

    def __exit__(self, *exc: object) -> None:
        if self.reader is not None:
            self.reader.close()

    def nearest(self, stamp: int) -> Any | None:
        """The depth image nearest in stamp to `stamp` (ns) within the slop, or None."""
        j = _nearest_index(self.stamps, stamp, self.slop)
        if j is None:
            return None
        log = int(self.log_times[j])
        for conn, _, raw in self.reader.messages(connections=self.connections, start=log,
                                                 stop=log + 1):
            msg = self.store.deserialize_cdr(raw, conn.msgtype)
            if m.stamp_ns(msg.header) == int(self.stamps[j]):
                return msg
        return None


def _process(reader: Any, writer: Any, processor: FrameProcessor, store: Any,
             summary: BagSummary, depths: _DepthIndex, *, src: Path, image_topic: str,
             info_topic: str, slop: float, namespace: str, copy_input: bool,
             debug_image: bool) -> None:
    image_conns = _connections(reader, src, image_topic, IMAGE_TYPES)
    info_conns = _connections(reader, src, info_topic, (INFO_TYPE,))
    depth_conns = ([c for c in reader.connections if c.topic == depths.topic]
                   if depths.topic is not None else [])
    fusion = processor.settings.fusion
    tf_conns = ([c for c in reader.connections if c.topic in TF_TOPICS and c.msgtype == TF_TYPE]
                if fusion else [])
    if fusion and processor.transforms is None:
        tf = TfBuffer(tolerance_s=slop)
        for c, _, raw in reader.messages(connections=tf_conns):
            tf.add(store.deserialize_cdr(raw, c.msgtype), static=TF_TOPICS[c.topic])
        processor.transforms = tf
    for stamp in depths.stamps:
        processor.pairing.depth(int(stamp))
    infos = [store.deserialize_cdr(raw, c.msgtype)
             for c, _, raw in reader.messages(connections=info_conns)]
    info_stamps = np.array([m.stamp_ns(i.header) for i in infos], np.int64)
    for stamp in info_stamps:
        processor.pairing.info(int(stamp))
    order = np.argsort(info_stamps, kind="stable")
    infos, info_stamps = [infos[i] for i in order], info_stamps[order]

    out = _Out(writer, store, namespace, summary)
    copies: dict[int, Any] = {}
    for c in image_conns + info_conns + depth_conns + tf_conns if copy_input else []:
        same = next((copies[d.id] for d in tf_conns if d.id in copies and d.topic == c.topic),
                    None)  # one /tf connection for every recorder's
        copies[c.id] = same or writer.add_connection(
            c.topic, c.msgtype, typestore=store,
            offered_qos_profiles=_latched_qos() if TF_TOPICS.get(c.topic) else ())
        if c.topic == "/tf":
            out.connections["/tf"] = copies[c.id]  # the outputs' TF joins the copy
    Header = store.types["std_msgs/msg/Header"]
    start = reader.start_time
    out.write("label_info", processor.label_info(Header(stamp=_time(store, start),
                                                        frame_id="")), start, latched=True)
    out.write("object_info", processor.object_info(), start, latched=True)
    last = start
    st = processor.stats
    without_tf = st.views_without_tf
    counts = st.detected, st.tracked, st.tracks_lost
    image_ids = {c.id for c in image_conns}
    for conn, timestamp, raw in reader.messages(connections=image_conns + info_conns
                                                + (depth_conns + tf_conns if copy_input
                                                   else [])):
        if conn.id in copies:
            writer.write(copies[conn.id], timestamp, raw)
        if conn.id not in image_ids:
            continue
        last = timestamp
        summary.images += 1
        image = store.deserialize_cdr(raw, conn.msgtype)
        processor.pairing.image(m.stamp_ns(image.header))
        info = _nearest(infos, info_stamps, m.stamp_ns(image.header), slop)
        if info is None:
            summary.rejected["no_camera_info"] += 1
            continue
        depth = depths.nearest(m.stamp_ns(image.header)) if depths.topic is not None else None
        processor.pairing.pair(with_depth=depth is not None)
        tic = time.perf_counter()
        result = processor.process(image, info, depth, debug_image=debug_image)
        summary.seconds += time.perf_counter() - tic
        if isinstance(result, Rejected):
            summary.rejected[result.kind] += 1
            continue
        summary.processed += 1
        summary.with_depth += int(depth is not None)
        summary.instances += len(result.poses)
        out.write("detections", result.detections, timestamp)
        out.write("poses", result.pose_array, timestamp)
        for name, msg in result.class_poses.items():
            out.write(f"poses/{name}", msg, timestamp)
        if result.tf is not None and result.tf.transforms:
            out.write("/tf", result.tf, timestamp)
        if result.markers is not None:
            out.write("markers", result.markers, timestamp)
        if result.debug_image is not None:
            out.write("debug_image", result.debug_image, timestamp)
        if result.fused is not None:
            summary.views_fused += 1
            summary.fused_objects = len(result.fused.poses)
            out.write("fused/poses", result.fused.pose_array, timestamp)
            out.write("fused/detections", result.fused.detections, timestamp)
            if result.fused.tf is not None and result.fused.tf.transforms:
                out.write("/tf", result.fused.tf, timestamp)
    summary.views_without_tf = st.views_without_tf - without_tf
    summary.detected, summary.tracked, summary.tracks_lost = (
        st.detected - counts[0], st.tracked - counts[1], st.tracks_lost - counts[2])
    out.write("/diagnostics", processor.diagnostics(Header(stamp=_time(store, last),
                                                           frame_id="")), last)


def _connections(reader: Any, path: Path, topic: str, msgtypes: tuple[str, ...]) -> list:
    conns = [c for c in reader.connections if c.topic == topic]
    if not conns:
        topics = sorted({c.topic for c in reader.connections})
        raise BagError(f"{path}: no topic {topic!r}; the bag has {topics}")
    bad = sorted({c.msgtype for c in conns} - set(msgtypes))
    if bad:
        raise BagError(f"{path}: topic {topic!r} has type {bad[0]}; expected "
                       f"{' or '.join(msgtypes)}")
    return conns


def _nearest(infos: list, stamps: np.ndarray, stamp: int, slop: float) -> Any | None:
    """The camera_info nearest in stamp to `stamp` (ns), if within `slop` seconds."""
    best = _nearest_index(stamps, stamp, slop)
    return None if best is None else infos[best]


def _nearest_index(stamps: np.ndarray, stamp: int, slop: float) -> int | None:
    """Index of the entry of sorted `stamps (N,)` (ns) nearest to `stamp`, if within `slop`
    seconds."""
    i = int(np.searchsorted(stamps, stamp))
    near = [j for j in (i - 1, i) if 0 <= j < len(stamps)]
    if not near:
        return None
    best = min(near, key=lambda j: abs(int(stamps[j]) - stamp))
    return best if abs(int(stamps[best]) - stamp) <= slop * 1e9 else None


def make_sample_bag(scene: str | Path, dst: str | Path, store: Any, *,
                    image_topic: str = "/camera/image_raw",
                    info_topic: str = "/camera/camera_info",
                    depth_topic: str = SAMPLE_DEPTH_TOPIC,
                    frame_id: str = "camera_optical_frame", rate_hz: float = 2.0,
                    storage: str = "mcap", world_frame: str = "world") -> int:
    """A bag of the images of a BOP scene folder (`rgb/`, `scene_camera.json`) as rgb8 Image
    + CameraInfo pairs at `rate_hz`, and where the scene has `depth/`, each image's depth as
    a 16UC1 millimetre Image (same stamp and frame) on `depth_topic`; where
    `scene_camera.json` has camera poses (`cam_R_w2c`, `cam_t_w2c`: `pose6d synth` scenes),
    each image's camera pose as TF `world_frame` -> `frame_id` on /tf at the image stamp. The
    nearest README.md (the data's attribution and license) is copied beside it as
    ATTRIBUTION.md. Returns the number of images."""
    from rosbags.rosbag2 import WriterError

    from pose6d_ros.data.bop import (
        load_depth_scales,
        load_scene_camera,
        load_scene_camera_poses,
        read_depth,
        read_image,
    )

    scene, dst = Path(scene), Path(dst)
    cameras = load_scene_camera(scene / "scene_camera.json")
    T_cam_world = load_scene_camera_poses(scene / "scene_camera.json")
    files = {int(p.stem): p for p in sorted((scene / "rgb").glob("*"))
             if p.suffix.lower() in (".png", ".jpg", ".jpeg")}
    ids = sorted(set(files) & set(cameras))
    if not ids:
        raise BagError(f"{scene}: no images in rgb/ with an entry in scene_camera.json")
    depth_files = {int(p.stem): p for p in sorted((scene / "depth").glob("*.png"))}
    depth_scales = load_depth_scales(scene / "scene_camera.json") if depth_files else {}
    types = m.rosbags_types(store)
    readme = next((d / "README.md" for d in (scene, *scene.parents[:2])
                   if (d / "README.md").is_file()), None)
    try:
        with _writer(dst, storage) as writer:
            writer.set_custom_data("source", f"BOP scene folder {scene.name}, images {ids}")
            c_image = writer.add_connection(image_topic, "sensor_msgs/msg/Image",
                                            typestore=store)
            c_info = writer.add_connection(info_topic, INFO_TYPE, typestore=store)
            c_depth = (writer.add_connection(depth_topic, DEPTH_TYPE, typestore=store)
                       if set(ids) & set(depth_files) else None)
            c_tf = (writer.add_connection("/tf", TF_TYPE, typestore=store)
                    if set(ids) & set(T_cam_world) else None)
            for k, im_id in enumerate(ids):
                rgb = read_image(files[im_id])
                h, w = rgb.shape[:2]
                K = cameras[im_id]
                stamp = SAMPLE_START_NS + round(k * 1e9 / rate_hz)
                header = types.Header(stamp=_time(store, stamp), frame_id=frame_id)
                image = m.image_msg(types, header, rgb)
                info = types.CameraInfo(
                    header=header, height=h, width=w, distortion_model="plumb_bob",
                    d=np.zeros(5), k=K.reshape(-1), r=np.eye(3).reshape(-1),
                    p=np.hstack([K, np.zeros((3, 1))]).reshape(-1))
                writer.write(c_image, stamp, store.serialize_cdr(image, image.__msgtype__))
                writer.write(c_info, stamp, store.serialize_cdr(info, info.__msgtype__))
                if c_depth is not None and im_id in depth_files:
                    metres = read_depth(depth_files[im_id], depth_scales[im_id])  # (H, W)
                    mm = np.clip(np.round(metres * 1000.0), 0, 65535).astype(np.uint16)
                    depth = m.depth_image_msg(types, header, mm)
                    writer.write(c_depth, stamp, store.serialize_cdr(depth, depth.__msgtype__))
                if c_tf is not None and im_id in T_cam_world:
                    T = np.linalg.inv(T_cam_world[im_id])  # T_world_cam
                    tf = types.TFMessage(transforms=[m.transform_stamped(
                        types, types.Header(stamp=header.stamp, frame_id=world_frame),
                        frame_id, T[:3, 3], m.matrix_quaternion(T[:3, :3]))])
                    writer.write(c_tf, stamp, store.serialize_cdr(tf, tf.__msgtype__))
    except WriterError as exc:
        raise BagError(f"{dst}: cannot write bag: {exc}") from exc
    if readme is not None:
        shutil.copyfile(readme, dst / "ATTRIBUTION.md")
    return len(ids)


def _has_camera_poses(path: Path) -> bool:
    from pose6d_ros.data.bop import load_scene_camera_poses

    return bool(load_scene_camera_poses(path))


def run(args: Any) -> int:
    """`pose6d bag` (arguments from pose6d_ros.cli): process a bag, or `--make-sample`."""
    from pose6d_ros.core.paths import sample_scene, share_dir
    from pose6d_ros.ros.frame_processor import load_estimator
    from pose6d_ros.ros.parameters import load_params_yaml, settings_from_dict

    try:
        store = m.rosbags_typestore(args.distro)
        if args.make_sample is not None:
            scene = Path(args.make_sample or sample_scene())
            depth_topic = args.depth_topic or SAMPLE_DEPTH_TOPIC
            n = make_sample_bag(scene, args.out, store, image_topic=args.image_topic,
                                info_topic=args.info_topic, depth_topic=depth_topic,
                                storage=args.storage)
            depth = f" (depth on {depth_topic})" if (scene / "depth").is_dir() else ""
            tf = (" (camera poses on /tf)" if _has_camera_poses(scene / "scene_camera.json")
                  else "")
            print(f"wrote {args.out}: {n} images on {args.image_topic} and "
                  f"{args.info_topic}{depth}{tf}")
            return 0
        if args.input is None:
            raise BagError("give the input bag (or --make-sample)")
        settings = load_params_yaml(args.params or share_dir() / "config" / "pose.yaml")
        flags = {k: getattr(args, k) for k in ("objects", "detector_weights",
                                                "coordnet_weights", "coarse",
                                                "templates_cache", "refine", "device")}
        settings = settings_from_dict({k: str(v) for k, v in flags.items() if v is not None},
                                      base=settings)
        if args.detect_every is not None:
            settings = settings_from_dict({"detect_every": args.detect_every}, base=settings)
        if args.depth_topic:  # frames without a depth image nearby are counted
            settings = settings_from_dict({"use_depth": True}, base=settings)
        estimator, error = load_estimator(settings)
        if estimator is None:
            raise BagError(str(error))
        processor = FrameProcessor(m.rosbags_types(store), settings, estimator.objects,
                                   estimator=estimator, image_topic=args.image_topic,
                                   info_topic=args.info_topic,
                                   depth_topic=args.depth_topic or "depth")
        summary = process_bag(args.input, args.out, processor, store,
                              image_topic=args.image_topic, info_topic=args.info_topic,
                              depth_topic=args.depth_topic,
                              slop=settings.sync_slop if args.slop is None else args.slop,
                              storage=args.storage, namespace=args.namespace,
                              copy_input=not args.no_copy_input, debug_image=args.debug_image)
    except (BagError, ValueError, OSError) as exc:
        print(f"pose6d: error: bag: {exc}", file=sys.stderr)
        return 2
    rejected = ", ".join(f"{k} {v}" for k, v in sorted(summary.rejected.items())) or "none"
    depth = f", {summary.with_depth} with depth" if args.depth_topic else ""
    fused = (f", {summary.views_fused} views fused ({summary.views_without_tf} without TF, "
             f"{summary.fused_objects} objects)" if settings.fusion else "")
    fps = summary.processed / summary.seconds if summary.seconds > 0 else 0.0
    tracking = (f" ({summary.detected} detected, {summary.tracked} tracked, "
                f"{summary.tracks_lost} tracks lost)" if settings.detect_every > 1 else "")
    print(f"bag {args.input} -> {args.out} ({args.storage}): {summary.images} images, "
          f"{summary.processed} processed{tracking}, {summary.instances} instances{depth}"
          f"{fused}; rejected: {rejected}")
    print(f"{fps:.2f} frames/s ({summary.processed} images processed in "
          f"{summary.seconds:.2f} s; reading and writing the bags not counted)")
    for topic, count in sorted(summary.written.items()):
        print(f"  {topic:<24} {count:>6} messages")
    return 0 if summary.processed else 1
