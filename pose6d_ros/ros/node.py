"""`pose_node`: camera in; Detection3DArray, PoseArray, TF, markers and a debug image out.

Topics (relative, remap them): in `image` (sensor_msgs/Image, or CompressedImage with
`use_compressed`) and `camera_info`, with `use_depth` also `depth` (sensor_msgs/Image 16UC1,
mono16 or 32FC1, registered to `image`), joined by an ApproximateTimeSynchronizer, sensor-data
QoS (override with `qos_overrides.<topic>.subscription.*`). Out, each with the image's header:
`detections`, `poses` (and `poses/<object>`), `markers`, `debug_image` (drawn only while
subscribed), TF on /tf; latched `label_info` (vision_msgs/LabelInfo) and `object_info`
(std_msgs/String, JSON: mesh URLs, scales, symmetries); `/diagnostics`. With `fusion`, also
`fused/poses`, `fused/detections` and TF frames `<tf_prefix>fused_<object>_<index>`, in
`fixed_frame`: the camera's pose there comes from TF (a tf2 buffer) at each image stamp.

Inference runs in a worker thread that takes the newest pair from a one-item slot, so the
executor never blocks and frames arriving while it is busy replace each other (counted as
dropped). Without usable weights the node stays up, reports the error in its diagnostics
and loads them when `objects`, `detector_weights`, `coordnet_weights` or `device` is set.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

try:
    import message_filters
    import rclpy
    from rcl_interfaces.msg import (
        FloatingPointRange,
        IntegerRange,
        ParameterDescriptor,
        SetParametersResult,
    )
    from rclpy.clock import ClockType
    from rclpy.duration import Duration
    from rclpy.exceptions import ParameterException
    from rclpy.executors import ExternalShutdownException
    from rclpy.logging import get_logger
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from rclpy.qos import (
        DurabilityPolicy,
        HistoryPolicy,
        QoSProfile,
        ReliabilityPolicy,
        qos_profile_sensor_data,
    )
    from rclpy.qos_overriding_options import QoSOverridingOptions
    from rclpy.time import Time
    from tf2_ros import Buffer, TransformBroadcaster, TransformException, TransformListener
except ModuleNotFoundError as exc:  # pragma: no cover - only without ROS 2
    raise ModuleNotFoundError(f"pose_node needs ROS 2 Humble or Jazzy ({exc.name} is missing): "
                              "source /opt/ros/<distro>/setup.bash first", name=exc.name
                              ) from exc

from pose6d_ros.core.objects import load_objects
from pose6d_ros.ros import messages as m
from pose6d_ros.ros.frame_processor import FrameProcessor, LatestSlot, Rejected, load_estimator
from pose6d_ros.ros.parameters import (
    PoseSettings,
    param_specs,
    resolve_path,
    settings_from_dict,
)

NODE_NAME = "pose_node"
WARN_THROTTLE_S = 5.0  # at most one warning per call site in this many seconds
PUBLISH_DEPTH = 10
DIAGNOSTIC_NAME = "pose6d_ros: pose_node"
TF_TIMEOUT_S = 0.1  # wait for a camera pose this long (in the worker, not the executor)


class ParameterValueError(ValueError):
    """A start-up parameter value the node cannot use (the message names it)."""


class TfCameraPoses:
    """Camera poses from a tf2 buffer, for `FrameProcessor` (a TransformSource)."""

    def __init__(self, buffer: Buffer, timeout_s: float = TF_TIMEOUT_S) -> None:
        self.buffer = buffer
        self.timeout = Duration(nanoseconds=round(timeout_s * 1e9))

    def lookup(self, target: str, source: str, stamp_ns: int) -> np.ndarray:
        """`T_target_source (4, 4)` at `stamp_ns`; LookupError with tf2's reason."""
        try:
            tf = self.buffer.lookup_transform(
                target, source, Time(nanoseconds=stamp_ns, clock_type=ClockType.ROS_TIME),
                timeout=self.timeout)
        except TransformException as exc:
            raise LookupError(f"{type(exc).__name__}: {exc}") from None
        return m.transform_matrix(tf.transform)


