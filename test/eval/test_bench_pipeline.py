"""`pose6d bench pipeline`: the naive baseline computes what the estimator computes, and the
command reports every configuration. Never timings."""

import json

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional

from pose6d_ros.cli import main
from pose6d_ros.core.symmetry import SymmetryPools
from pose6d_ros.eval.bench_pipeline import NaiveBaseline, sample_frame
from pose6d_ros.nets.coord_poses import CoordPoseEstimator, crop_instances, square_boxes
from pose6d_ros.nets.coordnet import CoordNetConfig, CoordNetOutput, load_coordnet
from pose6d_ros.nets.correspondences import CorrespondenceOptions
from pose6d_ros.pnp import PnPOptions

K = np.array([[572.4, 0.0, 325.3], [0.0, 573.6, 242.0], [0.0, 0.0, 1.0]])


class ColourCoordinates(nn.Module):
    """A CoordNet stand-in that reads normalised object coordinates from the crop's colours
    (as rendered by `_render_boxes`): an oracle whose correspondences are geometric truth."""

    def __init__(self, num_objects: int, input_size: int) -> None:
        super().__init__()
        self.config = CoordNetConfig(num_objects, encoder="small", input_size=input_size)

    def forward(self, image: torch.Tensor, labels: torch.Tensor) -> CoordNetOutput:
        inside = (image.amax(1, keepdim=True) > 0.03).float()  # black background
        # Eroded by 2 px: silhouette pixels blend the object with the background.
        inside = -functional.max_pool2d(-inside, 5, stride=1, padding=2) > 0.5
        return CoordNetOutput(xyz=image * 2 - 1, error=torch.full_like(image[:, :1], 0.05),
                              mask_logit=torch.where(inside, 10.0, -10.0))


def _rotation(rx: float, ry: float, rz: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    return (np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
            @ np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
            @ np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]]))


def _render_boxes(objects, poses) -> tuple[np.ndarray, np.ndarray]:
    """A 640x480 uint8 image of each object's bounding cuboid, coloured by its normalised
    object coordinates, and the visible boxes (x, y, w, h)."""
    H, W = 480, 640
    v, u = np.mgrid[0:H, 0:W]
    rays = np.stack([u, v, np.ones_like(u)], -1).reshape(-1, 3) @ np.linalg.inv(K).T
    center, scale = objects.coordinate_normalisation()
    rgb = np.zeros((H * W, 3), np.uint8)
    depth = np.full(H * W, np.inf)
    owner = np.full(H * W, -1)
    for i, (label, R, t) in enumerate(poses):
        origin, d = -R.T @ t, rays @ R  # the rays in the object frame
        lo, hi = center[label] - scale[label], center[label] + scale[label]
        with np.errstate(divide="ignore", invalid="ignore"):
            a, b = (lo - origin) / d, (hi - origin) / d
        near, far = np.minimum(a, b).max(1), np.maximum(a, b).min(1)
        hit = (far >= near) & (near > 0) & (near < depth)
        n = np.clip((origin + near[:, None] * d - center[label]) / scale[label], -1, 1)
        rgb[hit] = np.round((n[hit] + 1) / 2 * 255).astype(np.uint8)
        depth[hit], owner[hit] = near[hit], i
    boxes = []
    for i in range(len(poses)):
        ys, xs = np.divmod(np.flatnonzero(owner == i), W)
        boxes.append([xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1])
    return rgb.reshape(H, W, 3), np.array(boxes, np.float64)


def _angle_deg(Ra: np.ndarray, Rb: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(Ra.T @ Rb) - 1) / 2, -1.0, 1.0))))


