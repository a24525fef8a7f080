"""ROS messages in and out: images and camera_info decoded, every output message built.

Builders take a `MessageTypes` namespace, so the same functions make rclpy messages in the
node (`rclpy_types()`) and rosbags messages in `pose6d bag` and the tests
(`rosbags_types(rosbags_typestore("humble"))`: rosbags ships the real ROS 2 definitions,
vision_msgs 4.x is registered here). Poses are `T_cam_obj` of the mesh origin in the image's
optical frame; quaternions in ROS order (x, y, z, w).
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from pose6d_ros.core.camera import check_intrinsics
from pose6d_ros.core.depth import DepthError, check_depth, depth_to_metres
from pose6d_ros.core.draw import PALETTE
from pose6d_ros.core.objects import ObjectRegistry
from pose6d_ros.core.paths import PACKAGE, share_dir
from pose6d_ros.core.rotations import matrix_to_quaternion, quaternion_to_matrix
from pose6d_ros.pipeline import ObjectPose

TYPE_NAMES = {
    "Time": "builtin_interfaces/msg/Time",
    "Duration": "builtin_interfaces/msg/Duration",
    "Header": "std_msgs/msg/Header",
    "String": "std_msgs/msg/String",
    "ColorRGBA": "std_msgs/msg/ColorRGBA",
    "Point": "geometry_msgs/msg/Point",
    "Quaternion": "geometry_msgs/msg/Quaternion",
    "Vector3": "geometry_msgs/msg/Vector3",
    "Pose": "geometry_msgs/msg/Pose",
    "PoseWithCovariance": "geometry_msgs/msg/PoseWithCovariance",
    "PoseArray": "geometry_msgs/msg/PoseArray",
    "Transform": "geometry_msgs/msg/Transform",
    "TransformStamped": "geometry_msgs/msg/TransformStamped",
    "TFMessage": "tf2_msgs/msg/TFMessage",
    "Image": "sensor_msgs/msg/Image",
    "CompressedImage": "sensor_msgs/msg/CompressedImage",
    "CameraInfo": "sensor_msgs/msg/CameraInfo",
    "ObjectHypothesis": "vision_msgs/msg/ObjectHypothesis",
    "ObjectHypothesisWithPose": "vision_msgs/msg/ObjectHypothesisWithPose",
    "BoundingBox3D": "vision_msgs/msg/BoundingBox3D",
    "Detection3D": "vision_msgs/msg/Detection3D",
    "Detection3DArray": "vision_msgs/msg/Detection3DArray",
    "VisionClass": "vision_msgs/msg/VisionClass",
    "LabelInfo": "vision_msgs/msg/LabelInfo",
    "Marker": "visualization_msgs/msg/Marker",
    "MarkerArray": "visualization_msgs/msg/MarkerArray",
    "KeyValue": "diagnostic_msgs/msg/KeyValue",
    "DiagnosticStatus": "diagnostic_msgs/msg/DiagnosticStatus",
    "DiagnosticArray": "diagnostic_msgs/msg/DiagnosticArray",
}

# vision_msgs 4.1 (Humble, Jazzy), fields as in ros-perception/vision_msgs (comments dropped):
# rosbags' stores do not ship it.
VISION_MSGS = {
    "vision_msgs/msg/ObjectHypothesis": "string class_id\nfloat64 score\n",
    "vision_msgs/msg/ObjectHypothesisWithPose":
        "vision_msgs/ObjectHypothesis hypothesis\ngeometry_msgs/PoseWithCovariance pose\n",
    "vision_msgs/msg/BoundingBox3D": "geometry_msgs/Pose center\ngeometry_msgs/Vector3 size\n",
    "vision_msgs/msg/Detection3D":
        "std_msgs/Header header\nvision_msgs/ObjectHypothesisWithPose[] results\n"
        "vision_msgs/BoundingBox3D bbox\nstring id\n",
    "vision_msgs/msg/Detection3DArray":
        "std_msgs/Header header\nvision_msgs/Detection3D[] detections\n",
    "vision_msgs/msg/VisionClass": "uint16 class_id\nstring class_name\n",
    "vision_msgs/msg/LabelInfo":
        "std_msgs/Header header\nvision_msgs/VisionClass[] class_map\nfloat32 threshold\n",
}

MARKER_MESH_RESOURCE = 10  # visualization_msgs/Marker.MESH_RESOURCE
MARKER_ADD = 0  # visualization_msgs/Marker.ADD
# Image encodings accepted (sensor_msgs/image_encodings names): channels, conversion to RGB.
ENCODINGS = {"rgb8": (3, None), "bgr8": (3, cv2.COLOR_BGR2RGB),
             "rgba8": (4, cv2.COLOR_RGBA2RGB), "bgra8": (4, cv2.COLOR_BGRA2RGB),
             "mono8": (1, cv2.COLOR_GRAY2RGB)}
# Depth encodings accepted: stored type (little-endian) and whether `depth_scale` applies
# (16-bit readings in sensor units, millimetres by default) or the values are metres.
DEPTH_ENCODINGS = {"16UC1": (np.dtype("<u2"), True), "mono16": (np.dtype("<u2"), True),
                   "32FC1": (np.dtype("<f4"), False)}


class FrameError(ValueError):
    """An input frame that cannot be used; `kind` names the problem for counting."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class MessageTypes:
    """Message constructors by short name (see TYPE_NAMES), keyword arguments only.

    `uint8_array(a)` makes a `uint8[]` field value from an array (rclpy wants array.array,
    rosbags numpy). Constants are attributes (`DiagnosticStatus.ERROR`).
    """

    def __init__(self, constructors: dict[str, Callable[..., Any]],
                 uint8_array: Callable[[np.ndarray], Any]) -> None:
        missing = sorted(set(TYPE_NAMES) - set(constructors))
        if missing:
            raise ValueError(f"message types missing: {missing}")
        for name in TYPE_NAMES:
            setattr(self, name, constructors[name])
        self.uint8_array = uint8_array

    def __getattr__(self, name: str) -> Any:  # typing: constructors are set in __init__
        raise AttributeError(f"no message type {name!r}; known: {sorted(TYPE_NAMES)}")


