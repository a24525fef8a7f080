"""The depth term: surface points lie on the rendered depth, ICP recovers known offsets of
rendered objects, verification prefers the pose that sits on the measured surface, and the
estimator's depth-refined poses beat its RGB ones."""

import numpy as np
import pytest
import torch

from pose6d_ros.core.rotations import axis_angle_to_matrix, random_rotations, rotation_angle
from pose6d_ros.refine.depth import DepthRefiner
from pose6d_ros.refine.viewpoint_models import ViewpointConfig, load_or_build_viewpoint_models
from test.templates.test_templates import K

VIEWS = ViewpointConfig()
NAMES = ("cat", "driller")
TABLE_Z = 0.9  # metres: a wall behind the object, as a sensor would see it


@pytest.fixture(scope="module")
def scene(objects, tmp_path_factory):
    """The cat and the driller, their viewpoint models and a depth refiner."""
    objs = [o for o in objects if o.name in NAMES]
    models = load_or_build_viewpoint_models(objs, VIEWS,
                                            cache_dir=tmp_path_factory.mktemp("views"))
    return objs, models, DepthRefiner(models)


def render_depth(obj, R: np.ndarray, t: np.ndarray, *, noise: float = 0.0, seed: int = 0
                 ) -> np.ndarray:
    """`(480, 640)` float32 metres: `obj` at pose R, t in front of a wall at TABLE_Z, with
    Gaussian noise of `noise` metres."""
    from pose6d_ros.data.render import Instance, Lighting, Renderer, simplify_mesh

    renderer = Renderer(640, 480)
    try:
        renderer.add_mesh("o", simplify_mesh(obj.mesh, 4000))
        out = renderer.render(K, [Instance("o", R, t)], Lighting(), amodal=False)
    finally:
        renderer.release()
    depth = np.where(out.instance == 0, out.depth, TABLE_Z).astype(np.float32)
    return depth + np.random.default_rng(seed).normal(0, noise, depth.shape).astype(np.float32)


def _offset(R: torch.Tensor, t: torch.Tensor, deg: float, shift: np.ndarray, seed: int
            ) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    axis = torch.randn(3, generator=g, dtype=torch.float64)
    R0 = axis_angle_to_matrix((axis / axis.norm() * np.deg2rad(deg))[None])[0] @ R
    return R0, t + torch.from_numpy(shift)


def _degrees(Ra: torch.Tensor, Rb: torch.Tensor) -> float:
    return float(np.rad2deg(rotation_angle(Ra[None], Rb[None]).item()))


def test_surface_points_lie_on_the_rendered_depth(scene):
    """Projected from their own view, the visible surface points sit on the rendered depth
    and their normals face the camera."""
    from pose6d_ros.templates.viewpoints import look_at_rotations

    objs, models, _ = scene
    obj, model = objs[1], models[1]
    v = 40
    R = look_at_rotations(model.directions[v:v + 1].double().numpy())[0]
    t = np.array([0.0, 0.0, 0.7])
    depth = render_depth(obj, R, t)
    cam = model.surface[v].double().numpy() @ R.T + t
    uv = cam @ K.T
    px = np.round(uv[:, :2] / uv[:, 2:]).astype(int)
    gap = np.abs(depth[px[:, 1], px[:, 0]] - cam[:, 2])
    assert np.median(gap) < 0.002 and (gap < 0.01).mean() > 0.9, gap
    normals = model.surface_normals[v].double().numpy() @ R.T
    assert ((normals * cam).sum(1) < 0).mean() > 0.95


@pytest.mark.parametrize("noise", [0.0, 0.002])
def test_icp_recovers_a_known_offset(scene, noise):
    """Starts 6 degrees and 3 cm off (2 cm of it along the line of sight) come back within
    1.5 degrees and 3 mm on a rendered depth map, with and without sensor-like noise."""
    objs, _, refiner = scene
    for i, obj in enumerate(objs):
        R = random_rotations(1, generator=torch.Generator().manual_seed(7 + i))[0].double()
        t = torch.tensor([0.02, -0.03, 0.65], dtype=torch.float64)
        depth = torch.from_numpy(render_depth(obj, R.numpy(), t.numpy(), noise=noise))
        starts = [_offset(R, t, 6.0, np.array([0.01, -0.015, 0.02]), s) for s in range(3)]
        out = refiner(depth, torch.from_numpy(K), torch.full((3,), i),
                      torch.stack([s[0] for s in starts]), torch.stack([s[1] for s in starts]))
        for k in range(3):
            assert _degrees(out.R[k], R) < 1.5, (obj.name, k, _degrees(out.R[k], R))
            assert float((out.t[k] - t).norm()) < 0.003, (obj.name, k, out.t[k] - t)
        assert (out.score > 0.8).all(), out.score


