"""`pose6d bag`: a bag in, the node's outputs in a new bag, stamps kept."""

import json
from collections import Counter

import numpy as np
import pytest
from rosbags.rosbag2 import Reader, StoragePlugin, Writer

from pose6d_ros.cli import main
from pose6d_ros.core.paths import sample_scene
from pose6d_ros.ros import messages as m
from pose6d_ros.ros.bag import BagError, make_sample_bag, process_bag
from pose6d_ros.ros.frame_processor import FrameProcessor, load_estimator
from pose6d_ros.ros.messages import stamp_ns
from pose6d_ros.ros.parameters import PoseSettings, estimator_config, settings_from_dict
from test.ros.stubs import StubEstimator

IMAGE, INFO = "/cam/image_raw", "/cam/camera_info"
START = 1_700_000_000 * 10**9
K = np.array([[60.0, 0, 31.5], [0, 60, 23.5], [0, 0, 1]])


@pytest.fixture(scope="module")
def store():
    return m.rosbags_typestore("humble")


def _write_input(path, store, storage):
    """Five images: three good (one bgr8), one whose camera_info is 0.5 s away, one whose
    camera_info says another size. Returns the good images' stamps (ns) and log times."""
    types = m.rosbags_types(store)
    good = []
    plugin = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}[storage]
    with Writer(path, version=8, storage_plugin=plugin) as w:
        c_img = w.add_connection(IMAGE, "sensor_msgs/msg/Image", typestore=store)
        c_info = w.add_connection(INFO, "sensor_msgs/msg/CameraInfo", typestore=store)
        for k in range(5):
            stamp = START + k * 100_000_000 + 17
            hdr = types.Header(stamp=types.Time(sec=stamp // 10**9, nanosec=stamp % 10**9),
                               frame_id="cam")
            enc = "bgr8" if k == 1 else "rgb8"
            img = types.Image(header=hdr, height=48, width=64, encoding=enc, step=192,
                              data=np.full(48 * 64 * 3, 30 * k, np.uint8))
            info_stamp = stamp + (500_000_000 if k == 3 else 3_000_000)  # 3 ms late
            info = types.CameraInfo(
                header=types.Header(stamp=types.Time(sec=info_stamp // 10**9,
                                                     nanosec=info_stamp % 10**9),
                                    frame_id="cam"),
                height=480 if k == 4 else 48, width=64, k=K.reshape(-1))
            log = stamp + 1_000_000  # received 1 ms after the stamp
            w.write(c_img, log, store.serialize_cdr(img, img.__msgtype__))
            w.write(c_info, log + 500, store.serialize_cdr(info, info.__msgtype__))
            if k < 3:
                good.append((stamp, log))
    return good


def _read(path, store):
    """topic -> list of (log time, message)."""
    out: dict[str, list] = {}
    with Reader(path) as r:
        for conn, t, raw in r.messages():
            out.setdefault(conn.topic, []).append((t, store.deserialize_cdr(raw, conn.msgtype)))
    return out


@pytest.mark.parametrize("src_storage, dst_storage", [("mcap", "sqlite3"), ("sqlite3", "mcap")])
def test_bag_round_trip(tmp_path, store, src_storage, dst_storage):
    good = _write_input(tmp_path / "in", store, src_storage)
    estimator = StubEstimator(estimator_config(PoseSettings()))
    processor = FrameProcessor(m.rosbags_types(store), PoseSettings(), estimator.objects,
                               estimator=estimator, image_topic=IMAGE, info_topic=INFO)
    summary = process_bag(tmp_path / "in", tmp_path / "out", processor, store,
                          image_topic=IMAGE, info_topic=INFO, slop=0.05, storage=dst_storage)
    assert (summary.images, summary.processed, summary.instances) == (5, 3, 6)
    assert summary.rejected == Counter({"no_camera_info": 1, "size": 1})

    out = _read(tmp_path / "out", store)
    counts = {k: len(v) for k, v in out.items()}
    assert counts == {"/label_info": 1, "/object_info": 1, IMAGE: 5, INFO: 5, "/detections": 3,
                      "/poses": 3, "/tf": 3, "/markers": 3, "/diagnostics": 1}
    for topic in ("/detections", "/poses", "/tf", "/markers"):
        for (log, msg), (stamp, in_log) in zip(out[topic], good, strict=True):
            headers = ([t.header for t in msg.transforms] if topic == "/tf" else
                       [mk.header for mk in msg.markers] if topic == "/markers" else [msg.header])
            assert log == in_log
            assert all(stamp_ns(h) == stamp and h.frame_id == "cam" for h in headers)
    assert [t.child_frame_id for t in out["/tf"][0][1].transforms] == ["eggbox_0", "can_0"]
    det = out["/detections"][0][1].detections[0]
    assert det.results[0].hypothesis.class_id == "eggbox" and det.id == "eggbox_0"
    diag = {kv.key: kv.value for kv in out["/diagnostics"][0][1].status[0].values}
    assert diag["frames_processed"] == "3" and diag["rejected_size"] == "1"
    with Reader(tmp_path / "out") as r:
        latched = next(c for c in r.connections if c.topic == "/label_info")
        assert latched.ext.offered_qos_profiles[0].durability.name == "TRANSIENT_LOCAL"


def test_bag_errors_name_the_bag_and_topic(tmp_path, store):
    _write_input(tmp_path / "in", store, "mcap")
    estimator = StubEstimator(estimator_config(PoseSettings()))
    processor = FrameProcessor(m.rosbags_types(store), PoseSettings(), estimator.objects,
                               estimator=estimator)
    with pytest.raises(BagError, match=r"no topic '/nope'.*'/cam/image_raw'"):
        process_bag(tmp_path / "in", tmp_path / "o1", processor, store, image_topic="/nope",
                    info_topic=INFO)
    with pytest.raises(BagError, match="'/cam/camera_info' has type sensor_msgs/msg/CameraInfo"):
        process_bag(tmp_path / "in", tmp_path / "o2", processor, store, image_topic=INFO,
                    info_topic=INFO)
    with pytest.raises(BagError, match="cannot read bag"):
        process_bag(tmp_path / "missing", tmp_path / "o3", processor, store, image_topic=IMAGE,
                    info_topic=INFO)
    with pytest.raises(BagError, match="exists already"):
        process_bag(tmp_path / "in", tmp_path / "in", processor, store, image_topic=IMAGE,
                    info_topic=INFO)


def test_sample_bag_and_the_command(tmp_path, store, capsys):
    """The shipped photographs -> a sample bag -> `pose6d bag` (stub estimator) -> poses."""
    assert main(["bag", "--make-sample", "--out", str(tmp_path / "sample")]) == 0
    assert (tmp_path / "sample" / "ATTRIBUTION.md").read_text().count("CC BY-SA 4.0")
    sample = _read(tmp_path / "sample", store)
    assert len(sample["/camera/image_raw"]) == len(sample["/camera/camera_info"]) == 5
    img = sample["/camera/image_raw"][0][1]
    assert (img.width, img.height, img.encoding) == (640, 480, "rgb8")
    assert sample["/camera/camera_info"][0][1].k[0] == pytest.approx(572.4114)

    params = tmp_path / "p.yaml"
    params.write_text("/**:\n  ros__parameters:\n"
                      "    estimator: test.ros.stubs:StubEstimator\n    tf_prefix: lmo/\n")
    rc = main(["bag", str(tmp_path / "sample"), "--out", str(tmp_path / "out"),
               "--params", str(params), "--storage", "sqlite3", "--debug-image",
               "--namespace", "cam0"])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert "5 images, 5 processed, 10 instances" in printed
    out = _read(tmp_path / "out", store)
    assert len(out["/cam0/detections"]) == 5 and len(out["/cam0/debug_image"]) == 5
    assert out["/tf"][0][1].transforms[0].child_frame_id == "lmo/eggbox_0"
    for (_, det), (_, image) in zip(out["/cam0/detections"], sample["/camera/image_raw"],
                                    strict=True):
        assert stamp_ns(det.header) == stamp_ns(image.header)


def test_bag_command_detect_every(tmp_path, store, capsys):
    """`--detect-every 3` over the five sample images: frames 0 and 3 detect, the others
    track; the summary says so and gives frames/s; a bad N names the parameter."""
    make_sample_bag(sample_scene(), tmp_path / "sample", store)
    params = tmp_path / "p.yaml"
    params.write_text("/**:\n  ros__parameters:\n"
                      "    estimator: test.ros.stubs:StubEstimator\n")
    rc = main(["bag", str(tmp_path / "sample"), "--out", str(tmp_path / "out"),
               "--params", str(params), "--detect-every", "3"])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert "5 processed (2 detected, 3 tracked, 0 tracks lost), 10 instances" in printed
    assert " frames/s (5 images processed in " in printed
    diag = {kv.key: kv.value
            for kv in _read(tmp_path / "out", store)["/diagnostics"][0][1].status[0].values}
    assert (diag["frames_detected"], diag["frames_tracked"]) == ("2", "3")
    rc = main(["bag", str(tmp_path / "sample"), "--out", str(tmp_path / "out2"),
               "--params", str(params), "--detect-every", "0"])
    assert rc == 2 and "'detect_every'" in capsys.readouterr().err


def test_command_reports_missing_weights(tmp_path, capsys):
    make_sample_bag(sample_scene(), tmp_path / "sample", m.rosbags_typestore("humble"))
    rc = main(["bag", str(tmp_path / "sample"), "--out", str(tmp_path / "out"),
               "--coordnet-weights", str(tmp_path / "none.pt"),
               "--detector-weights", str(tmp_path / "none_det.pt"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and "pose6d: error: bag:" in err and str(tmp_path) in err
    assert not (tmp_path / "out").exists()


def test_the_real_estimator_on_the_sample_bag(tmp_path, store, tiny_weights):
    """The shipped photographs through the real Estimator (untrained weights: the poses are
    meaningless, the interface and the stamps are what is checked)."""
    detector, coordnet = tiny_weights
    settings = settings_from_dict({"detector_weights": str(detector),
                                   "coordnet_weights": str(coordnet), "device": "cpu",
                                   "detection_score": 0.05, "min_inliers": 4})
    estimator, error = load_estimator(settings)
    assert error is None, error
    processor = FrameProcessor(m.rosbags_types(store), settings, estimator.objects,
                               estimator=estimator)
    make_sample_bag(sample_scene(), tmp_path / "sample", store)
    summary = process_bag(tmp_path / "sample", tmp_path / "out", processor, store,
                          image_topic="/camera/image_raw", info_topic="/camera/camera_info")
    assert summary.processed == 5, summary.rejected
    out = _read(tmp_path / "out", store)
    assert [stamp_ns(d.header) for _, d in out["/detections"]] == \
        [stamp_ns(i.header) for _, i in out["/camera/image_raw"]]
    for _, det in out["/detections"]:
        assert all(0.0 <= d.results[0].hypothesis.score <= 1.0 for d in det.detections)


def test_shipped_weights_turn_the_sample_bag_into_poses(tmp_path, store, capsys):
    """As a user would: the sample bag through `pose6d bag` with the shipped weights and the
    default parameters gives PoseArrays with poses, TF and detections of known objects."""
    assert main(["bag", "--make-sample", "--out", str(tmp_path / "sample")]) == 0
    assert main(["bag", str(tmp_path / "sample"), "--out", str(tmp_path / "out"),
                 "--device", "cpu"]) == 0
    capsys.readouterr()
    out = _read(tmp_path / "out", store)
    poses = [p for _, msg in out["/poses"] for p in msg.poses]
    assert poses, "the shipped weights found nothing in the five photographs"
    assert all(np.isfinite([p.position.z, p.orientation.w]).all() and p.position.z > 0
               for p in poses)
    names = {d.results[0].hypothesis.class_id for _, msg in out["/detections"]
             for d in msg.detections}
    assert names <= {"ape", "can", "cat", "driller", "duck", "eggbox", "glue", "holepuncher"}
    frames = {t.child_frame_id for _, msg in out["/tf"] for t in msg.transforms}
    assert len(frames) >= 1 and all(f.rsplit("_", 1)[0] in names for f in frames)


# ---- registered depth ----------------------------------------------------------------------

DEPTH = "/cam/aligned_depth_to_color/image_raw"


def _depth_scene(path):
    """A BOP scene folder of three 64x48 images, depth/ for the first two only (depth_scale
    0.1: PNG value x 0.1 = mm). Returns each image's depth in metres (None: no depth)."""
    from pose6d_ros.data.bop import write_depth, write_rgb

    (path / "rgb").mkdir(parents=True)
    (path / "depth").mkdir()
    truths, cameras = [], {}
    for k in range(3):
        write_rgb(path / "rgb" / f"{k:06d}.png", np.full((48, 64, 3), 40 * k, np.uint8))
        cameras[str(k)] = {"cam_K": K.reshape(-1).tolist(), "depth_scale": 0.1}
        truth = None
        if k < 2:
            truth = np.linspace(0.5 + k, 0.9 + k, 48 * 64, dtype=np.float32).reshape(48, 64)
            truth = np.round(truth * 1000) / 1000  # whole millimetres, as 16UC1 carries
            truth[0, :5] = 0.0  # holes
            write_depth(path / "depth" / f"{k:06d}.png", truth, 0.1)
        truths.append(truth)
    (path / "scene_camera.json").write_text(json.dumps(cameras))
    return truths


def test_sample_bag_carries_the_scene_depth_as_16uc1_mm(tmp_path, store):
    truths = _depth_scene(tmp_path / "scene")
    assert make_sample_bag(tmp_path / "scene", tmp_path / "bag", store, image_topic=IMAGE,
                           info_topic=INFO, depth_topic=DEPTH) == 3
    got = _read(tmp_path / "bag", store)
    assert len(got[IMAGE]) == 3 and len(got[DEPTH]) == 2
    for (_, depth), (_, image), truth in zip(got[DEPTH], got[IMAGE], truths, strict=False):
        assert (depth.encoding, depth.height, depth.width, depth.step) == ("16UC1", 48, 64, 128)
        assert stamp_ns(depth.header) == stamp_ns(image.header)
        assert depth.header.frame_id == image.header.frame_id
        mm = np.frombuffer(np.asarray(depth.data, np.uint8).tobytes(), "<u2").reshape(48, 64)
        assert np.array_equal(mm, np.round(truth * 1000).astype(np.uint16))


def test_bag_with_depth_topic_hands_depth_to_the_estimator(tmp_path, store):
    """Each image gets the depth of its stamp in metres; the one without depth is processed
    RGB-only and counted; the depth topic is copied into the output bag."""
    truths = _depth_scene(tmp_path / "scene")
    make_sample_bag(tmp_path / "scene", tmp_path / "bag", store, image_topic=IMAGE,
                    info_topic=INFO, depth_topic=DEPTH)
    settings = settings_from_dict({"use_depth": True})
    estimator = StubEstimator(estimator_config(settings))
    processor = FrameProcessor(m.rosbags_types(store), settings, estimator.objects,
                               estimator=estimator, image_topic=IMAGE, info_topic=INFO,
                               depth_topic=DEPTH)
    summary = process_bag(tmp_path / "bag", tmp_path / "out", processor, store,
                          image_topic=IMAGE, info_topic=INFO, depth_topic=DEPTH)
    assert (summary.images, summary.processed, summary.with_depth) == (3, 3, 2)
    assert estimator.depths[2] is None
    for got, truth in zip(estimator.depths[:2], truths[:2], strict=True):
        assert got.dtype == np.float32 and got.shape == (48, 64)
        assert np.allclose(got, truth, atol=1e-6)
    out = _read(tmp_path / "out", store)
    assert len(out[DEPTH]) == 2 and len(out["/poses"]) == 3
    diag = {kv.key: kv.value for kv in out["/diagnostics"][0][1].status[0].values}
    assert (diag["frames_with_depth"], diag["frames_without_depth"]) == ("2", "1")
    assert (diag["depths_arrived"], diag["depths_unpaired"]) == ("2", "0")
    # Without --depth-topic the same bag runs RGB-only.
    estimator.depths.clear()
    process_bag(tmp_path / "bag", tmp_path / "rgb_only", processor, store, image_topic=IMAGE,
                info_topic=INFO)
    assert estimator.depths == [None, None, None]


def test_bag_command_with_depth_topic(tmp_path, store, capsys):
    _depth_scene(tmp_path / "scene")
    assert main(["bag", "--make-sample", str(tmp_path / "scene"), "--out",
                 str(tmp_path / "bag")]) == 0
    assert "depth on /camera/aligned_depth_to_color/image_raw" in capsys.readouterr().out
    params = tmp_path / "p.yaml"
    params.write_text("/**:\n  ros__parameters:\n"
                      "    estimator: test.ros.stubs:StubEstimator\n")
    rc = main(["bag", str(tmp_path / "bag"), "--out", str(tmp_path / "out"), "--params",
               str(params), "--depth-topic", "/camera/aligned_depth_to_color/image_raw"])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert "3 images, 3 processed, 6 instances, 2 with depth; rejected: none" in printed
    rc = main(["bag", str(tmp_path / "bag"), "--out", str(tmp_path / "out2"), "--params",
               str(params), "--depth-topic", "/nope"])
    err = capsys.readouterr().err
    assert rc == 2 and "no topic '/nope'" in err


def test_bad_depth_in_a_bag_is_rejected_by_kind(tmp_path, store):
    """A 32FC1 depth topic holding millimetres: every frame with it is rejected 'depth'."""
    types = m.rosbags_types(store)
    with Writer(tmp_path / "in", version=8, storage_plugin=StoragePlugin.MCAP) as w:
        c_img = w.add_connection(IMAGE, "sensor_msgs/msg/Image", typestore=store)
        c_info = w.add_connection(INFO, "sensor_msgs/msg/CameraInfo", typestore=store)
        c_depth = w.add_connection(DEPTH, "sensor_msgs/msg/Image", typestore=store)
        for k in range(2):
            stamp = START + k * 100_000_000
            hdr = types.Header(stamp=types.Time(sec=stamp // 10**9, nanosec=stamp % 10**9),
                               frame_id="cam")
            img = m.image_msg(types, hdr, np.full((48, 64, 3), 90, np.uint8))
            info = types.CameraInfo(header=hdr, height=48, width=64, k=K.reshape(-1))
            depth = m.depth_image_msg(types, hdr, np.full((48, 64), 800.0, np.float32))
            for conn, msg in ((c_img, img), (c_info, info), (c_depth, depth)):
                w.write(conn, stamp, store.serialize_cdr(msg, msg.__msgtype__))
    estimator = StubEstimator(estimator_config(PoseSettings()))
    processor = FrameProcessor(m.rosbags_types(store), PoseSettings(), estimator.objects,
                               estimator=estimator, depth_topic=DEPTH)
    summary = process_bag(tmp_path / "in", tmp_path / "out", processor, store,
                          image_topic=IMAGE, info_topic=INFO, depth_topic=DEPTH)
    assert summary.processed == 0 and summary.rejected == Counter({"depth": 2})
    assert estimator.calls == []
    assert "32FC1" in processor.stats.last_error and DEPTH in processor.stats.last_error


# ---- fusion: camera poses from the bag's TF --------------------------------------------

def _posed_scene(path):
    """A BOP scene folder of four 64x48 images, the first three with camera poses
    (`cam_R_w2c`, `cam_t_w2c` in mm, as `pose6d synth` writes them). Returns the poses
    `T_world_cam (4, 4)`."""
    from pose6d_ros.data.bop import write_rgb
    from test.ros.test_fusion import camera

    (path / "rgb").mkdir(parents=True)
    cameras, poses = {}, []
    for k in range(4):
        write_rgb(path / "rgb" / f"{k:06d}.png", np.full((48, 64, 3), 40 * k, np.uint8))
        cameras[str(k)] = {"cam_K": K.reshape(-1).tolist()}
        if k < 3:
            T_wc = camera([0.6 * np.cos(k), 0.6 * np.sin(k), 0.5])
            T_cw = np.linalg.inv(T_wc)
            cameras[str(k)].update(cam_R_w2c=T_cw[:3, :3].reshape(-1).tolist(),
                                   cam_t_w2c=(T_cw[:3, 3] * 1000).tolist())
            poses.append(T_wc)
    (path / "scene_camera.json").write_text(json.dumps(cameras))
    return poses


def test_bag_fusion_with_camera_poses_from_tf(tmp_path, store, capsys):
    """`--make-sample` of a scene with camera poses writes them on /tf; `pose6d bag` with
    `fusion: true` fuses the views that have one (fused topics in `world`, the images'
    stamps), counts the one that has none, and still writes every per-view output."""
    from pose6d_ros.ros.tf_buffer import quaternion_matrix

    poses = _posed_scene(tmp_path / "scene")
    assert main(["bag", "--make-sample", str(tmp_path / "scene"), "--out",
                 str(tmp_path / "bag")]) == 0
    assert "(camera poses on /tf)" in capsys.readouterr().out
    sample = _read(tmp_path / "bag", store)
    images = [stamp_ns(msg.header) for _, msg in sample["/camera/image_raw"]]
    assert len(images) == 4 and len(sample["/tf"]) == 3
    for (_, msg), T, stamp in zip(sample["/tf"], poses, images, strict=False):
        (tf,) = msg.transforms
        assert (tf.header.frame_id, tf.child_frame_id) == ("world", "camera_optical_frame")
        assert stamp_ns(tf.header) == stamp
        v, r = tf.transform.translation, tf.transform.rotation
        assert np.allclose([v.x, v.y, v.z], T[:3, 3], atol=1e-9)
        assert np.allclose(quaternion_matrix(np.array([r.x, r.y, r.z, r.w])), T[:3, :3])

    params = tmp_path / "p.yaml"
    params.write_text("/**:\n  ros__parameters:\n"
                      "    estimator: test.ros.stubs:StubEstimator\n    fusion: true\n")
    rc = main(["bag", str(tmp_path / "bag"), "--out", str(tmp_path / "out"),
               "--params", str(params)])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert "4 images, 4 processed, 8 instances, 3 views fused (1 without TF" in printed
    out = _read(tmp_path / "out", store)
    assert len(out["/poses"]) == len(out["/detections"]) == 4
    assert len(out["/fused/poses"]) == len(out["/fused/detections"]) == 3
    for topic in ("/fused/poses", "/fused/detections"):
        assert [stamp_ns(msg.header) for _, msg in out[topic]] == images[:3]
        assert {msg.header.frame_id for _, msg in out[topic]} == {"world"}
    assert len(out["/fused/poses"][-1][1].poses) >= 2
    tf = [t for _, msg in out["/tf"] for t in msg.transforms]
    assert sum(t.child_frame_id == "camera_optical_frame" for t in tf) == 3  # the input's
    fused = [t for t in tf if t.child_frame_id.startswith("fused_")]
    assert fused and {t.header.frame_id for t in fused} == {"world"}
    assert {t.header.frame_id for t in tf if t.child_frame_id in ("eggbox_0", "can_0")} == \
        {"camera_optical_frame"}
    diag = {kv.key: kv.value for kv in out["/diagnostics"][0][1].status[0].values}
    assert (diag["views_fused"], diag["views_without_tf"]) == ("3", "1")
