"""The single-image estimator: its contract, whatever the weights' quality."""

import numpy as np
import pytest
import torch

from pose6d_ros.data.bop import load_scene_camera, load_scene_gt_info, read_image
from pose6d_ros.pipeline import (
    Boxes,
    Estimator,
    EstimatorConfig,
    consistent_with_boxes,
    instance_indices,
)
from test.conftest import REPO


def _estimator(tiny_weights, **kw) -> Estimator:
    det, coord = tiny_weights
    return Estimator(EstimatorConfig(objects=str(REPO / "config" / "objects.yaml"),
                                     detector_weights=str(det), coordnet_weights=str(coord),
                                     device="cpu", **kw))


def _scene(synth_dir):
    scene = sorted((synth_dir / "train").iterdir())[0]
    return scene, read_image(scene / "rgb" / "000000.jpg"), \
        load_scene_camera(scene / "scene_camera.json")[0]


def test_instance_indices_rank_by_score_within_each_object():
    labels = np.array([3, 1, 3, 3, 1])
    scores = np.array([0.2, 0.9, 0.8, 0.5, 0.95])
    assert instance_indices(labels, scores).tolist() == [2, 1, 0, 1, 0]


def test_poses_inconsistent_with_their_boxes_are_refused():
    K = torch.tensor([[600.0, 0, 320], [0, 600.0, 240], [0, 0, 1]], dtype=torch.float64)
    R = torch.eye(3, dtype=torch.float64).expand(5, 3, 3)
    # a 0.1 m object 0.6 m away: 100 px across, centred on the image centre
    t = torch.tensor([[0, 0, 0.6], [0, 0, 3.0], [0, 0, 0.1], [0.2, 0, 0.6], [0, 0, -0.6]],
                     dtype=torch.float64)
    box = torch.tensor([270.0, 190.0, 100.0, 60.0]).expand(5, 4)  # 100 x 60 visible part
    centres, diameters = torch.zeros(5, 3), torch.full((5,), 0.1)

    def check(size, offset):
        return consistent_with_boxes(R, t, K, box, centres, diameters,
                                     max_size_mismatch=size, max_centre_offset=offset).tolist()

    # right; 5x too far (20 px); 6x too near (600 px); 200 px aside; behind the camera
    assert check(4.0, 1.0) == [True, False, False, False, False]
    assert check(0, 1.0) == [True, True, True, False, False]
    assert check(4.0, 0) == [True, False, False, True, False]
    assert check(0, 0) == [True, True, True, True, False]


def test_given_boxes_give_one_valid_pose_per_instance(synth_dir, tiny_weights, objects):
    scene, rgb, K = _scene(synth_dir)
    info = load_scene_gt_info(scene / "scene_gt_info.json")[0]
    from pose6d_ros.data.bop import load_scene_gt

    gts = load_scene_gt(scene / "scene_gt.json")[0]
    labels = torch.tensor([objects.index_of_id(g.obj_id) for g in gts])
    boxes = torch.tensor([i["bbox_visib"] for i in info], dtype=torch.float32)
    est = _estimator(tiny_weights, min_inliers=0, max_size_mismatch=0, max_centre_offset=0)
    poses = est.estimate(rgb, K, Boxes(labels, boxes))
    assert poses, "untrained weights still give PnP solutions on given boxes"
    assert [p.score for p in poses] == sorted((p.score for p in poses), reverse=True)
    for p in poses:
        assert p.name == objects[p.label].name and p.object_id == objects[p.label].id
        assert 0.0 <= p.score <= 1.0
        np.testing.assert_allclose(p.R @ p.R.T, np.eye(3), atol=1e-6)
        assert np.isfinite(p.t).all()
        assert {"detect", "crops", "coordnet", "pnp", "total"} <= set(p.timings)
        assert any(np.allclose(p.box, b) for b in boxes.numpy())
    for label in {p.label for p in poses}:
        assert sorted(p.instance for p in poses if p.label == label) == \
            list(range(sum(p.label == label for p in poses)))
    # the box-consistency checks are read at every call
    est.config.max_centre_offset = 1e-9  # no pose projects exactly onto its box centre
    assert est.estimate(rgb, K, Boxes(labels, boxes)) == []


def test_detector_path_and_thresholds_changed_between_calls(synth_dir, tiny_weights):
    _, rgb, K = _scene(synth_dir)
    est = _estimator(tiny_weights)
    assert isinstance(est.estimate(rgb, K), list)
    est.config.detection_score = 1.01  # nothing can pass
    assert est.estimate(rgb, K) == []


def test_bad_inputs_are_clear_errors(tiny_weights, tmp_path):
    est = _estimator(tiny_weights)
    K = np.array([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]])
    with pytest.raises(ValueError, match="uint8"):
        est.estimate(np.zeros((48, 64, 3), np.float32), K)
    with pytest.raises(ValueError, match="K: focal"):
        est.estimate(np.zeros((48, 64, 3), np.uint8), np.zeros((3, 3)))
    from pose6d_ros.nets.coordnet import WeightsError

    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match=r"broken\.pt"):
        Estimator(EstimatorConfig(objects=str(REPO / "config" / "objects.yaml"),
                                  detector_weights=str(bad),
                                  coordnet_weights=str(tiny_weights[1])))
    with pytest.raises(WeightsError, match="not a detector"):
        Estimator(EstimatorConfig(objects=str(REPO / "config" / "objects.yaml"),
                                  detector_weights=str(tiny_weights[1]),
                                  coordnet_weights=str(tiny_weights[1])))


def test_bf16_networks_give_the_float32_correspondences(synth_dir, tiny_weights, objects):
    """Autocast (here on the CPU; bf16 is the CUDA default) changes only the networks'
    arithmetic: the same crops, masks within a few pixels, coordinates within bf16 rounding."""
    scene, rgb, K = _scene(synth_dir)
    info = load_scene_gt_info(scene / "scene_gt_info.json")[0]
    boxes = torch.tensor([i["bbox_visib"] for i in info], dtype=torch.float32)
    labels = torch.zeros(len(boxes), dtype=torch.long)
    image = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    outs = {}
    for precision in ("fp32", "bf16"):
        coords = _estimator(tiny_weights, precision=precision).coords
        assert coords.dtype == (torch.bfloat16 if precision == "bf16" else None)
        coords.net.register_forward_hook(lambda m, i, o, p=precision: outs.update({p: o}))
        coords(image, K, labels, boxes)
    a, b = outs["fp32"], outs["bf16"]
    assert b.xyz.dtype == torch.bfloat16
    assert (a.xyz - b.xyz.float()).abs().max() < 0.05
    assert ((a.mask_logit > 0) != (b.mask_logit > 0)).float().mean() < 0.02


def test_precision_names_are_checked(tiny_weights):
    with pytest.raises(ValueError, match="precision: expected auto"):
        _estimator(tiny_weights, precision="int8")
    with pytest.raises(ValueError, match="fp16 needs CUDA"):
        _estimator(tiny_weights, precision="fp16")
    assert _estimator(tiny_weights).coords.dtype is None  # auto on the CPU: float32