def _oracle_scene(objects):
    """Four instances, one per image quadrant, their crops apart (a crop holding another
    object's colours would read that object's coordinates); the eggbox is symmetric."""
    poses = [(0, _rotation(0.3, -0.5, 0.2), np.array([-0.2, -0.15, 0.9])),  # ape
             (2, _rotation(-0.8, 0.4, 1.0), np.array([0.2, -0.15, 0.9])),  # cat
             (4, _rotation(1.2, 0.2, -0.6), np.array([-0.2, 0.15, 0.9])),  # duck
             (5, _rotation(0.5, 2.5, 0.3), np.array([0.2, 0.15, 0.95]))]  # eggbox
    rgb, boxes = _render_boxes(objects, poses)
    crops = square_boxes(torch.from_numpy(boxes).float())
    for i in range(len(crops)):
        for j in range(i):
            apart = (crops[i, :2] >= crops[j, 2:]) | (crops[j, :2] >= crops[i, 2:])
            assert apart.any(), "test scene: crops overlap"
    labels = torch.tensor([label for label, _, _ in poses])
    truth_R = torch.from_numpy(np.stack([R for _, R, _ in poses]))
    truth_t = torch.from_numpy(np.stack([t for _, _, t in poses]))
    R, t = SymmetryPools(objects).canonicalise(labels, truth_R, truth_t)
    return rgb, boxes, labels, R.numpy(), t.numpy()


def _both_paths(coords, baseline, rgb, labels, boxes, K=K):
    """The estimator's batched poses and, on the very same crops, the baseline's."""
    res = coords(rgb, K, labels, torch.from_numpy(boxes).float())
    image = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0
    crops = crop_instances(image, res.crop_boxes, coords.net.config.input_size)
    naive = [baseline.instance(crops[b].permute(1, 2, 0).numpy(), int(labels[b]),
                               res.crop_boxes[b].double().numpy(), K)
             for b in range(len(labels))]
    return res, naive


def test_baseline_gives_the_estimators_poses_on_the_same_crops(objects):
    rgb, boxes, labels, R_true, t_true = _oracle_scene(objects)
    net = ColourCoordinates(len(objects), input_size=64)
    # Every selected pixel used (no random sample) and no RANSAC: both paths minimise the
    # same reprojection error from the same SQPnP start, so they must meet.
    corr = CorrespondenceOptions(max_points=64 * 64)
    coords = CoordPoseEstimator(net, objects, correspondences=corr,
                                pnp=PnPOptions(ransac=False))
    res, naive = _both_paths(coords, NaiveBaseline(coords), rgb, labels, boxes)
    for b, p in enumerate(naive):
        assert p.ok and int(res.status[b]) == 0
        assert p.points == int(res.points[b]) > 500  # the same selection
        assert _angle_deg(res.R[b].numpy(), p.R) < 1e-4
        np.testing.assert_allclose(res.t[b].numpy(), p.t, atol=1e-6)  # 1 µm
        # and the poses are the truth (the oracle's colours are quantised to 8 bits)
        assert _angle_deg(p.R, R_true[b]) < 0.1
        np.testing.assert_allclose(p.t, t_true[b], atol=5e-4)

    # Production settings (400 random pixels, RANSAC): different samples, same poses.
    coords = CoordPoseEstimator(net, objects)
    res, naive = _both_paths(coords, NaiveBaseline(coords), rgb, labels, boxes)
    for b, p in enumerate(naive):
        assert p.ok and int(res.status[b]) == 0 and p.points == int(res.points[b]) == 400
        assert _angle_deg(res.R[b].numpy(), p.R) < 0.05
        np.testing.assert_allclose(res.t[b].numpy(), p.t, atol=5e-4)

    # The whole naive path, its own cv2 crops (whole-pixel crop boxes) included.
    full = NaiveBaseline(coords)(rgb, K, labels.tolist(), boxes)
    for b, p in enumerate(full):
        assert p.ok
        assert _angle_deg(p.R, R_true[b]) < 0.2
        np.testing.assert_allclose(p.t, t_true[b], atol=1e-3)


