"""Message building and decoding on rosbags' implementations of the real ROS 2 messages."""

import json

import cv2
import numpy as np
import pytest
import torch

from pose6d_ros.core.rotations import quaternion_to_matrix, random_rotations
from pose6d_ros.ros import messages as m
from test.ros.stubs import make_pose

DISTROS = ["humble", "jazzy"]


@pytest.fixture(scope="module", params=DISTROS)
def store(request):
    return m.rosbags_typestore(request.param)


@pytest.fixture(scope="module")
def types(store):
    return m.rosbags_types(store)


@pytest.fixture(scope="module")
def catalog(objects):
    return m.object_catalog(objects)


def header(types, sec=1_700_000_123, nanosec=456_789_012, frame_id="cam_optical"):
    return types.Header(stamp=types.Time(sec=sec, nanosec=nanosec), frame_id=frame_id)


def roundtrip(store, msg):
    """The message after CDR serialisation and back (proves every field has a valid type)."""
    return store.deserialize_cdr(store.serialize_cdr(msg, msg.__msgtype__), msg.__msgtype__)


@pytest.fixture(scope="module")
def poses(objects):
    R = random_rotations(3, generator=torch.Generator().manual_seed(0)).numpy()
    return [make_pose(objects, "eggbox", [0.05, -0.02, 0.8], R=R[0], score=0.93, instance=0),
            make_pose(objects, "eggbox", [0.2, 0.1, 1.1], R=R[1], score=1.3, instance=2),
            make_pose(objects, "duck", [-0.1, 0.0, 0.7], R=R[2], score=0.4, instance=0)]


def _R(q) -> np.ndarray:
    q = np.array([q.x, q.y, q.z, q.w])
    assert np.isclose(np.linalg.norm(q), 1.0, atol=1e-12)
    return quaternion_to_matrix(torch.from_numpy(q)).numpy()


def test_detections(store, types, catalog, objects, poses):
    hdr = header(types)
    msg = roundtrip(store, m.detections_msg(types, hdr, poses, catalog))
    assert msg.__msgtype__ == "vision_msgs/msg/Detection3DArray"
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == \
        (1_700_000_123, 456_789_012, "cam_optical")
    assert [d.id for d in msg.detections] == ["eggbox_0", "eggbox_2", "duck_0"]
    for det, p in zip(msg.detections, poses, strict=True):
        assert det.header.frame_id == "cam_optical" and det.header.stamp.nanosec == 456_789_012
        (res,) = det.results
        assert res.hypothesis.class_id == p.name
        assert 0.0 <= res.hypothesis.score <= 1.0
        assert res.hypothesis.score == pytest.approx(min(p.score, 1.0))
        pos = res.pose.pose.position
        assert np.allclose([pos.x, pos.y, pos.z], p.t)
        assert np.allclose(_R(res.pose.pose.orientation), p.R, atol=1e-9)
        obj = objects[p.label]
        lo, hi = np.asarray(obj.mesh.vertices).min(0), np.asarray(obj.mesh.vertices).max(0)
        size = det.bbox.size
        assert np.allclose([size.x, size.y, size.z], hi - lo)
        c = det.bbox.center.position
        assert np.allclose([c.x, c.y, c.z], p.R @ ((lo + hi) / 2) + p.t)
        assert np.allclose(_R(det.bbox.center.orientation), p.R, atol=1e-9)


def test_pose_array_tf_and_per_class(store, types, poses):
    hdr = header(types)
    pa = roundtrip(store, m.pose_array_msg(types, hdr, poses))
    assert pa.header.frame_id == "cam_optical" and len(pa.poses) == 3
    assert np.allclose(_R(pa.poses[1].orientation), poses[1].R, atol=1e-9)
    tf = roundtrip(store, m.tf_msg(types, hdr, poses, "pose6d/"))
    assert [t.child_frame_id for t in tf.transforms] == \
        ["pose6d/eggbox_0", "pose6d/eggbox_2", "pose6d/duck_0"]
    for tr, p in zip(tf.transforms, poses, strict=True):
        assert tr.header.frame_id == "cam_optical"
        assert (tr.header.stamp.sec, tr.header.stamp.nanosec) == (1_700_000_123, 456_789_012)
        v = tr.transform.translation
        assert np.allclose([v.x, v.y, v.z], p.t)
        assert np.allclose(_R(tr.transform.rotation), p.R, atol=1e-9)
    per_class = m.class_pose_arrays(types, hdr, poses, ["eggbox", "duck", "ape"])
    assert {k: len(v.poses) for k, v in per_class.items()} == {"eggbox": 2, "duck": 1, "ape": 0}


