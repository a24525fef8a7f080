"""Tracking mode end to end: the real Estimator (templates + contour refinement, one object)
behind the node's FrameProcessor on a short rendered sequence, with a stand-in detector that
counts its calls."""

import numpy as np
import pytest
import torch
import yaml

from pose6d_ros.core.rotations import axis_angle_to_matrix, random_rotations, rotation_angle
from pose6d_ros.nets.detector import Detections
from pose6d_ros.pipeline import Estimator, EstimatorConfig, ObjectPose
from pose6d_ros.ros import messages as m
from pose6d_ros.ros.frame_processor import FrameOutputs, FrameProcessor
from pose6d_ros.ros.parameters import settings_from_dict
from test.templates.test_templates import SMALL, K, render_with_mask

FRAMES = 7  # the cat turns 1.5 degrees and moves 3 mm per frame; then it is taken away


class CountingDetector:
    """The ground-truth box and mask of the frame being processed; records the frames it ran
    on."""

    def __init__(self) -> None:
        self.score_threshold, self.max_instances = 0.5, 16
        self.frame = 0
        self.truth: dict[int, tuple[torch.Tensor, np.ndarray]] = {}  # frame -> box, mask
        self.frames: list[int] = []

    def __call__(self, image: torch.Tensor) -> Detections:
        self.frames.append(self.frame)
        if self.frame not in self.truth:
            return Detections(torch.zeros(0, dtype=torch.long), torch.zeros(0),
                              torch.zeros(0, 4), torch.zeros(0, *image.shape[1:]))
        box, mask = self.truth[self.frame]
        xyxy = torch.cat([box[:2], box[:2] + box[2:]])[None]
        return Detections(torch.tensor([0]), torch.tensor([0.9]), xyxy,
                          torch.from_numpy(mask).float()[None])


@pytest.fixture(scope="module")
def cat_estimator(objects, tmp_path_factory):
    obj = next(o for o in objects if o.name == "cat")
    path = tmp_path_factory.mktemp("objects") / "objects.yaml"
    path.write_text(yaml.safe_dump({"objects": [
        {"name": "cat", "id": obj.id, "mesh": str(obj.mesh_path), "mesh_units": "mm",
         "diameter": obj.diameter * 1000}]}))
    est = Estimator(EstimatorConfig(objects=str(path), detector_weights=None,
                                    coordnet_weights=None, coarse="templates", templates=SMALL,
                                    templates_cache=str(tmp_path_factory.mktemp("cache")),
                                    device="cpu"))
    return obj, est


@pytest.fixture(scope="module")
def sequence(cat_estimator):
    """`FRAMES` renders of the cat moving slowly, then two of the background alone and one
    with the cat back: (rgb, R, t) per frame, R and t None where it is away."""
    obj, _ = cat_estimator
    R0 = random_rotations(1, generator=torch.Generator().manual_seed(21))[0].double()
    axis = torch.tensor([0.3, 1.0, 0.2], dtype=torch.float64)
    axis = axis / axis.norm()
    out = []
    for f in range(FRAMES):
        R = (axis_angle_to_matrix((axis * np.deg2rad(1.5 * f))[None])[0] @ R0).numpy()
        t = np.array([0.02 + 0.003 * f, 0.01, 0.65])
        rgb, box, mask = render_with_mask(obj, R, t)
        out.append((rgb, R, t, box, mask))
    empty = np.random.default_rng(0).integers(90, 150, out[0][0].shape).astype(np.uint8)
    out += [(empty, None, None, None, None)] * 2 + [out[-1]]
    return out


def _msgs(types, rgb, f):
    hdr = types.Header(stamp=types.Time(sec=100, nanosec=f), frame_id="cam")
    h, w = rgb.shape[:2]
    info = types.CameraInfo(header=hdr, height=h, width=w, k=K.reshape(-1))
    return m.image_msg(types, hdr, rgb), info


def _run(types, est, sequence, values):
    detector = est.detector = CountingDetector()
    detector.truth = {f: (box, mask) for f, (_, _, _, box, mask) in enumerate(sequence)
                      if box is not None}
    processor = FrameProcessor(types, settings_from_dict(values), est.objects, estimator=est)
    outs = []
    for f, (rgb, *_) in enumerate(sequence):
        detector.frame = f
        out = processor.process(*_msgs(types, rgb, f))
        assert isinstance(out, FrameOutputs), out
        outs.append(out)
    return detector.frames, outs, processor


