"""The node's `fusion` mode without rclpy: the window rules, the TF buffer of `pose6d bag`,
and the processor's fused outputs (in fixed_frame, the image's stamp) beside the per-view
ones, with views lacking a camera pose skipped and counted."""

import numpy as np
import pytest

from pose6d_ros.fusion.multiview import View
from pose6d_ros.ros import messages as m
from pose6d_ros.ros.frame_processor import FrameOutputs, FrameProcessor
from pose6d_ros.ros.fusion_window import FusionWindow, check_camera_pose
from pose6d_ros.ros.parameters import PoseSettings, estimator_config, settings_from_dict
from pose6d_ros.ros.tf_buffer import TfBuffer, quaternion_matrix
from pose6d_ros.templates.viewpoints import look_at_rotations
from test.ros.stubs import StubEstimator, make_pose
from test.ros.test_frame_processor import K, pair

S = 10**9


def camera(position, target=(0.0, 0.0, 0.0)) -> np.ndarray:
    """`T_world_cam (4, 4)` of a camera at `position` looking at `target`."""
    position = np.asarray(position, np.float64)
    T = np.eye(4)
    T[:3, :3] = look_at_rotations((position - target)[None])[0].T
    T[:3, 3] = position
    return T


def view_at(position) -> View:
    return View(np.zeros((4, 4, 3), np.uint8), K, camera(position), [])


def centres(window: FusionWindow) -> list[float]:
    return [round(float(e.centre[0]), 3) for e in window.entries]


# ---- the window ----------------------------------------------------------------------

def test_window_keeps_the_newest_views():
    window = FusionWindow()
    for k in range(6):
        assert window.add(view_at([k, 0, 1]), k * S, size=4) is False
    assert centres(window) == [2, 3, 4, 5]
    window.add(view_at([9, 0, 1]), 6 * S, size=2)  # fusion_window lowered at run time
    assert centres(window) == [5, 9]


def test_a_camera_standing_still_keeps_one_view():
    """Within min_view_baseline of a kept view, a new view replaces the nearest one (and
    takes the newest place); further away it is added."""
    window = FusionWindow()
    window.add(view_at([0, 0, 1]), 0, size=4, min_baseline=0.05)
    window.add(view_at([1, 0, 1]), 1 * S, size=4, min_baseline=0.05)
    for k in range(5):  # standing still near the first view
        assert window.add(view_at([0.01 * k, 0, 1]), (2 + k) * S, size=4, min_baseline=0.05)
    assert centres(window) == [1, 0.04] and window.entries[-1].stamp_ns == 6 * S
    assert not window.add(view_at([0.1, 0, 1]), 7 * S, size=4, min_baseline=0.05)
    assert centres(window) == [1, 0.04, 0.1]
    # min_view_baseline 0: every view is added.
    assert not window.add(view_at([0.1, 0, 1]), 8 * S, size=4, min_baseline=0.0)
    assert len(window) == 4


def test_views_older_than_the_time_window_leave():
    window = FusionWindow()
    for k, t in enumerate((0.0, 0.5, 1.2, 2.0)):
        window.add(view_at([k, 0, 1]), round(t * S), size=8, max_age_s=1.0)
    assert centres(window) == [2, 3]  # 0.0 and 0.5 s are over 1 s before 2.0 s
    window.add(view_at([5, 0, 1]), 10 * S, size=8, max_age_s=0.0)  # 0: no time limit
    assert centres(window) == [2, 3, 5]
    window.add(view_at([6, 0, 1]), 1 * S, size=8)  # time went back: a new recording
    assert centres(window) == [6]


def test_camera_pose_is_checked():
    assert np.array_equal(check_camera_pose(np.eye(4)), np.eye(4))
    bad = np.eye(4)
    bad[0, 3] = np.nan
    with pytest.raises(ValueError, match="finite"):
        check_camera_pose(bad)
    with pytest.raises(ValueError, match="rotation"):
        check_camera_pose(np.diag([1.0, 1.0, -1.0, 1.0]))


# ---- the TF buffer -------------------------------------------------------------------

def _q(axis, deg):
    axis = np.asarray(axis, np.float64) / np.linalg.norm(axis)
    half = np.deg2rad(deg) / 2
    return np.array([*(axis * np.sin(half)), np.cos(half)])