def test_empty_frame_gives_empty_arrays(store, types, catalog):
    hdr = header(types)
    assert roundtrip(store, m.detections_msg(types, hdr, [], catalog)).detections == []
    assert roundtrip(store, m.pose_array_msg(types, hdr, [])).poses == []
    assert roundtrip(store, m.tf_msg(types, hdr, [], "")).transforms == []


def test_markers(store, types, catalog, poses):
    msg = roundtrip(store, m.markers_msg(types, header(types), poses, catalog, lifetime=0.25))
    assert len(msg.markers) == 3
    mk = msg.markers[1]
    assert (mk.ns, mk.id, mk.type, mk.action) == ("eggbox", 2, 10, 0)
    assert mk.mesh_resource == "package://pose6d_ros/models/lmo/obj_000010.ply"
    assert (mk.scale.x, mk.scale.y, mk.scale.z) == (0.001, 0.001, 0.001)  # mm meshes
    assert (mk.lifetime.sec, mk.lifetime.nanosec) == (0, 250_000_000)
    assert mk.header.frame_id == "cam_optical" and mk.color.a > 0
    assert np.allclose(_R(mk.pose.orientation), poses[1].R, atol=1e-9)


def test_mesh_url_outside_the_package_is_a_file_url(tmp_path):
    assert m.mesh_url(tmp_path / "x.ply") == (tmp_path / "x.ply").resolve().as_uri()


def test_metadata_messages(store, types, catalog):
    labels = roundtrip(store, m.label_info_msg(types, header(types), catalog, 0.6))
    assert [(c.class_id, c.class_name) for c in labels.class_map][:2] == [(1, "ape"), (5, "can")]
    assert labels.threshold == pytest.approx(0.6)
    info = json.loads(roundtrip(store, m.object_info_msg(types, catalog, "p/")).data)
    assert info["tf_frame"] == "p/<name>_<index>"
    egg = next(o for o in info["objects"] if o["name"] == "eggbox")
    assert egg["id"] == 10 and egg["mesh_scale"] == 0.001
    assert egg["diameter"] == pytest.approx(0.164628)
    assert len(egg["symmetries_discrete"]) == 1 and len(egg["symmetries_discrete"][0]) == 16
    assert abs(egg["symmetries_discrete"][0][3]) < 0.01  # translation in metres


def test_diagnostics_levels(store, types):
    for level, value in [("OK", 0), ("WARN", 1), ("ERROR", 2)]:
        msg = roundtrip(store, m.diagnostics_msg(types, header(types), name="n", hardware_id="cpu",
                                                 level=level, message="x",
                                                 values={"frames": "3"}))
        (status,) = msg.status
        assert status.level == value and status.values[0].key == "frames"


# ---- decoding -----------------------------------------------------------------------------

def _image(types, rgb, encoding, pad=0):
    """An Image of `rgb` in `encoding`, rows padded by `pad` bytes."""
    conv = {"rgb8": None, "bgr8": cv2.COLOR_RGB2BGR, "rgba8": cv2.COLOR_RGB2RGBA,
            "bgra8": cv2.COLOR_RGB2BGRA, "mono8": cv2.COLOR_RGB2GRAY}[encoding]
    img = rgb if conv is None else cv2.cvtColor(rgb, conv)
    h, w = rgb.shape[:2]
    rows = img.reshape(h, -1)
    rows = np.concatenate([rows, np.full((h, pad), 7, np.uint8)], 1)
    return types.Image(header=header(types), height=h, width=w, encoding=encoding,
                       step=rows.shape[1], data=rows.reshape(-1))