def test_baseline_selection_and_outcome_match_on_a_real_network(objects, tiny_weights):
    """The untrained CoordNet's noisy maps: the same pixels selected, the same instances
    failed, the same pose where one is found."""
    coords = CoordPoseEstimator(load_coordnet(tiny_weights[1]), objects,
                                correspondences=CorrespondenceOptions(max_points=32 * 32),
                                pnp=PnPOptions(ransac=False))
    frame = sample_frame(objects, 8)
    res, naive = _both_paths(coords, NaiveBaseline(coords), frame.rgb,
                             torch.from_numpy(frame.labels), frame.boxes_xywh, frame.K)
    assert [p.points for p in naive] == res.points.tolist()
    assert [p.ok for p in naive] == (res.status == 0).tolist()
    for b, p in enumerate(naive):
        if p.ok:
            assert _angle_deg(res.R[b].numpy(), p.R) < 0.05
            np.testing.assert_allclose(res.t[b].numpy(), p.t, atol=5e-5)


def test_baseline_crops_are_the_estimators_crops(objects):
    """On whole-pixel crop boxes, slicing + cv2.resize samples where roi_align does."""
    v, u = np.mgrid[0:480, 0:640]
    ramp = np.stack([u * 0.35, v * 0.5, (u + v) * 0.2], -1).round().astype(np.uint8)
    boxes = np.array([[100, 50, 40, 40], [300, 200, 80, 60], [500, 380, 60, 60]], np.float64)
    net = ColourCoordinates(len(objects), input_size=32)
    baseline = NaiveBaseline(CoordPoseEstimator(net, objects))
    square = square_boxes(torch.from_numpy(boxes).float())
    ours = crop_instances(torch.from_numpy(ramp).permute(2, 0, 1).float(), square, 32)
    for b, box in enumerate(boxes):
        crop, crop_box = baseline.crop(ramp, box)
        np.testing.assert_allclose(crop_box, square[b].numpy())
        np.testing.assert_allclose(crop.astype(np.float64),
                                   ours[b].permute(1, 2, 0).double().numpy(), atol=1.0)


def test_cli_bench_pipeline_json_and_plot(tiny_weights, tmp_path, capsys):
    det, coord = tiny_weights
    plot = tmp_path / "stages.png"
    rc = main(["bench", "pipeline", "--detector", str(det), "--coordnet", str(coord),
               "--device", "cpu", "--repeats", "1", "--warmup", "0",
               "--objects-per-image", "1", "2", "--refine-iterations", "3", "--json",
               "--plot", str(plot)])
    assert rc == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["objects"] for r in rows] == [1, 2]
    for r in rows:
        assert r["device"] == "cpu" and r["image"] == "640x480"
        for key in ("ms_per_frame", "baseline_ms_per_frame", "speedup", "peak_rss_mb"):
            assert r[key] > 0
        assert r["speedup"] == r["baseline_ms_per_frame"] / r["ms_per_frame"]
        for stage in ("upload", "detect", "crops", "coordnet", "pnp", "download"):
            assert r[f"{stage}_ms"] >= 0 and r[f"baseline_{stage}_ms"] >= 0
        # Default coarse "both": template retrieval is its own stage, the baseline has none.
        assert r["templates_ms"] > 0 and r["baseline_templates_ms"] == 0
        # Tracking mode, from the frame's ground-truth poses: the refinement alone.
        assert r["track_iterations"] == 3 and r["track_refine_ms"] > 0
        assert r["track_ms_per_object"] == pytest.approx(r["track_refine_ms"] / r["objects"])
        assert r["track_ms_per_object_iteration"] == pytest.approx(r["track_ms_per_object"] / 3)
        assert r["detect_over_track"] == pytest.approx(r["ms_per_frame"]
                                                       / r["track_ms_per_frame"])
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_bench_pipeline_missing_weights_is_a_clear_error(tiny_weights, tmp_path, capsys):
    missing = tmp_path / "nope.pt"
    rc = main(["bench", "pipeline", "--detector", str(missing),
               "--coordnet", str(tiny_weights[1]), "--device", "cpu"])
    assert rc == 2
    assert str(missing) in capsys.readouterr().err