def test_alignment_fixes_the_distance_alone(scene):
    """A pose 10 cm too far along its ray (what a wrong box size gives) lands on the
    surface: alignment, no ICP iterations."""
    from pose6d_ros.refine.depth import DepthConfig

    objs, models, _ = scene
    aligner = DepthRefiner(models, DepthConfig(iterations=0))
    R = random_rotations(1, generator=torch.Generator().manual_seed(11))[0].double()
    t = torch.tensor([0.05, 0.0, 0.6], dtype=torch.float64)
    depth = torch.from_numpy(render_depth(objs[0], R.numpy(), t.numpy()))
    out = aligner(depth, torch.from_numpy(K), torch.tensor([0]), R[None], (t * 1.17)[None])
    assert float((out.t[0] - t).norm()) < 0.005, out.t[0] - t


def test_depth_score_prefers_the_pose_on_the_surface(scene):
    """Without refinement, the true pose scores high; the same pose 5 cm in front of the
    measured surface (the sensor saw through it) or 5 cm behind it (hidden) scores low."""
    objs, _, judge = scene
    R = random_rotations(1, generator=torch.Generator().manual_seed(13))[0].double()
    t = torch.tensor([0.0, 0.02, 0.7], dtype=torch.float64)
    depth = torch.from_numpy(render_depth(objs[1], R.numpy(), t.numpy(), noise=0.002))
    ts = torch.stack([t, t * (1 - 0.05 / 0.7), t * (1 + 0.05 / 0.7)])
    score = judge.score(depth, torch.from_numpy(K), torch.ones(3, dtype=int),
                        R[None].expand(3, -1, -1), ts).score
    assert score[0] > 0.8 and (score[1:] < 0.5).all(), score


def test_visible_box_scores_how_much_of_it_the_confirmed_points_cover(scene):
    """With the instance's visible box, the true pose keeps its score; against a box twice
    as wide (half of it the pose does not explain, as for a pose too small for the object)
    it loses about half; `box_power` 0 ignores boxes."""
    from pose6d_ros.refine.depth import DepthConfig

    objs, models, judge = scene
    R = random_rotations(1, generator=torch.Generator().manual_seed(13))[0].double()
    t = torch.tensor([0.0, 0.02, 0.7], dtype=torch.float64)
    depth = render_depth(objs[1], R.numpy(), t.numpy(), noise=0.002)
    ys, xs = np.nonzero(depth < TABLE_Z - 0.02)
    box = torch.tensor([[xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]],
                       dtype=torch.float64)
    wide = box * torch.tensor([1.0, 1.0, 2.0, 1.0], dtype=torch.float64)
    args = (torch.from_numpy(depth), torch.from_numpy(K), torch.ones(1, dtype=int), R[None],
            t[None])
    plain = float(judge.score(*args).score[0])
    fitted = float(judge.score(*args, boxes=box).score[0])
    halved = float(judge.score(*args, boxes=wide).score[0])
    assert plain > 0.8 and fitted > 0.85 * plain, (plain, fitted)
    assert 0.35 * plain < halved < 0.6 * plain, (plain, halved)
    off = DepthRefiner(models, DepthConfig(box_power=0.0))
    assert float(off.score(*args, boxes=wide).score[0]) == pytest.approx(plain)


def test_edge_placements_put_the_silhouette_on_an_occluded_objects_box(scene):
    """The right half of the driller hidden: placed at its visible box's centre, the pose
    is a quarter of the width off; the placement with the silhouette's left edge on the
    box's left edge is back within a few millimetres."""
    objs, _, judge = scene
    R = random_rotations(1, generator=torch.Generator().manual_seed(13))[0].double()
    t = torch.tensor([0.0, 0.02, 0.7], dtype=torch.float64)
    ys, xs = np.nonzero(render_depth(objs[1], R.numpy(), t.numpy()) < TABLE_Z - 0.02)
    w = xs.max() - xs.min() + 1
    box = torch.tensor([[xs.min(), ys.min(), w / 2, ys.max() - ys.min() + 1]],
                       dtype=torch.float64)
    start = t - torch.tensor([w / 4 / K[0, 0] * 0.7, 0.0, 0.0], dtype=torch.float64)
    moved = judge.edge_placements(torch.from_numpy(K), torch.ones(1, dtype=int), R[None],
                                  start[None], box)
    assert moved.shape == (1, 8, 3)
    assert float((start - t).norm()) > 0.015
    err = (moved[0] - t).norm(dim=1)
    # The silhouette is the nearest sparse view's, a few degrees from the true one.
    assert float(err.min()) < 0.008, err
    np.testing.assert_allclose(moved[0, :, 2].numpy(), 0.7)  # all at the same depth