@pytest.fixture(scope="module")
def rgb():
    return np.random.default_rng(0).integers(0, 256, (6, 5, 3), dtype=np.uint8)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8"])
@pytest.mark.parametrize("pad", [0, 3])
def test_decode_raw_encodings(store, types, rgb, encoding, pad):
    out = m.decode_image(roundtrip(store, _image(types, rgb, encoding, pad)), "/cam/image")
    assert out.shape == (6, 5, 3) and out.dtype == np.uint8
    if encoding == "mono8":
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        assert (out == gray[..., None]).all()
    else:
        assert (out == rgb).all()


@pytest.mark.parametrize("ext, fmt", [(".png", "png"), (".png", "bgr8; png compressed bgr8"),
                                      (".jpg", "jpeg")])
def test_decode_compressed(store, types, rgb, ext, fmt):
    _, data = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    msg = types.CompressedImage(header=header(types), format=fmt, data=data.reshape(-1))
    out = m.decode_image(roundtrip(store, msg), "/cam/image/compressed")
    assert out.shape == rgb.shape
    if ext == ".png":
        assert (out == rgb).all()
    else:
        assert np.abs(out.astype(int) - rgb).mean() < 40


@pytest.mark.parametrize("case, kind, words", [
    ("encoding", "encoding", ["'16UC1'", "/cam/image", "rgb8"]),
    ("empty", "empty", ["/cam/image", "empty"]),
    ("truncated", "size", ["/cam/image", "bytes"]),
])
def test_decode_raw_errors(types, rgb, case, kind, words):
    msg = _image(types, rgb, "rgb8")
    if case == "encoding":
        msg.encoding = "16UC1"
    elif case == "empty":
        msg.height, msg.width, msg.data = 0, 0, np.zeros(0, np.uint8)
    else:
        msg.data = msg.data[:-1]
    with pytest.raises(m.FrameError) as err:
        m.decode_image(msg, "/cam/image")
    assert err.value.kind == kind and all(w in str(err.value) for w in words)


@pytest.mark.parametrize("fmt, data, kind", [("jpeg", b"not a jpeg", "decode"),
                                             ("jpeg", b"", "empty"),
                                             ("16UC1; compressedDepth", b"xx", "encoding")])
def test_decode_compressed_errors(types, fmt, data, kind):
    msg = types.CompressedImage(header=header(types), format=fmt,
                                data=np.frombuffer(data, np.uint8))
    with pytest.raises(m.FrameError) as err:
        m.decode_image(msg, "/cam/image/compressed")
    assert err.value.kind == kind and "/cam/image/compressed" in str(err.value)


@pytest.mark.parametrize("dtype, encoding", [(np.uint16, "16UC1"), (np.float32, "32FC1")])
@pytest.mark.parametrize("pad", [0, 6])
def test_decode_depth(store, types, dtype, encoding, pad):
    """16UC1 (padded rows too) times the scale, 32FC1 as metres; after CDR both ways."""
    metres = np.random.default_rng(1).uniform(0.5, 2.0, (6, 5)).astype(np.float32)
    metres[0, 0] = 0.0
    values = (np.round(metres * 1000).astype(np.uint16) if dtype is np.uint16 else metres)
    msg = m.depth_image_msg(types, header(types), values)
    assert (msg.encoding, msg.is_bigendian, msg.step) == (encoding, 0, 5 * values.itemsize)
    if pad:
        rows = np.frombuffer(np.asarray(msg.data, np.uint8).tobytes(), np.uint8).reshape(6, -1)
        msg.data = np.concatenate([rows, np.full((6, pad), 255, np.uint8)], 1).reshape(-1)
        msg.step += pad
    out = m.decode_depth(roundtrip(store, msg), (6, 5, 3), scale=0.001, topic="/cam/depth")
    assert out.dtype == np.float32 and out.shape == (6, 5)
    assert np.allclose(out, metres, atol=5e-4) and out[0, 0] == 0.0