def rclpy_types() -> MessageTypes:
    """The ROS 2 Python message classes (needs a sourced ROS 2 installation)."""
    import array

    constructors = {}
    for short, full in TYPE_NAMES.items():
        package, _, name = full.split("/")
        constructors[short] = getattr(importlib.import_module(f"{package}.msg"), name)
    return MessageTypes(constructors,
                        lambda a: array.array("B", np.ascontiguousarray(a, np.uint8).tobytes()))


def rosbags_typestore(distro: str = "humble") -> Any:
    """A rosbags typestore of ROS 2 `distro` (humble, jazzy) with vision_msgs registered."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    stores = {"humble": Stores.ROS2_HUMBLE, "jazzy": Stores.ROS2_JAZZY}
    if distro not in stores:
        raise ValueError(f"unknown ROS 2 distribution {distro!r}; known: {sorted(stores)}")
    store = get_typestore(stores[distro])
    types: dict = {}
    for name, text in VISION_MSGS.items():
        types.update(get_types_from_msg(text, name))
    store.register(types)
    return store


def rosbags_types(store: Any) -> MessageTypes:
    """Constructors of rosbags message classes from `store`; omitted fields get ROS defaults."""
    return MessageTypes({short: _rosbags_constructor(store, full)
                         for short, full in TYPE_NAMES.items()},
                        lambda a: np.ascontiguousarray(a, np.uint8).reshape(-1))


_NUMPY = {"bool": np.bool_, "byte": np.uint8, "char": np.uint8, "int8": np.int8,
          "uint8": np.uint8, "int16": np.int16, "uint16": np.uint16, "int32": np.int32,
          "uint32": np.uint32, "int64": np.int64, "uint64": np.uint64,
          "float32": np.float32, "float64": np.float64}


def _rosbags_constructor(store: Any, msgtype: str) -> Callable[..., Any]:
    def make(**fields: Any) -> Any:
        return _rosbags_new(store, msgtype, fields)

    for name, _, value in store.fielddefs[msgtype][0]:
        setattr(make, name, value)
    make.__name__ = msgtype.rsplit("/", 1)[-1]
    return make


def _rosbags_new(store: Any, msgtype: str, fields: dict[str, Any]) -> Any:
    defs = store.fielddefs[msgtype][1]
    unknown = set(fields) - {name for name, _ in defs}
    if unknown:
        raise TypeError(f"{msgtype}: unknown field(s) {sorted(unknown)}")
    return store.types[msgtype](**{name: fields[name] if name in fields
                                   else _rosbags_default(store, desc) for name, desc in defs})


def _rosbags_default(store: Any, desc: tuple) -> Any:
    from rosbags.interfaces import Nodetype

    kind, detail = desc
    if kind == Nodetype.BASE:
        base = detail[0]
        return ("" if base in ("string", "wstring") else False if base == "bool"
                else 0.0 if base.startswith("float") else 0)
    if kind == Nodetype.NAME:
        return _rosbags_new(store, detail, {})
    sub, length = detail
    numeric = sub[0] == Nodetype.BASE and sub[1][0] in _NUMPY
    if kind == Nodetype.ARRAY:
        return (np.zeros(length, _NUMPY[sub[1][0]]) if numeric
                else [_rosbags_default(store, sub) for _ in range(length)])
    return np.zeros(0, _NUMPY[sub[1][0]]) if numeric else []


# ---- input ----------------------------------------------------------------------------

def decode_image(msg: Any, topic: str = "image") -> np.ndarray:
    """`(H, W, 3)` uint8 RGB from a sensor_msgs Image or CompressedImage; FrameError names
    the topic and the problem (unknown encoding, empty, truncated, undecodable)."""
    if hasattr(msg, "encoding"):
        return _decode_raw(msg, topic)
    return _decode_compressed(msg, topic)


def _decode_raw(msg: Any, topic: str) -> np.ndarray:
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    data = np.frombuffer(msg.data, np.uint8)
    if h == 0 or w == 0 or data.size == 0:
        raise FrameError("empty", f"{topic}: empty image ({w}x{h}, {data.size} bytes)")
    if msg.encoding not in ENCODINGS:
        raise FrameError("encoding", f"{topic}: unsupported image encoding {msg.encoding!r}; "
                                     f"supported: {', '.join(ENCODINGS)}")
    channels, code = ENCODINGS[msg.encoding]
    if step < w * channels or data.size < step * h:
        raise FrameError("size", f"{topic}: {data.size} bytes cannot hold {h} rows of step "
                                 f"{step} ({w} px x {channels} channels, {msg.encoding})")
    img = data[: step * h].reshape(h, step)[:, : w * channels].reshape(h, w, channels)
    # A copy either way: the message's buffer is read-only and not ours to keep.
    return np.array(img) if code is None else np.ascontiguousarray(cv2.cvtColor(img, code))


def _decode_compressed(msg: Any, topic: str) -> np.ndarray:
    fmt = str(msg.format).lower()
    if "compresseddepth" in fmt:
        raise FrameError("encoding", f"{topic}: unsupported compressed format {msg.format!r} "
                                     "(depth); expected a colour or mono JPEG/PNG")
    data = np.frombuffer(msg.data, np.uint8)
    if data.size == 0:
        raise FrameError("empty", f"{topic}: empty compressed image")
    img = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        raise FrameError("decode", f"{topic}: cannot decode compressed image "
                                   f"(format {msg.format!r}, {data.size} bytes)")
    # image_transport writes colour as BGR ("... compressed bgr8"); "compressed rgb8" is
    # stored in RGB order already.
    if fmt.endswith("compressed rgb8"):
        return np.ascontiguousarray(img)
    return np.ascontiguousarray(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))


def decode_depth(msg: Any, image_shape: tuple[int, ...], *, scale: float = 0.001,
                 topic: str = "depth") -> np.ndarray:
    """`(H, W)` float32 metres (0 = no reading) from a sensor_msgs Image registered to the
    colour image of shape `(H, W, ...)`: 16UC1 / mono16 readings times `scale` (metres per
    unit), 32FC1 taken as metres. FrameError "depth" names the topic and the encoding for
    an unsupported encoding, big-endian data, a wrong step or size, and whatever
    `check_depth` refuses (another size than the image, no reading, wrong units)."""
    encoding = str(msg.encoding)
    if encoding not in DEPTH_ENCODINGS:
        raise FrameError("depth", f"{topic}: unsupported depth encoding {encoding!r}; "
                                  f"supported: {', '.join(DEPTH_ENCODINGS)}")
    dtype, scaled = DEPTH_ENCODINGS[encoding]
    if msg.is_bigendian:
        raise FrameError("depth", f"{topic}: big-endian {encoding} depth; expected "
                                  "little-endian (is_bigendian 0)")
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    data = np.frombuffer(msg.data, np.uint8)
    if h == 0 or w == 0 or data.size == 0:
        raise FrameError("depth", f"{topic}: empty {encoding} depth ({w}x{h}, "
                                  f"{data.size} bytes)")
    row = w * dtype.itemsize
    if step < row or data.size < step * h:
        raise FrameError("depth", f"{topic}: {data.size} bytes cannot hold {h} rows of step "
                                  f"{step} ({w} px x {dtype.itemsize} bytes, {encoding})")
    rows = np.ascontiguousarray(data[: step * h].reshape(h, step)[:, :row])
    raw = rows.view(dtype).reshape(h, w)
    depth = depth_to_metres(raw, scale if scaled else 1.0)
    try:
        return check_depth(depth, image_shape, source=f"{topic} ({encoding})")
    except DepthError as exc:
        hint = ("" if scaled or "plausible" not in str(exc) else
                f"; {encoding} is taken as metres, depth_scale does not apply to it")
        raise FrameError("depth", f"{exc}{hint}") from None


def camera_matrix(info: Any, *, rectified: bool, topic: str = "camera_info") -> np.ndarray:
    """`K (3, 3)` float64 from a CameraInfo: P's left 3x3 for rectified images, else K."""
    if rectified:
        K, source = np.asarray(info.p, np.float64).reshape(3, 4)[:, :3].copy(), "P"
    else:
        K, source = np.asarray(info.k, np.float64).reshape(3, 3).copy(), "K"
    try:
        check_intrinsics(torch.from_numpy(K), f"{topic} {source}")
    except ValueError as exc:
        raise FrameError("intrinsics", f"{exc} (got {K.reshape(-1).tolist()}; an "
                                       "uncalibrated camera?)") from None
    return K