def test_tf_buffer_chains_interpolates_and_says_why_not():
    tf = TfBuffer(tolerance_s=0.05)
    tf.add_transform("world", "base", 0, np.array([1.0, 0, 0]), _q([0, 0, 1], 90),
                     static=True)
    tf.add_transform("base", "cam", 2 * S, np.array([0.0, 2, 0]), _q([0, 0, 1], 90))
    tf.add_transform("/base", "cam", 1 * S, np.array([0.0, 0, 0]), _q([0, 0, 1], 0))
    tf.add_transform("world", "marker", 0, np.array([0.0, 0, 5]), _q([1, 0, 0], 0),
                     static=True)
    T = tf.lookup("world", "cam", round(1.5 * S))  # halfway: 1 m along y, 45 degrees
    R_base = quaternion_matrix(_q([0, 0, 1], 90))
    assert np.allclose(T[:3, 3], [1.0, 0, 0] + R_base @ [0, 1.0, 0])
    assert np.allclose(T[:3, :3], R_base @ quaternion_matrix(_q([0, 0, 1], 45)))
    # Through the common ancestor, and the inverse the other way.
    T_marker_cam = tf.lookup("marker", "cam", 2 * S)
    assert np.allclose(T_marker_cam, np.linalg.inv(tf.lookup("cam", "marker", 2 * S)))
    assert np.allclose(T_marker_cam[:3, 3], tf.lookup("world", "cam", 2 * S)[:3, 3] - [0, 0, 5])
    assert np.array_equal(tf.lookup("cam", "/cam", 0), np.eye(4))
    # Past the last transform: the nearest within the tolerance, then an error.
    assert np.allclose(tf.lookup("base", "cam", 2 * S + 40_000_000)[:3, 3], [0, 2, 0])
    with pytest.raises(LookupError, match=r"'base' -> 'cam' at 3\.000 s.*1\.000 to 2\.000"):
        tf.lookup("world", "cam", 3 * S)
    with pytest.raises(LookupError, match="'elsewhere' does not exist"):
        tf.lookup("world", "elsewhere", S)
    tf.add_transform("map", "odom", 0, np.zeros(3), _q([0, 0, 1], 0), static=True)
    with pytest.raises(LookupError, match="'map' and 'cam' are not connected"):
        tf.lookup("map", "cam", S)


def test_tf_buffer_reads_tf_messages(types):
    hdr = types.Header(stamp=types.Time(sec=3, nanosec=0), frame_id="world")
    msg = types.TFMessage(transforms=[m.transform_stamped(types, hdr, "cam", np.array(
        [0.1, 0.2, 0.3]), np.array([0.0, 0.0, 0.0, 1.0]))])
    tf = TfBuffer()
    tf.add(msg)
    assert np.allclose(tf.lookup("world", "cam", 3 * S)[:3, 3], [0.1, 0.2, 0.3])
    with pytest.raises(LookupError):
        tf.lookup("world", "cam", 4 * S)
    tf.add(msg, static=True)  # /tf_static: any stamp
    assert np.allclose(tf.lookup("world", "cam", 4 * S)[:3, 3], [0.1, 0.2, 0.3])


# ---- the processor's fusion mode ------------------------------------------------------

# A static scene: an eggbox and a can on the table, in the world frame.
OBJECTS = {"eggbox": (np.eye(3), np.array([0.05, 0.0, 0.02])),
           "can": (quaternion_matrix(_q([0, 0, 1], 30)), np.array([-0.08, 0.04, 0.05]))}
CAMERAS = [camera([0.6, 0.0, 0.5]), camera([0.0, 0.6, 0.5]), camera([-0.5, -0.3, 0.5])]


def _estimates(objects, T_world_cam):
    """What a perfect single-view estimator reports from the camera at `T_world_cam`."""
    T_cw = np.linalg.inv(T_world_cam)
    return [make_pose(objects, name, T_cw[:3, :3] @ t + T_cw[:3, 3], R=T_cw[:3, :3] @ R)
            for name, (R, t) in OBJECTS.items()]


@pytest.fixture
def fusion(types):
    """A processor with fusion on, its stub seeing the scene from CAMERAS in turn, and TF
    world -> cam at seconds 10, 11, 12 (camera k at second 10 + k)."""
    settings = settings_from_dict({"fusion": True, "tf_prefix": "p/"})
    estimator = StubEstimator(estimator_config(settings))
    estimator.script = [_estimates(estimator.objects, T) for T in CAMERAS]
    tf = TfBuffer()
    for k, T in enumerate(CAMERAS):
        tf.add_transform("world", "cam", (10 + k) * S, T[:3, 3], m.matrix_quaternion(T[:3, :3]))
    processor = FrameProcessor(types, settings, estimator.objects, estimator=estimator,
                               transforms=tf)
    return processor, estimator