class PoseNode(Node):
    """The ROS 2 pose node (see the module docstring)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.types = m.rclpy_types()
        self._specs = {s.name: s for s in param_specs()}
        self._processor: FrameProcessor | None = None
        self._load_error = "loading"
        self._reload = threading.Event()
        self._slot: LatestSlot[tuple[Any, Any, Any | None]] = LatestSlot()
        self.settings = self._declare_parameters()
        s, types = self.settings, self.types

        latched = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                             reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._pub_detections = self.create_publisher(types.Detection3DArray, "detections",
                                                     PUBLISH_DEPTH)
        self._pub_poses = self.create_publisher(types.PoseArray, "poses", PUBLISH_DEPTH)
        self._pub_markers = self.create_publisher(types.MarkerArray, "markers", PUBLISH_DEPTH)
        self._pub_debug = self.create_publisher(types.Image, "debug_image", PUBLISH_DEPTH)
        self._pub_labels = self.create_publisher(types.LabelInfo, "label_info", latched)
        self._pub_objects = self.create_publisher(types.String, "object_info", latched)
        self._pub_diagnostics = self.create_publisher(types.DiagnosticArray, "/diagnostics",
                                                      PUBLISH_DEPTH)
        self._pub_class: dict[str, Any] = {}
        self._tf = TransformBroadcaster(self)
        self._camera_poses: TfCameraPoses | None = None
        if s.fusion:  # read-only: the TF listener and the fused topics exist from start-up
            self._tf_buffer = Buffer(node=self)
            self._tf_listener = TransformListener(self._tf_buffer, self)
            self._camera_poses = TfCameraPoses(self._tf_buffer)
            self._pub_fused_poses = self.create_publisher(types.PoseArray, "fused/poses",
                                                          PUBLISH_DEPTH)
            self._pub_fused_detections = self.create_publisher(
                types.Detection3DArray, "fused/detections", PUBLISH_DEPTH)

        image_type = types.CompressedImage if s.use_compressed else types.Image
        self._sub_image = message_filters.Subscriber(
            self, image_type, "image", qos_profile=qos_profile_sensor_data,
            qos_overriding_options=QoSOverridingOptions.with_default_policies())
        self._sub_info = message_filters.Subscriber(
            self, types.CameraInfo, "camera_info", qos_profile=qos_profile_sensor_data,
            qos_overriding_options=QoSOverridingOptions.with_default_policies())
        inputs = [self._sub_image, self._sub_info]
        self._sub_depth = None
        if s.use_depth:  # read-only: the synchroniser's inputs are fixed at start-up
            self._sub_depth = message_filters.Subscriber(
                self, types.Image, "depth", qos_profile=qos_profile_sensor_data,
                qos_overriding_options=QoSOverridingOptions.with_default_policies())
            inputs.append(self._sub_depth)
        self._sync = message_filters.ApproximateTimeSynchronizer(
            inputs, queue_size=s.sync_queue_size, slop=s.sync_slop)
        self._sync.registerCallback(self.on_frame)
        # Every arrival, paired or not: unpaired inputs are counted and warned about.
        self._sub_image.registerCallback(self._on_image_arrival)
        self._sub_info.registerCallback(self._on_info_arrival)
        if self._sub_depth is not None:
            self._sub_depth.registerCallback(self._on_depth_arrival)
        self.create_timer(s.diagnostics_period, self.on_diagnostics_timer)

        self._worker = threading.Thread(target=self._work, name="pose6d_inference", daemon=True)
        self._worker.start()

    # ---- parameters ----------------------------------------------------------------------

    def _declare_parameters(self) -> PoseSettings:
        values = {}
        for spec in param_specs():
            descriptor = ParameterDescriptor(description=spec.description,
                                             read_only=spec.read_only)
            if spec.choices is not None:
                descriptor.additional_constraints = f"one of {', '.join(spec.choices)}"
            if spec.type is float:
                # rclpy refuses an integer for a double parameter (`marker_lifetime: 2` in
                # a parameters file kills the node at start-up, `ros2 param set ... 1` is
                # refused) although `pose6d bag` reads the same file: let integers in;
                # settings_from_dict turns them into floats and checks every value.
                descriptor.dynamic_typing = True
            if spec.range is not None and spec.type is float:
                descriptor.floating_point_range = [FloatingPointRange(
                    from_value=float(spec.range[0]), to_value=float(spec.range[1]), step=0.0)]
            elif spec.range is not None:
                descriptor.integer_range = [IntegerRange(
                    from_value=int(spec.range[0]), to_value=int(spec.range[1]), step=1)]
            values[spec.name] = self.declare_parameter(spec.name, spec.default,
                                                       descriptor).value
        try:
            settings = settings_from_dict(values)
        except ValueError as exc:  # e.g. an integer outside a float parameter's range
            raise ParameterValueError(str(exc)) from None
        # Registered after declaring: the declarations above need no validation of ours.
        self.add_on_set_parameters_callback(self.on_set_parameters)
        return settings

    def on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Apply run-time changes; weight, objects or device changes reload the estimator."""
        ours = {p.name: p.value for p in params if p.name in self._specs}
        if not ours:
            return SetParametersResult(successful=True)
        try:
            new = settings_from_dict(ours, base=self.settings)
        except ValueError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        old, self.settings = self.settings, new
        processor = self._processor
        if processor is not None:
            processor.settings = new
        if any(self._specs[k].reload and getattr(old, k) != getattr(new, k) for k in ours):
            self._reload.set()
        elif {"tf_prefix", "detection_score"} & set(ours):
            self._publish_metadata()
        return SetParametersResult(successful=True)

    # ---- frames --------------------------------------------------------------------------

    def _on_image_arrival(self, image: Any) -> None:
        if self._processor is not None:
            self._processor.pairing.image(m.stamp_ns(image.header))

    def _on_info_arrival(self, info: Any) -> None:
        if self._processor is not None:
            self._processor.pairing.info(m.stamp_ns(info.header))

    def _on_depth_arrival(self, depth: Any) -> None:
        if self._processor is not None:
            self._processor.pairing.depth(m.stamp_ns(depth.header))

    def on_frame(self, image: Any, info: Any, depth: Any | None = None) -> None:
        """Synchronised pair (with `use_depth`, triple): hand it to the worker, replacing one
        it has not taken yet."""
        processor = self._processor
        if processor is not None:
            processor.pairing.pair(with_depth=depth is not None)
        if self._slot.put((image, info, depth)) and processor is not None:
            processor.note_dropped()

    def _work(self) -> None:
        self._load()
        while not self._slot.closed:
            if self._reload.is_set():
                self._reload.clear()
                self._load()
            pair = self._slot.take(timeout=0.5)
            if pair is None:
                continue
            try:
                self._handle(*pair)
            except Exception as exc:  # the worker must outlive any one frame
                self.get_logger().error(f"frame failed: {type(exc).__name__}: {exc}",
                                        throttle_duration_sec=WARN_THROTTLE_S)

    def _load(self) -> None:
        """(Re)build the estimator and the processor from the current settings."""
        s = self.settings
        estimator, error = load_estimator(s)
        try:
            objects = estimator.objects if estimator is not None else load_objects(
                resolve_path(s.objects))
        except (ValueError, OSError) as exc:  # bad objects YAML: nothing to publish at all
            self._processor, self._load_error = None, str(exc)
            self.get_logger().error(f"objects: {exc}")
            return
        if error is not None:
            self.get_logger().error(f"{error}; frames are rejected until the weights load "
                                    "(set the weight parameters to retry)")
        processor = FrameProcessor(self.types, s, objects, estimator=estimator,
                                   estimator_error=error,
                                   image_topic=self._sub_image.sub.topic_name,
                                   info_topic=self._sub_info.sub.topic_name,
                                   depth_topic=(self._sub_depth.sub.topic_name
                                                if self._sub_depth is not None else "depth"),
                                   transforms=self._camera_poses)
        if self._processor is not None:  # keep the counts across reloads
            processor.stats = self._processor.stats
        self._processor = processor
        if estimator is not None:
            self.get_logger().info(f"estimator ready on {processor.device} for "
                                   f"{len(objects)} objects")
        self._publish_metadata()

    def _handle(self, image: Any, info: Any, depth: Any | None) -> None:
        processor = self._processor
        if processor is None:
            self.get_logger().warning(f"frame dropped: {self._load_error}",
                                      throttle_duration_sec=WARN_THROTTLE_S)
            return
        out = processor.process(image, info, depth,
                                debug_image=self._pub_debug.get_subscription_count() > 0)
        if isinstance(out, Rejected):
            self.get_logger().warning(out.reason, throttle_duration_sec=WARN_THROTTLE_S)
            return
        self._pub_detections.publish(out.detections)
        self._pub_poses.publish(out.pose_array)
        for name, msg in out.class_poses.items():
            if name not in self._pub_class:
                self._pub_class[name] = self.create_publisher(self.types.PoseArray,
                                                              f"poses/{name}", PUBLISH_DEPTH)
            self._pub_class[name].publish(msg)
        transforms = list(out.tf.transforms) if out.tf is not None else []
        if out.fused is not None:
            self._pub_fused_poses.publish(out.fused.pose_array)
            self._pub_fused_detections.publish(out.fused.detections)
            if out.fused.tf is not None:
                transforms += list(out.fused.tf.transforms)
        elif out.fusion_error is not None:
            self.get_logger().warning(out.fusion_error, throttle_duration_sec=WARN_THROTTLE_S)
        if transforms:
            self._tf.sendTransform(transforms)
        if out.markers is not None:
            self._pub_markers.publish(out.markers)
        if out.debug_image is not None:
            self._pub_debug.publish(out.debug_image)

    # ---- metadata and diagnostics --------------------------------------------------------

    def _now_header(self) -> Any:
        return self.types.Header(stamp=self.get_clock().now().to_msg(), frame_id="")

    def _publish_metadata(self) -> None:
        processor = self._processor
        if processor is not None:
            self._pub_labels.publish(processor.label_info(self._now_header()))
            self._pub_objects.publish(processor.object_info())

    def on_diagnostics_timer(self) -> None:
        """Publish the node's status: rate, per-stage latency, dropped and rejected frames."""
        processor, header = self._processor, self._now_header()
        if processor is not None:
            msg = processor.diagnostics(header, DIAGNOSTIC_NAME)
            if processor.unpaired_warning is not None:
                self.get_logger().warning(processor.unpaired_warning,
                                          throttle_duration_sec=10.0)
        else:
            msg = m.diagnostics_msg(self.types, header, name=DIAGNOSTIC_NAME,
                                    hardware_id="none", level="ERROR",
                                    message=self._load_error,
                                    values={"frames_dropped": str(self._slot.dropped)})
        self._pub_diagnostics.publish(msg)

    def destroy_node(self) -> None:
        """Stop the worker, then the node."""
        self._slot.close()
        self._worker.join(timeout=5.0)
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    """Run the pose node until shut down."""
    rclpy.init(args=args)
    node = None
    try:
        node = PoseNode()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ParameterException, ParameterValueError) as exc:  # one line, not a traceback
        get_logger(NODE_NAME).fatal(f"cannot start: {exc}")
        return 1
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