def check_pair(image_header: Any, size: tuple[int, int], info: Any, *,
               image_topic: str = "image", info_topic: str = "camera_info") -> None:
    """FrameError unless the image (`size` = height, width) and its camera_info agree in
    frame_id and size, and the image names its frame (the parent of every output)."""
    h, w = size
    if (int(info.height), int(info.width)) != (h, w):
        raise FrameError("size", f"{image_topic}: image is {w}x{h} but {info_topic} says "
                                 f"{int(info.width)}x{int(info.height)}")
    if not image_header.frame_id:  # tf2 ignores such transforms, RViz cannot place markers
        raise FrameError("frame_id", f"{image_topic}: empty frame_id; the poses, TF and "
                                     "markers need the camera's optical frame")
    if image_header.frame_id != info.header.frame_id:
        raise FrameError("frame_id", f"{image_topic}: frame_id {image_header.frame_id!r} "
                                     f"differs from {info_topic}'s {info.header.frame_id!r}")


# ---- object metadata -------------------------------------------------------------------

@dataclass(frozen=True)
class ObjectCatalog:
    """Per-object constants of the output messages, from the objects registry (metres)."""

    objects: ObjectRegistry
    bbox_center: np.ndarray  # (O, 3) mesh bounding-box centre, object frame
    bbox_size: np.ndarray  # (O, 3) mesh bounding-box extents
    mesh_urls: tuple[str, ...]  # package:// inside the package's share folder, else file://
    colors: np.ndarray  # (O, 4) RGBA in [0, 1]