def test_points_box_and_paired_iou():
    from pose6d_ros.core.boxes import box_iou_xywh, points_box

    uv = torch.tensor([[[1.0, 2.0], [5.0, 4.0], [100.0, 100.0]], [[0.0, 0.0], [1.0, 1.0],
                                                                  [2.0, 2.0]]])
    keep = torch.tensor([[True, True, False], [False, False, False]])
    np.testing.assert_allclose(points_box(uv, keep), [[1, 2, 4, 2], [0, 0, 0, 0]])
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 0.0, 2.0, 2.0], [5.0, 5.0, 1.0, 1.0]])
    np.testing.assert_allclose(box_iou_xywh(a, b), [2 / 6, 0.0])


def test_search_slides_rough_poses_onto_the_surface_and_ranks_the_true_one_first(scene):
    """Among the true rotation and 40 random ones, all 12 % too far along their rays, the
    search (a vote along the ray, no ICP) puts the true one on the surface and first; a
    pose outside the image is no candidate."""
    objs, _, judge = scene
    R = random_rotations(1, generator=torch.Generator().manual_seed(17))[0].double()
    t = torch.tensor([0.03, -0.01, 0.65], dtype=torch.float64)
    depth = torch.from_numpy(render_depth(objs[1], R.numpy(), t.numpy(), noise=0.002))
    others = random_rotations(40, generator=torch.Generator().manual_seed(18)).double()
    Rs = torch.cat([R[None], others, R[None]])
    ts = torch.cat([(t * 1.12)[None].expand(41, -1), torch.tensor([[2.0, 0.0, 0.65]]).double()])
    out = judge.search(depth, torch.from_numpy(K), torch.ones(42, dtype=int), Rs, ts)
    assert int(out.score[:41].argmax()) == 0, out.score[:41].topk(3)
    assert float((out.t[0] - t).norm()) < 0.01, out.t[0] - t
    assert out.score[41] == 0.0
    # With the visible box (on every third point, as the search scores) the same.
    ys, xs = np.nonzero(depth.numpy() < TABLE_Z - 0.02)
    box = torch.tensor([xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1])
    boxed = judge.search(depth, torch.from_numpy(K), torch.ones(42, dtype=int), Rs, ts,
                         boxes=box[None].expand(42, -1).double())
    assert int(boxed.score[:41].argmax()) == 0, boxed.score[:41].topk(3)
    assert boxed.score[0] > 0.8 * out.score[0] and boxed.score[41] == 0.0


def test_estimator_with_depth_beats_rgb_alone(objects, tmp_path):
    """On a render with a noisy depth map, the estimator's template pose lands within a few
    millimetres when given the depth, closer than from the colour image alone; bad depth is
    refused by name."""
    import yaml

    from pose6d_ros.core.depth import DepthError
    from pose6d_ros.pipeline import Boxes, Estimator, EstimatorConfig
    from test.templates.test_templates import SMALL, render_with_mask

    obj = next(o for o in objects if o.name == "driller")
    path = tmp_path / "objects.yaml"
    path.write_text(yaml.safe_dump({"objects": [
        {"name": obj.name, "id": obj.id, "mesh": str(obj.mesh_path), "mesh_units": "mm",
         "diameter": obj.diameter * 1000}]}))
    R = random_rotations(1, generator=torch.Generator().manual_seed(23))[0].double()
    t = np.array([-0.03, 0.02, 0.75])
    rgb, box, _ = render_with_mask(obj, R.numpy(), t)
    depth = render_depth(obj, R.numpy(), t, noise=0.002)
    est = Estimator(EstimatorConfig(objects=str(path), detector_weights=None,
                                    coordnet_weights=None, coarse="templates", templates=SMALL,
                                    viewpoints=VIEWS, templates_cache=str(tmp_path / "cache"),
                                    device="cpu"))
    boxes = Boxes(labels=torch.tensor([0]), boxes_xywh=box[None])
    rgb_only = est.estimate(rgb, K, boxes)[0]
    with_depth = est.estimate(rgb, K, boxes, depth=depth)[0]
    err_rgb = np.linalg.norm(rgb_only.t - t)
    err_depth = np.linalg.norm(with_depth.t - t)
    assert err_depth < 0.005 and err_depth < err_rgb, (err_depth, err_rgb)
    assert _degrees(torch.from_numpy(with_depth.R), R) < 3.0
    with pytest.raises(DepthError, match="register the depth"):
        est.estimate(rgb, K, boxes, depth=depth[:200])
    with pytest.raises(DepthError, match="units"):
        est.estimate(rgb, K, boxes, depth=depth * 1000)