def test_decode_depth_errors_name_topic_and_encoding(types):
    mm = np.full((6, 5), 800, np.uint16)
    msg = m.depth_image_msg(types, header(types), mm)
    msg.encoding = "8UC1"
    with pytest.raises(m.FrameError, match=r"/cam/depth: unsupported depth encoding '8UC1'"):
        m.decode_depth(msg, (6, 5, 3), topic="/cam/depth")
    msg = m.depth_image_msg(types, header(types), mm)
    with pytest.raises(m.FrameError, match=r"/cam/depth \(16UC1\): median reading 800 m"):
        m.decode_depth(msg, (6, 5, 3), scale=1.0, topic="/cam/depth")  # depth_scale wrong
    with pytest.raises(m.FrameError, match=r"/cam/depth \(16UC1\): 5x6 depth for a 10x6"):
        m.decode_depth(msg, (6, 10, 3), topic="/cam/depth")
    with pytest.raises(ValueError, match="uint16 or float32"):
        m.depth_image_msg(types, header(types), mm.astype(np.int32))


def _info(types, K, P=None, size=(6, 5), frame_id="cam_optical"):
    return types.CameraInfo(header=header(types, frame_id=frame_id), height=size[0],
                            width=size[1], k=np.asarray(K, np.float64).reshape(-1),
                            p=np.asarray(P if P is not None else np.zeros(12),
                                         np.float64).reshape(-1))


def test_camera_matrix_uses_p_when_rectified(types):
    K = np.array([[500.0, 0, 320], [0, 510, 240], [0, 0, 1]])
    P = np.array([[400.0, 0, 300, 0], [0, 400, 200, 0], [0, 0, 1, 0]])
    info = _info(types, K, P)
    assert np.array_equal(m.camera_matrix(info, rectified=False), K)
    assert np.array_equal(m.camera_matrix(info, rectified=True), P[:, :3])


@pytest.mark.parametrize("K", [np.zeros(9), [500, 0, 320, 0, np.nan, 240, 0, 0, 1]])
def test_camera_matrix_rejects_bad_k(types, K):
    with pytest.raises(m.FrameError) as err:
        m.camera_matrix(_info(types, K), rectified=False, topic="/cam/camera_info")
    assert err.value.kind == "intrinsics" and "/cam/camera_info K" in str(err.value)
    with pytest.raises(m.FrameError, match="/cam/camera_info P"):
        m.camera_matrix(_info(types, np.eye(3)), rectified=True, topic="/cam/camera_info")


def test_check_pair(types):
    info = _info(types, np.eye(3), size=(6, 5))
    m.check_pair(header(types), (6, 5), info)
    with pytest.raises(m.FrameError, match="image is 4x6 but /ci says 5x6") as err:
        m.check_pair(header(types), (6, 4), info, info_topic="/ci")
    assert err.value.kind == "size"
    with pytest.raises(m.FrameError, match="'other'") as err:
        m.check_pair(header(types, frame_id="other"), (6, 5), info)
    assert err.value.kind == "frame_id"
    with pytest.raises(m.FrameError, match="/im: empty frame_id") as err:  # TF drops it
        m.check_pair(header(types, frame_id=""), (6, 5), _info(types, np.eye(3), frame_id=""),
                     image_topic="/im")
    assert err.value.kind == "frame_id"


def test_rclpy_messages_build_too(catalog, poses):
    """Where ROS 2 is installed, the same builders make rclpy messages (strict field types)."""
    pytest.importorskip("rclpy")
    pytest.importorskip("vision_msgs")
    types = m.rclpy_types()
    hdr = types.Header(stamp=types.Time(sec=3, nanosec=4), frame_id="cam")
    det = m.detections_msg(types, hdr, poses, catalog)
    assert det.detections[1].results[0].hypothesis.score == 1.0
    assert m.tf_msg(types, hdr, poses, "").transforms[2].child_frame_id == "duck_0"
    m.markers_msg(types, hdr, poses, catalog, 0.5)
    img = m.image_msg(types, hdr, np.zeros((4, 5, 3), np.uint8))
    assert m.decode_image(img).shape == (4, 5, 3)
    m.diagnostics_msg(types, hdr, name="n", hardware_id="h", level="WARN", message="m",
                      values={"a": "1"})
