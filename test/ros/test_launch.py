"""launch_testing: pose.launch.py starts pose_node; images in; every output topic and the TF
tree checked, and a bad frame reported while the node keeps running. Run three times: RGB
only; with `use_depth:=true` and a registered 16UC1 depth image beside every image (poses out,
depth counted, a bad depth image rejected as such); and with `fusion:=true
fixed_frame:=test_world`, the camera's pose in a static TF (fused poses in test_world beside
the per-view outputs, which the other tests check unchanged).

Needs ROS 2 (Humble/Jazzy) with pose6d_ros built (`.venv/bin/python -m colcon test`, or
`.venv/bin/python -m pytest test/ros` with ROS sourced); skipped cleanly without.
The node runs the stub estimator of test/ros/stubs.py (parameter `estimator`): no weights
are needed, and the poses to expect are known.
"""

import array
import json
import os
import tempfile
import time
import unittest
from pathlib import Path

import pytest

pytest.importorskip("launch_testing")  # without it pytest collects this module plainly
import launch_testing  # launch_testing brings launch along
import launch_testing.actions
import launch_testing.asserts
from launch.launch_description import LaunchDescription

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "pose_test"
FRAME = "test_cam"
WORLD = "test_world"  # the camera sits 1 m above its origin, looking the same way
H, W = 48, 64
try:
    import rclpy
    import tf2_ros
    from ament_index_python.packages import get_package_share_directory
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PoseArray, TransformStamped
    from launch.actions import IncludeLaunchDescription, SetEnvironmentVariable
    from launch.launch_description_sources import PythonLaunchDescriptionSource
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import GetParameters, SetParameters
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from rclpy.time import Time
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import String
    from vision_msgs.msg import Detection3DArray, LabelInfo
    from visualization_msgs.msg import MarkerArray

    SHARE = Path(get_package_share_directory("pose6d_ros"))
    SKIP = None
except Exception as exc:  # any missing piece: the tests below skip, naming it
    SKIP = f"needs ROS 2 and a built pose6d_ros: {type(exc).__name__}: {exc}"


@pytest.mark.launch_test
@launch_testing.parametrize("use_depth, fusion", [(False, False), (True, False), (False, True)])
def generate_test_description(use_depth, fusion):
    """pose.launch.py (namespace, remapped inputs, the stub estimator, `use_depth:=` and
    `fusion:=` as given, `fixed_frame:=test_world`), then ReadyToTest.

    The parameters file sets `device` (no `device:=` argument: the file's must hold) and an
    integer for the double `marker_lifetime` (rclpy alone would refuse it at start-up).
    """
    if SKIP:
        return LaunchDescription([launch_testing.actions.ReadyToTest()])
    params = Path(tempfile.mkdtemp()) / "pose_test.yaml"
    params.write_text("/**:\n  ros__parameters:\n    estimator: test.ros.stubs:StubEstimator\n"
                      "    tf_prefix: t/\n    marker_lifetime: 2\n    device: cpu\n")
    pythonpath = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    launch = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(SHARE / "launch" / "pose.launch.py")),
        launch_arguments={"namespace": NAMESPACE, "image_topic": "/test/image",
                          "camera_info_topic": "/test/camera_info",
                          "depth_topic": "/test/depth", "use_depth": str(use_depth).lower(),
                          "fusion": str(fusion).lower(), "fixed_frame": WORLD,
                          "config_file": str(params), "use_rviz": "false"}.items())
    return LaunchDescription([SetEnvironmentVariable("PYTHONPATH", pythonpath), launch,
                              launch_testing.actions.ReadyToTest()])