def _values(types, processor):
    msg = processor.diagnostics(types.Header(stamp=types.Time(sec=0, nanosec=0), frame_id=""))
    return msg.status[0], {kv.key: kv.value for kv in msg.status[0].values}


def test_fused_outputs_in_the_fixed_frame_beside_the_per_view_ones(types, fusion):
    processor, _ = fusion
    for k in range(3):
        out = processor.process(*pair(types, sec=10 + k, nanosec=0))
        assert isinstance(out, FrameOutputs) and out.fusion_error is None
        assert out.fused.views == k + 1
    # The per-view outputs as without fusion: the image's frame and stamp.
    assert out.pose_array.header.frame_id == "cam" and len(out.pose_array.poses) == 2
    # (The camera moved: the per-view tracker sees new instances, the fused ones stay.)
    assert all(t.header.frame_id == "cam" and not t.child_frame_id.startswith("p/fused_")
               for t in out.tf.transforms)
    fused = out.fused
    for msg in (fused.pose_array, fused.detections, *fused.tf.transforms):
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == \
            (12, 0, "world")
    assert [t.child_frame_id for t in fused.tf.transforms] == ["p/fused_eggbox_0",
                                                               "p/fused_can_0"]
    assert [d.id for d in fused.detections.detections] == ["eggbox_0", "can_0"]
    for p in fused.poses:  # where the objects are in the world (the eggbox's symmetry
        R, t = OBJECTS[p.name]  # is not exactly about its centre: under a millimetre off)
        assert np.linalg.norm(p.t - t) < 1e-3 and np.allclose(p.R, R, atol=1e-3), p.name
    status, values = _values(types, processor)
    assert status.level == 0
    assert (values["views_fused"], values["views_without_tf"], values["fused_objects"],
            values["fusion_window_views"]) == ("3", "0", "2", "3")
    assert "latency_fusion_ms" in values


def test_a_view_without_tf_is_skipped_counted_and_its_own_outputs_published(types, fusion):
    processor, _ = fusion
    processor.process(*pair(types, sec=10, nanosec=0))
    out = processor.process(*pair(types, sec=20, nanosec=0))  # TF ends at 12 s
    assert isinstance(out, FrameOutputs) and out.fused is None
    assert "world <- cam at 20.000 s" in out.fusion_error and "12.000" in out.fusion_error
    assert len(out.pose_array.poses) == 2 and len(out.detections.detections) == 2
    out = processor.process(*pair(types, sec=11, nanosec=0, frame_id="other"))
    assert out.fused is None and "'other' does not exist" in out.fusion_error
    status, values = _values(types, processor)
    assert status.level == 1 and status.message.startswith("view not fused: no camera pose")
    assert (values["views_fused"], values["views_without_tf"]) == ("1", "2")
    assert int(values["frames_processed"]) == 3 == int(values["views_fused"]) + \
        int(values["views_without_tf"]) + int(values["fusion_failed"])
    assert processor.process(*pair(types, sec=11, nanosec=0)).fused.views == 2
    assert _values(types, processor)[0].level == 0
    # Without a TF source every view is skipped the same way.
    processor.transforms = None
    assert "no TF source" in processor.process(*pair(types, sec=12, nanosec=0)).fusion_error


def test_fusion_failure_is_counted_and_the_per_view_outputs_stay(types, fusion, monkeypatch):
    processor, _ = fusion
    processor.process(*pair(types, sec=10, nanosec=0))

    def broken(views):
        raise np.linalg.LinAlgError("Singular matrix")

    monkeypatch.setattr(processor._fusion, "fuser", broken)
    out = processor.process(*pair(types, sec=11, nanosec=0))
    assert out.fused is None and "LinAlgError: Singular matrix" in out.fusion_error
    assert len(out.pose_array.poses) == 2
    assert _values(types, processor)[1]["fusion_failed"] == "1"


def test_fusion_off_adds_nothing(types):
    estimator = StubEstimator(estimator_config(PoseSettings()))
    processor = FrameProcessor(types, PoseSettings(), estimator.objects, estimator=estimator)
    out = processor.process(*pair(types))
    assert out.fused is None and out.fusion_error is None
    assert "views_fused" not in _values(types, processor)[1]
