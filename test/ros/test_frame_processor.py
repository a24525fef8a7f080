"""The node's callback without rclpy: good frames, every bad input, drops and diagnostics."""

import threading
import time

import numpy as np
import pytest

from pose6d_ros.ros import messages as m
from pose6d_ros.ros.frame_processor import (
    FrameOutputs,
    FrameProcessor,
    LatestSlot,
    Rejected,
    load_estimator,
)
from pose6d_ros.ros.parameters import PoseSettings, estimator_config, settings_from_dict
from test.ros.stubs import StubEstimator, make_pose

H, W = 48, 64
K = np.array([[60.0, 0, 31.5], [0, 60, 23.5], [0, 0, 1]])


@pytest.fixture
def estimator():
    return StubEstimator(estimator_config(PoseSettings()))


@pytest.fixture
def processor(types, estimator):
    return FrameProcessor(types, PoseSettings(), estimator.objects, estimator=estimator,
                          image_topic="/cam/image", info_topic="/cam/camera_info")


def pair(types, *, sec=10, nanosec=5, frame_id="cam", encoding="rgb8", size=(H, W), K=K,
         info_size=None, info_frame=None):
    h, w = size
    hdr = types.Header(stamp=types.Time(sec=sec, nanosec=nanosec), frame_id=frame_id)
    image = types.Image(header=hdr, height=h, width=w, encoding=encoding, step=3 * w,
                        data=np.full(h * w * 3, 90, np.uint8))
    ih, iw = info_size or size
    info_hdr = types.Header(stamp=hdr.stamp, frame_id=info_frame or frame_id)
    info = types.CameraInfo(header=info_hdr, height=ih, width=iw,
                            k=np.asarray(K, np.float64).reshape(-1))
    return image, info


def test_good_frame_outputs_carry_the_image_header(types, processor, estimator):
    out = processor.process(*pair(types, sec=77, nanosec=123))
    assert isinstance(out, FrameOutputs)
    for msg in (out.detections, out.pose_array, out.markers.markers[0], *out.tf.transforms):
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == \
            (77, 123, "cam")
    assert [d.id for d in out.detections.detections] == ["eggbox_0", "can_0"]
    assert [t.child_frame_id for t in out.tf.transforms] == ["eggbox_0", "can_0"]
    assert out.debug_image is None and out.class_poses == {}
    shape, K_seen = estimator.calls[-1]
    assert shape == (H, W, 3) and np.array_equal(K_seen, K)
    assert processor.stats.processed == 1 and processor.stats.instances == 2


def test_debug_image_only_when_asked(types, processor):
    out = processor.process(*pair(types), debug_image=True)
    img = out.debug_image
    assert (img.height, img.width, img.encoding, img.header.frame_id) == (H, W, "rgb8", "cam")
    drawn = np.asarray(img.data).reshape(H, W, 3)
    assert (drawn != 90).any()  # the overlay changed pixels
    assert "latency_debug_image_ms" in processor.stats.values()
    # The last subscriber left: the drawing's latency is no longer reported.
    assert processor.process(*pair(types)).debug_image is None
    assert "latency_debug_image_ms" not in processor.stats.values()


def test_switches_and_run_time_thresholds(types, processor, estimator):
    processor.settings = settings_from_dict(
        {"publish_tf": False, "publish_markers": False, "publish_per_class_poses": True,
         "detection_score": 0.8, "min_inliers": 30, "max_instances": 3, "tf_prefix": "x/"})
    out = processor.process(*pair(types))
    assert out.tf is None and out.markers is None
    assert len(out.class_poses["eggbox"].poses) == 1 and out.class_poses["ape"].poses == []
    cfg = estimator.config
    assert (cfg.detection_score, cfg.min_inliers, cfg.max_instances) == (0.8, 30, 3)