class TestPoseNode(unittest.TestCase):
    """Talks to the launched node from a test node."""

    @classmethod
    def setUpClass(cls):
        if SKIP:
            raise unittest.SkipTest(SKIP)
        rclpy.init()

    @classmethod
    def tearDownClass(cls):
        rclpy.try_shutdown()

    def setUp(self):
        self.node = rclpy.create_node("pose_launch_test")
        self.got: dict[str, list] = {}
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                             reliability=ReliabilityPolicy.RELIABLE)
        for topic, kind, qos in [("detections", Detection3DArray, 10), ("poses", PoseArray, 10),
                                 ("markers", MarkerArray, 10), ("debug_image", Image, 10),
                                 ("label_info", LabelInfo, latched),
                                 ("object_info", String, latched),
                                 ("/diagnostics", DiagnosticArray, 10),
                                 ("fused/poses", PoseArray, 10),
                                 ("fused/detections", Detection3DArray, 10)]:
            name = topic if topic.startswith("/") else f"/{NAMESPACE}/{topic}"
            self.node.create_subscription(kind, name, self._store(topic), qos)
        self.pub_image = self.node.create_publisher(Image, "/test/image", 10)
        self.pub_info = self.node.create_publisher(CameraInfo, "/test/camera_info", 10)
        self.pub_depth = self.node.create_publisher(Image, "/test/depth", 10)
        self.tf_buffer = tf2_ros.Buffer()
        self.tf_listener = tf2_ros.TransformListener(self.tf_buffer, self.node)
        self.static_tf = tf2_ros.StaticTransformBroadcaster(self.node)
        camera = TransformStamped(child_frame_id=FRAME)
        camera.header.frame_id = WORLD
        camera.header.stamp = self.node.get_clock().now().to_msg()
        camera.transform.translation.z = 1.0
        camera.transform.rotation.w = 1.0
        self.static_tf.sendTransform(camera)
        self.sent: list = []

    def tearDown(self):
        self.node.destroy_node()

    def _store(self, topic):
        return lambda msg: self.got.setdefault(topic, []).append(msg)

    def _publish(self, encoding="rgb8", depth_mm=800):
        """An image, its camera_info and a 16UC1 depth image of `depth_mm` everywhere
        (the node reads it only with use_depth), all with one stamp."""
        stamp = self.node.get_clock().now().to_msg()
        image = Image(height=H, width=W, encoding=encoding, step=3 * W,
                      data=array.array("B", bytes(range(256)) * (H * W * 3 // 256)))
        image.header.stamp, image.header.frame_id = stamp, FRAME
        info = CameraInfo(height=H, width=W, k=[60.0, 0.0, 31.5, 0.0, 60.0, 23.5, 0.0, 0.0, 1.0])
        info.header.stamp, info.header.frame_id = stamp, FRAME
        depth = Image(height=H, width=W, encoding="16UC1", is_bigendian=0, step=2 * W,
                      data=array.array("B", int(depth_mm).to_bytes(2, "little") * (H * W)))
        depth.header.stamp, depth.header.frame_id = stamp, FRAME
        self.pub_image.publish(image)
        self.pub_info.publish(info)
        self.pub_depth.publish(depth)
        self.sent.append((stamp.sec, stamp.nanosec))

    def _spin_until(self, done, timeout=30.0, encoding="rgb8", depth_mm=800):
        end, next_frame = time.monotonic() + timeout, 0.0
        while time.monotonic() < end and not done():
            if time.monotonic() > next_frame:
                self._publish(encoding, depth_mm)
                next_frame = time.monotonic() + 0.2
            rclpy.spin_once(self.node, timeout_sec=0.05)
        return done()

    def _ours(self, topic):
        """The messages on `topic` stamped like a frame this test sent (the node may still
        publish one of the previous test's frames)."""
        return [msg for msg in self.got.get(topic, [])
                if (msg.header.stamp.sec, msg.header.stamp.nanosec) in self.sent]

    def _diagnostic_value(self, key):
        """The largest value of counter `key` in the node's /diagnostics so far (0: none)."""
        return max((int(kv.value) for a in self.got.get("/diagnostics", []) for s in a.status
                    if s.name == "pose6d_ros: pose_node" for kv in s.values if kv.key == key),
                   default=0)

    def test_every_output(self):
        topics = ["detections", "poses", "markers", "debug_image", "label_info", "object_info"]
        ok = self._spin_until(lambda: all(self.got.get(t) for t in topics)
                              and self._ours("detections")
                              and self.tf_buffer.can_transform(FRAME, "t/eggbox_0",
                                                               Time()))
        self.assertTrue(ok, f"received only {sorted(self.got)}")
        det = self._ours("detections")[-1]
        self.assertEqual(det.header.frame_id, FRAME)
        self.assertEqual([d.id for d in det.detections], ["eggbox_0", "can_0"])
        for d in det.detections:
            self.assertTrue(0.0 <= d.results[0].hypothesis.score <= 1.0)
            self.assertGreater(d.bbox.size.x, 0.0)
        self.assertEqual(det.detections[0].results[0].hypothesis.class_id, "eggbox")
        self.assertEqual(len(self.got["poses"][-1].poses), 2)
        marker = self.got["markers"][-1].markers[0]
        self.assertTrue(marker.mesh_resource.startswith("package://pose6d_ros/models/"))
        self.assertEqual(marker.header.frame_id, FRAME)
        self.assertEqual((marker.lifetime.sec, marker.lifetime.nanosec), (2, 0))
        image = self.got["debug_image"][-1]
        self.assertEqual((image.height, image.width, image.encoding), (H, W, "rgb8"))
        tf = self.tf_buffer.lookup_transform(FRAME, "t/eggbox_0", Time())
        v = tf.transform.translation
        self.assertAlmostEqual(v.z, 0.8, places=6)
        self.assertTrue(self.tf_buffer.can_transform(FRAME, "t/can_0", Time()))
        names = {c.class_name for c in self.got["label_info"][-1].class_map}
        self.assertIn("eggbox", names)
        info = json.loads(self.got["object_info"][-1].data)
        self.assertEqual(info["tf_frame"], "t/<name>_<index>")
        self.assertTrue(self._spin_until(lambda: any(
            s.name == "pose6d_ros: pose_node" and s.level == s.OK
            for a in self.got.get("/diagnostics", []) for s in a.status)))

    def _call(self, srv_type, name, request):
        client = self.node.create_client(srv_type, f"/{NAMESPACE}/pose_node/{name}")
        self.assertTrue(client.wait_for_service(timeout_sec=10.0), name)
        future = client.call_async(request)
        rclpy.spin_until_future_complete(self.node, future, timeout_sec=10.0)
        self.assertTrue(future.done(), name)
        return future.result()

    def _set(self, name, value):
        kind = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
                float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING}
        field = {bool: "bool_value", int: "integer_value", float: "double_value",
                 str: "string_value"}[type(value)]
        pv = ParameterValue(type=kind[type(value)], **{field: value})
        result = self._call(SetParameters, "set_parameters",
                            SetParameters.Request(parameters=[Parameter(name=name, value=pv)]))
        return result.results[0]

    def test_parameters_from_the_file_and_at_run_time(self):
        got = self._call(GetParameters, "get_parameters",
                         GetParameters.Request(names=["device", "marker_lifetime"]))
        self.assertEqual(got.values[0].string_value, "cpu")  # not the launch file's default
        # kept as given (an integer); the node uses 2.0 s (test_every_output's markers)
        self.assertEqual(got.values[1].integer_value or got.values[1].double_value, 2)
        self.assertFalse(self._set("max_instances", 0).successful)  # outside [1, 256]
        self.assertFalse(self._set("detection_score", "high").successful)
        self.assertFalse(self._set("estimator", "x:Y").successful)  # read-only
        # An integer for a double is taken, and the latched LabelInfo carries the threshold.
        self.got.pop("label_info", None)
        self.assertTrue(self._set("detection_score", 1).successful)
        self.assertTrue(self._spin_until(lambda: any(
            msg.threshold == 1.0 for msg in self.got.get("label_info", []))))
        self.assertTrue(self._set("detection_score", 0.5).successful)

    def test_tracking_mode_at_run_time(self):
        """`detect_every` set at run time: the frames between detections are tracked (the
        stub's `track`), poses keep coming, both kinds counted in /diagnostics; 0 is
        refused."""
        self.assertFalse(self._set("detect_every", 0).successful)  # outside [1, 10000]
        self.assertTrue(self._set("detect_every", 3).successful)
        try:
            self.got.pop("poses", None)
            self.assertTrue(self._spin_until(
                lambda: self._diagnostic_value("frames_tracked") > 1 and self.got.get("poses")))
            self.assertEqual(len(self.got["poses"][-1].poses), 2)
            self.assertGreater(self._diagnostic_value("frames_detected"), 0)
        finally:
            self.assertTrue(self._set("detect_every", 1).successful)

    def test_bad_frames_are_reported_and_the_node_keeps_running(self):
        def reported():
            for a in self.got.get("/diagnostics", []):
                for s in a.status:
                    values = {kv.key: kv.value for kv in s.values}
                    if int(values.get("rejected_encoding", "0")) > 0:
                        return True
            return False

        self.assertTrue(self._spin_until(reported, encoding="yuv422"))
        self.got.pop("detections", None)
        self.assertTrue(self._spin_until(lambda: self.got.get("detections")))

    def test_depth(self, use_depth):
        """With use_depth:=true: poses out from image + camera_info + depth, the frames
        counted with depth; an all-zero depth image rejected as `depth`, then poses again.
        Without it the depth topic is not read."""
        self.assertTrue(self._spin_until(lambda: self.got.get("poses")
                                         and self._diagnostic_value("frames_processed") > 0))
        self.assertEqual(len(self.got["poses"][-1].poses), 2)
        with_depth = self._diagnostic_value("frames_with_depth")
        if not use_depth:
            self.assertEqual(with_depth, 0)
            return
        self.assertTrue(self._spin_until(lambda: self._diagnostic_value("frames_with_depth")))
        self.assertTrue(self._spin_until(lambda: self._diagnostic_value("rejected_depth") > 0,
                                         depth_mm=0))
        self.got.pop("poses", None)
        self.assertTrue(self._spin_until(lambda: self.got.get("poses")))


    def test_fusion(self, fusion):
        """With fusion:=true: fused poses and detections in test_world with the images'
        stamps, TF frames t/fused_<object>_<index> there, the views counted; the camera
        standing still keeps one view in the window. Without it nothing is fused."""
        self.assertTrue(self._spin_until(lambda: self.got.get("poses")
                                         and self._diagnostic_value("frames_processed") > 0))
        if not fusion:
            self.assertNotIn("fused/poses", self.got)
            self.assertEqual(self._diagnostic_value("views_fused"), 0)
            return
        self.assertTrue(self._spin_until(
            lambda: self._ours("fused/poses") and self._ours("fused/detections")
            and self.tf_buffer.can_transform(WORLD, "t/fused_eggbox_0", Time())
            and self._diagnostic_value("views_fused") > 1))
        poses = self._ours("fused/poses")[-1]
        self.assertEqual(poses.header.frame_id, WORLD)
        self.assertEqual(len(poses.poses), 2)
        det = self._ours("fused/detections")[-1]
        self.assertEqual(det.header.frame_id, WORLD)
        self.assertEqual(sorted(d.id for d in det.detections), ["can_0", "eggbox_0"])
        v = self.tf_buffer.lookup_transform(WORLD, "t/fused_eggbox_0", Time()).transform
        self.assertAlmostEqual(v.translation.x, 0.05, places=2)
        self.assertAlmostEqual(v.translation.z, 1.8, places=2)  # 0.8 m ahead of the camera
        self.assertEqual(self._diagnostic_value("fusion_window_views"), 1)


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):
    """The node exits cleanly when the launch ends."""

    def test_exit_codes(self, proc_info):
        if SKIP:
            self.skipTest(SKIP)
        launch_testing.asserts.assertExitCodes(proc_info, allowable_exit_codes=[0, -2, -15])