def object_catalog(objects: ObjectRegistry) -> ObjectCatalog:
    """The catalog of `objects` (loads every mesh once for its bounds)."""
    bounds = np.stack([o.bounds for o in objects])  # (O, 2, 3)
    colors = np.concatenate([PALETTE[np.arange(len(objects)) % len(PALETTE)] / 255.0,
                             np.full((len(objects), 1), 0.8)], axis=1)
    return ObjectCatalog(objects=objects, bbox_center=bounds.mean(1),
                         bbox_size=bounds[:, 1] - bounds[:, 0],
                         mesh_urls=tuple(mesh_url(o.mesh_path) for o in objects),
                         colors=colors)


def mesh_url(path: Path) -> str:
    """`package://pose6d_ros/...` for a file under the package's share folder, else file://."""
    path = Path(path).resolve()
    try:
        return f"package://{PACKAGE}/{path.relative_to(share_dir().resolve()).as_posix()}"
    except (ValueError, FileNotFoundError):
        return path.as_uri()


def instance_name(name: str, index: int) -> str:
    """`<object>_<index>`: the stable instance id of Detection3D.id and TF frames."""
    return f"{name}_{int(index)}"


# ---- output ----------------------------------------------------------------------------

def copy_header(types: MessageTypes, header: Any, frame_id: str | None = None) -> Any:
    """A Header with the stamp and frame_id (or `frame_id`) of `header` (any flavour)."""
    return types.Header(stamp=types.Time(sec=int(header.stamp.sec),
                                         nanosec=int(header.stamp.nanosec)),
                        frame_id=str(header.frame_id if frame_id is None else frame_id))