def test_input_scale_resizes_image_and_intrinsics(types, processor, estimator):
    processor.settings = settings_from_dict({"input_scale": 0.5})
    out = processor.process(*pair(types))
    shape, K_seen = estimator.calls[-1]
    assert shape == (H // 2, W // 2, 3)
    # Pixel centres kept: u' = (u + 0.5) / 2 - 0.5.
    assert np.allclose(K_seen, [[30, 0, 15.5], [0, 30, 11.5], [0, 0, 1]])
    # Poses are metric: the published ones do not depend on the resize.
    assert np.allclose(out.poses[0].t, estimator.poses[0].t)


def test_instance_index_and_symmetry_stable_over_frames(types, processor, estimator):
    egg = processor.objects[processor.objects.index_of_name("eggbox")]
    S = egg.symmetries_discrete[0]
    R0 = np.eye(3)
    published = []
    for f in range(4):
        R = R0 @ (S[:3, :3] if f % 2 else np.eye(3))  # the raw estimate flips every frame
        t = np.array([0.05, -0.02, 0.8]) + R @ (S[:3, 3] if f % 2 else np.zeros(3))
        estimator.poses = [make_pose(estimator.objects, "eggbox", t, R=R)]
        out = processor.process(*pair(types, nanosec=f))
        published.append(out.poses[0])
    assert {p.instance for p in published} == {0}
    assert all(np.allclose(p.R, published[0].R, atol=1e-9) for p in published)


# ---- bad inputs: reported, counted, and the next good frame still works ----------------

def _bad_cases(types):
    """(case, kind counted, (image, camera_info), words the reason contains)."""
    image, info = pair(types)
    image.encoding = "yuv422"
    yield "encoding", "encoding", (image, info), ["'yuv422'", "/cam/image"]
    yield "intrinsics", "intrinsics", pair(types, K=np.zeros((3, 3))), ["/cam/camera_info K"]
    yield "size", "size", pair(types, info_size=(480, 640)), ["64x48", "640x480"]
    yield "frame_id", "frame_id", pair(types, info_frame="other"), ["'cam'", "'other'"]
    yield "no_frame_id", "frame_id", pair(types, frame_id=""), ["/cam/image", "empty frame_id"]
    yield "empty", "empty", pair(types, size=(0, 0)), ["empty"]


@pytest.mark.parametrize("case", ["encoding", "intrinsics", "size", "frame_id", "no_frame_id",
                                  "empty"])
def test_bad_frames_are_rejected_counted_and_survived(types, processor, estimator, case):
    _, kind, (image, info), words = next(c for c in _bad_cases(types) if c[0] == case)
    calls = len(estimator.calls)
    out = processor.process(image, info)
    assert isinstance(out, Rejected) and out.kind == kind
    assert all(w in out.reason for w in words), out.reason
    assert len(estimator.calls) == calls  # never reached the estimator
    assert processor.stats.rejected[kind] == 1 and processor.stats.last_error == out.reason
    diag = processor.diagnostics(types.Header(stamp=types.Time(sec=1, nanosec=0), frame_id=""))
    status = diag.status[0]
    assert status.level == 1 and out.reason in status.message
    values = {kv.key: kv.value for kv in status.values}
    assert values["frames_rejected"] == "1" and values[f"rejected_{kind}"] == "1"
    assert isinstance(processor.process(*pair(types)), FrameOutputs)
    assert processor.diagnostics(diag.header).status[0].level == 0


def test_nan_poses_are_dropped_and_counted(types, processor, estimator):
    good = make_pose(estimator.objects, "duck", [0.0, 0.0, 0.5])
    estimator.poses = [make_pose(estimator.objects, "can", [np.nan, 0, 1]),
                       make_pose(estimator.objects, "ape", [0, 0, 1], R=np.full((3, 3), np.nan)),
                       make_pose(estimator.objects, "cat", [0, 0, 1], score=float("nan")), good]
    out = processor.process(*pair(types))
    assert [d.id for d in out.detections.detections] == ["duck_0"]
    assert len(out.pose_array.poses) == 1 and len(out.tf.transforms) == 1
    assert processor.stats.nan_poses == 3
    values = processor.stats.values()
    assert values["nan_poses_dropped"] == "3" and values["frames_processed"] == "1"


def test_estimator_exception_is_reported_not_raised(types, processor, estimator):
    estimator.error = RuntimeError("CUDA out of memory")
    out = processor.process(*pair(types))
    assert isinstance(out, Rejected) and out.kind == "estimator"
    assert "RuntimeError: CUDA out of memory" in out.reason
    estimator.error = None
    assert isinstance(processor.process(*pair(types)), FrameOutputs)


def test_missing_weights_at_start_up(types, tmp_path):
    """The real Estimator with missing weights: a clear error naming the file, no exception;
    the processor rejects frames, diagnostics say ERROR with the file, until weights come."""
    missing = tmp_path / "nowhere" / "coordnet.pt"
    settings = settings_from_dict({"detector_weights": str(tmp_path / "nowhere" / "det.pt"),
                                   "coordnet_weights": str(missing), "device": "cpu"})
    estimator, error = load_estimator(settings)
    assert estimator is None
    assert str(tmp_path / "nowhere") in error and "WeightsError" in error
    stub = StubEstimator(estimator_config(settings))
    processor = FrameProcessor(types, settings, stub.objects, estimator=None,
                               estimator_error=error)
    out = processor.process(*pair(types))
    assert isinstance(out, Rejected) and out.kind == "no_estimator" and error in out.reason
    status = processor.diagnostics(types.Header(stamp=types.Time(sec=0, nanosec=0),
                                                frame_id="")).status[0]
    assert status.level == 2 and str(tmp_path / "nowhere") in status.message
    assert processor.object_info().data  # metadata still available
    processor.set_estimator(stub)
    assert isinstance(processor.process(*pair(types)), FrameOutputs)
    assert processor.diagnostics(types.Header(stamp=types.Time(sec=0, nanosec=0),
                                              frame_id="")).status[0].level == 0


def test_bad_estimator_class_is_reported():
    estimator, error = load_estimator(settings_from_dict({"estimator": "no_such_module:X"}))
    assert estimator is None and "no_such_module" in error


# ---- the newest-frame slot ---------------------------------------------------------------

def test_slot_keeps_the_newest_and_counts_drops():
    slot: LatestSlot[int] = LatestSlot()
    assert slot.take(timeout=0.01) is None
    assert slot.put(1) is False
    assert slot.put(2) is True and slot.put(3) is True
    assert slot.take() == 3 and slot.dropped == 2
    assert slot.take(timeout=0.01) is None
    slot.close()
    assert slot.take() is None and slot.closed


def test_slot_with_a_slow_consumer_never_queues():
    slot: LatestSlot[int] = LatestSlot()
    got: list[int] = []

    def consume():
        while (item := slot.take(timeout=1.0)) is not None:
            got.append(item)
            time.sleep(0.02)  # slower than the producer

    worker = threading.Thread(target=consume)
    worker.start()
    for i in range(50):
        slot.put(i)
        time.sleep(0.002)
    time.sleep(0.1)
    slot.close()
    worker.join(5)
    assert got == sorted(got) and got[-1] == 49
    assert len(got) + slot.dropped == 50 and slot.dropped > 0


def test_output_failure_is_reported_not_raised(types, processor, estimator):
    bad = make_pose(estimator.objects, "duck", [0, 0, 1])
    bad.label = 99  # an object the catalog does not know
    estimator.poses = [bad]
    out = processor.process(*pair(types))
    assert isinstance(out, Rejected) and out.kind == "output" and "IndexError" in out.reason


def _diagnostics(types, processor):
    msg = processor.diagnostics(types.Header(stamp=types.Time(sec=0, nanosec=0), frame_id=""))
    status = msg.status[0]
    return status, {kv.key: kv.value for kv in status.values}


def test_unpaired_inputs_are_counted_and_warned(types, processor):
    """Images and camera_infos whose stamps never come within sync_slop: counted, and
    /diagnostics says WARN naming both topics and the offset seen, until pairs come."""
    for i in range(3):
        processor.pairing.image(10**9 * (10 + i))
        processor.pairing.info(10**9 * (10 + i) + 200_000_000)  # 0.2 s late
    status, values = _diagnostics(types, processor)
    assert status.level == 1
    assert "/cam/image" in status.message and "/cam/camera_info" in status.message
    assert "0.200 s" in status.message and processor.unpaired_warning == status.message
    assert values["frames_unpaired"] == "3" and values["camera_infos_unpaired"] == "3"
    processor.pairing.image(0)  # a misnamed info topic: images alone
    status, _ = _diagnostics(types, processor)
    assert status.level == 1 and "no camera_info on /cam/camera_info" in status.message
    processor.pairing.image(1)
    processor.pairing.info(1)
    processor.pairing.pair()
    processor.process(*pair(types))
    status, _ = _diagnostics(types, processor)
    assert status.level == 0 and processor.unpaired_warning is None


def test_diagnostics_counters_add_up(types, processor):
    """arrived = unpaired + paired, and paired = processed + rejected + dropped."""
    for i in range(5):
        processor.pairing.image(i)
        processor.pairing.info(i)
    for _ in range(4):
        processor.pairing.pair()
    processor.note_dropped()
    processor.process(*pair(types, encoding="bgr16"))  # rejected
    processor.process(*pair(types))
    processor.process(*pair(types))
    _, v = _diagnostics(types, processor)
    n = {k: int(v[k]) for k in ("frames_arrived", "frames_unpaired", "frames_paired",
                                "frames_processed", "frames_rejected", "frames_dropped")}
    assert n == {"frames_arrived": 5, "frames_unpaired": 1, "frames_paired": 4,
                 "frames_processed": 2, "frames_rejected": 1, "frames_dropped": 1}
    assert n["frames_arrived"] == n["frames_unpaired"] + n["frames_paired"]
    assert n["frames_paired"] == n["frames_processed"] + n["frames_rejected"] + n["frames_dropped"]


# ---- registered depth --------------------------------------------------------------------

DEPTH_TOPIC = "/cam/aligned_depth_to_color/image_raw"


@pytest.fixture
def depth_processor(types, estimator):
    return FrameProcessor(types, settings_from_dict({"use_depth": True}), estimator.objects,
                          estimator=estimator, image_topic="/cam/image",
                          info_topic="/cam/camera_info", depth_topic=DEPTH_TOPIC)


def depth_msg(types, values, *, encoding=None, sec=10, nanosec=5, frame_id="cam"):
    """A depth Image of `values (h, w)`: uint16 as 16UC1, float32 as 32FC1, unless
    `encoding` relabels it."""
    hdr = types.Header(stamp=types.Time(sec=sec, nanosec=nanosec), frame_id=frame_id)
    msg = m.depth_image_msg(types, hdr, np.asarray(values))
    if encoding is not None:
        msg.encoding = encoding
    return msg


def _scene_depth() -> np.ndarray:
    """`(H, W)` metres: a 0.6-1.0 m ramp with a hole (0) in one corner."""
    depth = np.linspace(0.6, 1.0, H * W, dtype=np.float32).reshape(H, W)
    depth[:4, :4] = 0.0
    return depth


@pytest.mark.parametrize("encoding, scale", [("16UC1", 0.001), ("16UC1", 0.0001),
                                             ("mono16", 0.001), ("32FC1", 0.001),
                                             ("32FC1", 0.0001)])
def test_depth_reaches_the_estimator_in_metres(types, depth_processor, estimator, encoding,
                                               scale):
    """16UC1/mono16 readings times depth_scale, 32FC1 as metres whatever depth_scale says:
    the estimator gets `(H, W)` float32 metres, holes (0, NaN) as 0."""
    truth = _scene_depth()
    if encoding == "32FC1":
        values = truth.copy()
        values[:4, :4] = np.nan  # ZED and simulators mark holes with NaN
    else:
        values = np.round(truth / scale).astype(np.uint16)
    depth_processor.settings = settings_from_dict({"use_depth": True, "depth_scale": scale})
    out = depth_processor.process(*pair(types), depth_msg(types, values, encoding=encoding))
    assert isinstance(out, FrameOutputs), out
    got = estimator.depths[-1]
    assert got.dtype == np.float32 and got.shape == (H, W)
    assert np.allclose(got, truth, atol=scale / 2 + 1e-6)
    assert (got[:4, :4] == 0).all()
    values = depth_processor.stats.values()
    assert values["frames_with_depth"] == "1" and values["frames_without_depth"] == "0"


def test_depth_follows_input_scale(types, depth_processor, estimator):
    depth_processor.settings = settings_from_dict({"use_depth": True, "input_scale": 0.5})
    truth = _scene_depth()
    depth_processor.process(*pair(types), depth_msg(types, truth))
    shape, _ = estimator.calls[-1]
    got = estimator.depths[-1]
    assert shape[:2] == got.shape == (H // 2, W // 2)
    assert set(np.unique(got)) <= set(np.unique(truth))  # nearest neighbour: no blending


def test_frames_without_depth_are_processed_rgb_only_and_counted(types, depth_processor,
                                                                 estimator, processor):
    assert isinstance(depth_processor.process(*pair(types)), FrameOutputs)
    assert estimator.depths[-1] is None
    values = depth_processor.stats.values()
    assert values["frames_with_depth"] == "0" and values["frames_without_depth"] == "1"
    # Without use_depth nothing is missing: RGB-only frames are not counted as such.
    processor.process(*pair(types))
    assert processor.stats.values()["frames_without_depth"] == "0"


def _bad_depth_cases(types):
    """(case, depth message, words the reason contains)."""
    truth = _scene_depth()
    mm = np.round(truth * 1000).astype(np.uint16)
    yield "size", depth_msg(types, mm[::2, ::2]), ["32x24", "64x48", "register"]
    yield "all_zero", depth_msg(types, np.zeros((H, W), np.uint16)), ["no valid reading"]
    yield "all_nan", depth_msg(types, np.full((H, W), np.nan, np.float32)), ["no valid"]
    # A 32FC1 image of millimetres: hundreds of "metres".
    yield "units", depth_msg(types, truth * 1000), ["32FC1", "median", "taken as metres"]
    yield "encoding", depth_msg(types, mm, encoding="16SC1"), ["'16SC1'", "16UC1, mono16, 32FC1"]
    yield "colour", depth_msg(types, mm, encoding="rgb8"), ["unsupported depth encoding 'rgb8'"]
    big = depth_msg(types, mm)
    big.is_bigendian = 1
    yield "big_endian", big, ["big-endian 16UC1"]
    short = depth_msg(types, mm)
    short.data = short.data[: len(short.data) // 2]
    yield "truncated", short, ["bytes cannot hold 48 rows", "16UC1"]
    narrow = depth_msg(types, mm)
    narrow.step = W  # one byte a pixel
    yield "step", narrow, ["step 64", "16UC1"]


@pytest.mark.parametrize("case", ["size", "all_zero", "all_nan", "units", "encoding", "colour",
                                  "big_endian", "truncated", "step"])
def test_bad_depth_is_rejected_counted_and_survived(types, depth_processor, estimator, case):
    _, depth, words = next(c for c in _bad_depth_cases(types) if c[0] == case)
    calls = len(estimator.calls)
    out = depth_processor.process(*pair(types), depth)
    assert isinstance(out, Rejected) and out.kind == "depth"
    assert DEPTH_TOPIC in out.reason and all(w in out.reason for w in words), out.reason
    assert len(estimator.calls) == calls  # never reached the estimator
    assert depth_processor.stats.rejected["depth"] == 1
    status, values = _diagnostics(types, depth_processor)
    assert status.level == 1 and out.reason in status.message
    assert values["rejected_depth"] == "1" and values["frames_rejected"] == "1"
    assert values["frames_with_depth"] == "0"
    good = depth_msg(types, np.round(_scene_depth() * 1000).astype(np.uint16))
    assert isinstance(depth_processor.process(*pair(types), good), FrameOutputs)
    assert np.allclose(estimator.depths[-1], _scene_depth(), atol=5e-4)
    status, values = _diagnostics(types, depth_processor)
    assert status.level == 0 and values["frames_with_depth"] == "1"


def test_depth_the_estimator_refuses_is_a_depth_rejection(types, depth_processor, estimator):
    from pose6d_ros.core.depth import DepthError

    estimator.error = DepthError("depth: 12x10 depth for a 64x48 image")
    out = depth_processor.process(*pair(types), depth_msg(types, _scene_depth()))
    assert isinstance(out, Rejected) and out.kind == "depth" and DEPTH_TOPIC in out.reason


def test_depth_arrivals_are_counted_and_unpaired_depth_warned(types, depth_processor):
    pairing = depth_processor.pairing
    for i in range(3):
        pairing.image(10**9 * i)
        pairing.info(10**9 * i)
    status, values = _diagnostics(types, depth_processor)
    assert status.level == 1 and f"no depth on {DEPTH_TOPIC}" in status.message
    assert values["depths_arrived"] == "0"
    for i in range(3):
        pairing.image(10**9 * i)
        pairing.info(10**9 * i)
        pairing.depth(10**9 * i + 300_000_000)  # 0.3 s late
    status, _ = _diagnostics(types, depth_processor)
    assert status.level == 1 and DEPTH_TOPIC in status.message and "0.300 s" in status.message
    pairing.depth(0)
    pairing.pair(with_depth=True)
    status, values = _diagnostics(types, depth_processor)
    assert depth_processor.unpaired_warning is None
    assert values["depths_arrived"] == "4" and values["depths_unpaired"] == "3"


def test_debug_image_tints_the_depth_residual(types, depth_processor):
    plain = depth_processor.process(*pair(types), debug_image=True).debug_image
    tinted = depth_processor.process(*pair(types), depth_msg(types, _scene_depth()),
                                     debug_image=True).debug_image
    a, b = (np.asarray(img.data).reshape(H, W, 3).astype(int) for img in (plain, tinted))
    assert (a != b).any(-1).sum() > 20  # the objects' pixels are tinted


# ---- tracking mode (detect_every) ---------------------------------------------------------

def _run(types, processor, frames):
    """Process `frames` pairs; per frame, whether the estimator detected ('D') or tracked
    ('T'), and the outputs."""
    est = processor.estimator
    kinds, outs = [], []
    for f in range(frames):
        calls, tracks = len(est.calls), len(est.track_calls)
        outs.append(processor.process(*pair(types, nanosec=f)))
        kinds.append("D" if len(est.calls) > calls else "T" if len(est.track_calls) > tracks
                     else "-")
    return "".join(kinds), outs


def test_detect_every_3_detects_on_frames_0_3_6(types, processor, estimator):
    processor.settings = settings_from_dict({"detect_every": 3, "refine_iterations": 7})
    kinds, outs = _run(types, processor, 8)
    assert kinds == "DTTDTTDT"
    assert estimator.config.track_iterations == 7
    # Each tracked frame starts from the previous frame's published poses.
    for call, before in zip(estimator.track_calls, [outs[i] for i in (0, 1, 3, 4, 6)],
                            strict=True):
        assert [(p.name, p.instance) for p in call] == [(p.name, p.instance)
                                                        for p in before.poses]
    assert [d.id for d in outs[1].detections.detections] == ["eggbox_0", "can_0"]
    assert outs[1].poses[0].score == pytest.approx(0.8)  # tracked: the verification alone
    _, v = _diagnostics(types, processor)
    assert (v["frames_detected"], v["frames_tracked"], v["tracks_lost"]) == ("3", "5", "0")
    assert int(v["frames_processed"]) == 8 and "latency_refine_tracked_ms" in v


def test_a_collapsed_track_is_dropped_and_the_next_frame_detects(types, processor, estimator):
    processor.settings = settings_from_dict({"detect_every": 5, "track_min_score": 0.5})
    estimator.track_scores = [0.8, 0.2, 0.8]
    kinds, outs = _run(types, processor, 5)
    assert kinds == "DTTDT"  # frame 2's tracks scored 0.2: re-detect on frame 3
    assert outs[2].poses == [] and outs[2].pose_array.poses == []
    assert len(outs[3].poses) == 2
    _, v = _diagnostics(types, processor)
    assert (v["frames_detected"], v["frames_tracked"], v["tracks_lost"]) == ("2", "3", "2")


def test_nothing_detected_means_detect_again(types, processor, estimator):
    processor.settings = settings_from_dict({"detect_every": 4})
    estimator.script = [[], [], list(estimator.poses)]
    kinds, _ = _run(types, processor, 5)
    assert kinds == "DDDTT"


def test_detect_every_1_is_the_detector_on_every_frame(store, types, estimator):
    """The default: the same messages as an estimator that cannot track, no track call."""
    plain = StubEstimator(estimator_config(PoseSettings()))
    a = FrameProcessor(types, PoseSettings(), estimator.objects, estimator=estimator)
    plain.can_track = lambda depth=False: False  # e.g. refine 'none' without depth
    b = FrameProcessor(types, settings_from_dict({"detect_every": 3}), plain.objects,
                       estimator=plain)
    for f in range(4):
        oa, ob = a.process(*pair(types, nanosec=f)), b.process(*pair(types, nanosec=f))
        for x, y in ((oa.detections, ob.detections), (oa.tf, ob.tf)):
            assert store.serialize_cdr(x, x.__msgtype__) == store.serialize_cdr(y, y.__msgtype__)
    assert len(estimator.calls) == len(plain.calls) == 4 and estimator.track_calls == []
    assert _diagnostics(types, a)[1]["frames_detected"] == "4"


def test_tracking_failure_is_rejected_and_detection_resumes(types, processor, estimator):
    processor.settings = settings_from_dict({"detect_every": 3})
    processor.process(*pair(types))
    estimator.error = RuntimeError("boom")
    out = processor.process(*pair(types))
    assert isinstance(out, Rejected) and "RuntimeError: boom" in out.reason
    assert len(estimator.track_calls) == 1
    estimator.error = None
    kinds, _ = _run(types, processor, 2)
    assert kinds == "DT"


@pytest.mark.parametrize("values, words", [
    ({"detect_every": 0}, r"'detect_every'.*outside"),
    ({"detect_every": 2.5}, r"'detect_every'.*expected int"),
    ({"track_min_score": 1.5}, r"'track_min_score'.*outside"),
    ({"refine_iterations": -1}, r"'refine_iterations'.*outside"),
])
def test_tracking_parameters_are_checked(values, words):
    with pytest.raises(ValueError, match=words):
        settings_from_dict(values)