def _errors(pose, R, t):
    deg = np.rad2deg(rotation_angle(torch.from_numpy(pose.R)[None],
                                    torch.from_numpy(R)[None]).item())
    return deg, np.linalg.norm(pose.t - t) * 1e3


def test_detect_every_3_on_a_render_sequence(types, cat_estimator, sequence):
    """Detector on frames 0, 3, 6 only; tracked poses stay on the moving cat; with the cat
    gone the track's score collapses, it is dropped and the next frame detects again."""
    _, est = cat_estimator
    frames, outs, processor = _run(types, est, sequence, {"detect_every": 3})
    assert frames == [0, 3, 6, 8, 9]  # frame 7 lost the track: 8 detects (nothing), 9 too
    for f in range(FRAMES):
        _, R, t, _, _ = sequence[f]
        (pose,) = outs[f].poses
        deg, mm = _errors(pose, R, t)
        assert deg < 5.0 and mm < 20.0, (f, deg, mm)
        if f % 3:  # tracked: the verification alone, and the detected pose's index
            assert pose.score > 0.5 and pose.instance == 0
    assert outs[FRAMES].poses == [] and outs[FRAMES + 1].poses == []
    assert len(outs[FRAMES + 2].poses) == 1  # the cat back, detected
    v = processor.stats.values()
    assert (v["frames_detected"], v["frames_tracked"], v["tracks_lost"]) == ("5", "5", "1")


def test_detect_every_1_detects_every_frame(types, cat_estimator, sequence):
    _, est = cat_estimator
    frames, _, processor = _run(types, est, sequence[:3], {})
    assert frames == [0, 1, 2]
    assert processor.stats.values()["frames_tracked"] == "0"


def test_track_refines_given_poses_in_one_batch(cat_estimator, sequence):
    """`Estimator.track` directly: two starts of the same cat (one 4 degrees off), one call;
    both land on it, in the given order, with the projected box around the object."""
    _, est = cat_estimator
    rgb, R, t, box, _ = sequence[1]
    _, R0, t0, _, _ = sequence[0]
    turn = axis_angle_to_matrix(torch.tensor([[0.0, 0.0, np.deg2rad(4.0)]],
                                             dtype=torch.float64))[0].numpy()
    poses = [ObjectPose("cat", 0, 2, i, 0.9, Rs, t0.copy(), 7, (0.0, 0.0, 1.0, 1.0))
             for i, Rs in enumerate((R0, turn @ R0))]
    out = est.track(rgb, K, poses)
    assert [p.instance for p in out] == [0, 1] and all(p.inliers == 0 for p in out)
    for p in out:
        deg, mm = _errors(p, R, t)
        assert deg < 3.0 and mm < 15.0 and p.score > 0.5, (deg, mm, p.score)
        x, y, w, h = p.box
        bx, by, bw, bh = box.tolist()
        assert x <= bx + 2 and y <= by + 2 and x + w >= bx + bw - 2 and y + h >= by + bh - 2
    empty = sequence[FRAMES][0]
    assert all(p.score < 0.1 for p in est.track(empty, K, out))
    assert est.track(rgb, K, []) == []
    with pytest.raises(ValueError, match="image"):
        est.track(rgb[..., 0], K, poses)


def test_track_with_depth_uses_the_depth_refiner(cat_estimator, sequence):
    """With a depth image the tracked pose is the depth refiner's and its score the depth
    agreement: high on the cat's surface, low when the depth shows only the wall behind."""
    from test.refine.test_depth import TABLE_Z, render_depth

    obj, est = cat_estimator
    rgb, R, t, _, _ = sequence[2]
    _, R0, t0, _, _ = sequence[0]
    farther = t0 + np.array([0.0, 0.0, 0.01])  # RGB's weakest direction
    start = [ObjectPose("cat", 0, obj.id, 0, 0.9, R0, farther, 7, (0, 0, 1, 1))]
    (pose,) = est.track(rgb, K, start, depth=render_depth(obj, R, t))
    deg, mm = _errors(pose, R, t)
    assert deg < 3.0 and mm < 3.0 and pose.score > 0.8, (deg, mm, pose.score)
    assert "depth" in est.last_timings and "refine" not in est.last_timings
    wall = np.full(rgb.shape[:2], TABLE_Z, np.float32)
    assert est.track(rgb, K, [pose], depth=wall)[0].score < 0.2