def _arrays(poses: Sequence[ObjectPose]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`R (N, 3, 3)`, `t (N, 3)`, quaternions `(N, 4)` (x, y, z, w) of the poses."""
    if not poses:
        return np.zeros((0, 3, 3)), np.zeros((0, 3)), np.zeros((0, 4))
    R = np.stack([np.asarray(p.R, np.float64) for p in poses])
    t = np.stack([np.asarray(p.t, np.float64) for p in poses])
    return R, t, matrix_to_quaternion(torch.from_numpy(R)).numpy()


def _pose(types: MessageTypes, t: np.ndarray, q: np.ndarray) -> Any:
    x, y, z = (float(v) for v in t)
    qx, qy, qz, qw = (float(v) for v in q)
    return types.Pose(position=types.Point(x=x, y=y, z=z),
                      orientation=types.Quaternion(x=qx, y=qy, z=qz, w=qw))


def _vector3(types: MessageTypes, v: np.ndarray) -> Any:
    return types.Vector3(x=float(v[0]), y=float(v[1]), z=float(v[2]))


def detections_msg(types: MessageTypes, header: Any, poses: Sequence[ObjectPose],
                   catalog: ObjectCatalog) -> Any:
    """Detection3DArray: per instance class_id = object name, score in [0, 1], the mesh
    origin's pose, the mesh's bounding box, id `<object>_<index>`."""
    hdr = copy_header(types, header)
    R, t, q = _arrays(poses)
    labels = np.array([p.label for p in poses], np.int64)
    centers = (R @ catalog.bbox_center[labels][..., None])[..., 0] + t  # (N, 3)
    detections = []
    for i, p in enumerate(poses):
        hypothesis = types.ObjectHypothesis(class_id=p.name,
                                            score=float(np.clip(p.score, 0.0, 1.0)))
        result = types.ObjectHypothesisWithPose(
            hypothesis=hypothesis,
            pose=types.PoseWithCovariance(pose=_pose(types, t[i], q[i]),
                                          covariance=np.zeros(36)))  # unknown
        bbox = types.BoundingBox3D(center=_pose(types, centers[i], q[i]),
                                   size=_vector3(types, catalog.bbox_size[p.label]))
        detections.append(types.Detection3D(header=hdr, results=[result], bbox=bbox,
                                            id=instance_name(p.name, p.instance)))
    return types.Detection3DArray(header=hdr, detections=detections)


def pose_array_msg(types: MessageTypes, header: Any, poses: Sequence[ObjectPose]) -> Any:
    """PoseArray of the instances' mesh-origin poses."""
    _, t, q = _arrays(poses)
    return types.PoseArray(header=copy_header(types, header),
                           poses=[_pose(types, t[i], q[i]) for i in range(len(poses))])


def class_pose_arrays(types: MessageTypes, header: Any, poses: Sequence[ObjectPose],
                      names: Sequence[str]) -> dict[str, Any]:
    """One PoseArray per object name (empty when the object is not seen)."""
    return {name: pose_array_msg(types, header, [p for p in poses if p.name == name])
            for name in names}


def frame_name(prefix: str, name: str, index: int) -> str:
    """TF child frame of an instance: `<prefix><object>_<index>`."""
    return f"{prefix}{instance_name(name, index)}"


def transform_stamped(types: MessageTypes, header: Any, child: str, t: np.ndarray,
                      q: np.ndarray) -> Any:
    """TransformStamped `T_parent_child`: parent = `header`'s frame, translation `t (3,)`,
    rotation `q (4,)` (x, y, z, w)."""
    return types.TransformStamped(
        header=copy_header(types, header), child_frame_id=child,
        transform=types.Transform(translation=_vector3(types, t),
                                  rotation=types.Quaternion(x=float(q[0]), y=float(q[1]),
                                                            z=float(q[2]), w=float(q[3]))))


def tf_msg(types: MessageTypes, header: Any, poses: Sequence[ObjectPose], prefix: str
           ) -> Any:
    """TFMessage: parent = the image frame, stamp = the image stamp, one child per instance."""
    _, t, q = _arrays(poses)
    return types.TFMessage(transforms=[
        transform_stamped(types, header, frame_name(prefix, p.name, p.instance), t[i], q[i])
        for i, p in enumerate(poses)])


def transform_matrix(transform: Any) -> np.ndarray:
    """`T (4, 4)` of a geometry_msgs Transform (the quaternion normalised)."""
    v, r = transform.translation, transform.rotation
    q = torch.tensor([[r.x, r.y, r.z, r.w]], dtype=torch.float64)
    T = np.eye(4)
    T[:3, :3] = quaternion_to_matrix(q)[0].numpy()
    T[:3, 3] = [v.x, v.y, v.z]
    return T


def matrix_quaternion(R: np.ndarray) -> np.ndarray:
    """Quaternion `(4,)` (x, y, z, w) of a rotation matrix `R (3, 3)`."""
    return matrix_to_quaternion(torch.from_numpy(np.asarray(R, np.float64))[None])[0].numpy()


def markers_msg(types: MessageTypes, header: Any, poses: Sequence[ObjectPose],
                catalog: ObjectCatalog, lifetime: float) -> Any:
    """MarkerArray: the mesh of each instance (ns = object, id = index), scaled from mesh
    units to metres, expiring after `lifetime` seconds (0: never)."""
    hdr = copy_header(types, header)
    _, t, q = _arrays(poses)
    sec = int(lifetime)
    life = types.Duration(sec=sec, nanosec=round((lifetime - sec) * 1e9))
    markers = []
    for i, p in enumerate(poses):
        obj = catalog.objects[p.label]
        r, g, b, a = (float(c) for c in catalog.colors[p.label])
        markers.append(types.Marker(
            header=hdr, ns=p.name, id=int(p.instance), type=MARKER_MESH_RESOURCE,
            action=MARKER_ADD, pose=_pose(types, t[i], q[i]),
            scale=_vector3(types, np.full(3, obj.mesh_scale)),
            color=types.ColorRGBA(r=r, g=g, b=b, a=a), lifetime=life, frame_locked=False,
            mesh_resource=catalog.mesh_urls[p.label], mesh_use_embedded_materials=False))
    return types.MarkerArray(markers=markers)


def image_msg(types: MessageTypes, header: Any, rgb: np.ndarray) -> Any:
    """sensor_msgs Image (rgb8) of `rgb (H, W, 3)` uint8."""
    h, w = rgb.shape[:2]
    return types.Image(header=copy_header(types, header), height=h, width=w, encoding="rgb8",
                       is_bigendian=0, step=3 * w, data=types.uint8_array(rgb))


def depth_image_msg(types: MessageTypes, header: Any, depth: np.ndarray) -> Any:
    """sensor_msgs Image of `depth (H, W)`: uint16 as 16UC1 (sensor units, millimetres by
    default), float32 as 32FC1 (metres); little-endian."""
    encodings = {np.dtype(np.uint16): ("16UC1", "<u2"), np.dtype(np.float32): ("32FC1", "<f4")}
    if depth.ndim != 2 or depth.dtype not in encodings:
        raise ValueError(f"depth: expected (H, W) uint16 or float32, got {depth.shape} "
                         f"{depth.dtype}")
    encoding, stored = encodings[depth.dtype]
    h, w = depth.shape
    data = np.ascontiguousarray(depth, stored).view(np.uint8)
    return types.Image(header=copy_header(types, header), height=h, width=w,
                       encoding=encoding, is_bigendian=0, step=data.shape[1],
                       data=types.uint8_array(data))


def label_info_msg(types: MessageTypes, header: Any, catalog: ObjectCatalog,
                   threshold: float) -> Any:
    """vision_msgs LabelInfo: object id -> name, and the detection threshold."""
    return types.LabelInfo(
        header=copy_header(types, header), threshold=float(threshold),
        class_map=[types.VisionClass(class_id=int(o.id), class_name=o.name)
                   for o in catalog.objects])


def object_info_msg(types: MessageTypes, catalog: ObjectCatalog, tf_prefix: str) -> Any:
    """std_msgs String holding JSON: per object name, id, mesh URL and scale, diameter,
    bounding box and symmetries (metres), which LabelInfo cannot carry."""
    objects = []
    for i, o in enumerate(catalog.objects):
        objects.append({
            "name": o.name, "id": int(o.id), "class_index": i, "mesh_url": catalog.mesh_urls[i],
            "mesh_scale": float(o.mesh_scale), "diameter": float(o.diameter),
            "bbox_center": catalog.bbox_center[i].tolist(),
            "bbox_size": catalog.bbox_size[i].tolist(),
            "symmetries_discrete": [np.asarray(s).reshape(-1).tolist()
                                    for s in o.symmetries_discrete],
            "symmetries_continuous": [{"axis": s.axis.tolist(), "offset": s.offset.tolist()}
                                      for s in o.symmetries_continuous]})
    doc = {"units": "metres", "tf_frame": f"{tf_prefix}<name>_<index>", "objects": objects}
    return types.String(data=json.dumps(doc))


def diagnostics_msg(types: MessageTypes, header: Any, *, name: str, hardware_id: str,
                    level: str, message: str, values: dict[str, str]) -> Any:
    """DiagnosticArray with one status; `level` is OK, WARN, ERROR or STALE."""
    status = types.DiagnosticStatus(
        level=getattr(types.DiagnosticStatus, level), name=name, message=message,
        hardware_id=hardware_id,
        values=[types.KeyValue(key=k, value=str(v)) for k, v in values.items()])
    return types.DiagnosticArray(header=copy_header(types, header), status=[status])


def stamp_ns(header: Any) -> int:
    """A header's stamp in nanoseconds."""
    return int(header.stamp.sec) * 10**9 + int(header.stamp.nanosec)
