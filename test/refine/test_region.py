"""Render-and-compare: viewpoint models lie on the silhouette, refinement pulls perturbed poses
back onto a rendered object, the contour score prefers the true pose, and the estimator's
refined template poses beat the unrefined ones."""

import numpy as np
import pytest
import torch

from pose6d_ros.core.rotations import axis_angle_to_matrix, random_rotations, rotation_angle
from pose6d_ros.pipeline import Boxes, Estimator, EstimatorConfig
from pose6d_ros.refine.region import RegionRefiner
from pose6d_ros.refine.viewpoint_models import ViewpointConfig, load_or_build_viewpoint_models
from test.templates.test_templates import SMALL, K, render_with_mask

VIEWS = ViewpointConfig()  # the default (8 degrees): coarser views bias the contour
NAMES = ("cat", "driller")


@pytest.fixture(scope="module")
def scene(objects, tmp_path_factory):
    """The cat and the driller, their viewpoint models and a refiner."""
    objs = [o for o in objects if o.name in NAMES]
    models = load_or_build_viewpoint_models(objs, VIEWS,
                                            cache_dir=tmp_path_factory.mktemp("views"))
    return objs, models, RegionRefiner(models)


def _perturbed(R: torch.Tensor, t: torch.Tensor, deg: float, share: float, seed: int
               ) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    axis = torch.randn(3, generator=g, dtype=torch.float64)
    shift = torch.randn(3, generator=g, dtype=torch.float64)
    R0 = axis_angle_to_matrix((axis / axis.norm() * np.deg2rad(deg))[None])[0] @ R
    return R0, t + shift / shift.norm() * share * t.norm()


def _degrees(Ra: torch.Tensor, Rb: torch.Tensor) -> float:
    return float(np.rad2deg(rotation_angle(Ra[None], Rb[None]).item()))


def test_viewpoint_models_lie_on_the_silhouette_contour(scene):
    """Projected from their own view, the contour points sit on the rendered silhouette's
    edge and their normals point out of it."""
    import cv2

    from pose6d_ros.data.render import Instance, Lighting, Renderer, simplify_mesh
    from pose6d_ros.templates.viewpoints import look_at_rotations

    objs, models, _ = scene
    obj, model = objs[0], models[0]
    v = 17
    R = look_at_rotations(model.directions[v:v + 1].double().numpy())[0]
    t = np.array([0.0, 0.0, 0.6])
    renderer = Renderer(640, 480)
    try:
        renderer.add_mesh("o", simplify_mesh(obj.mesh, 4000))
        mask = renderer.render(K, [Instance("o", R, t)], Lighting(), amodal=False).instance == 0
    finally:
        renderer.release()
    edge = mask.astype(np.uint8) - cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8))
    dist = cv2.distanceTransform((edge == 0).astype(np.uint8), cv2.DIST_L2, 3)
    cam = model.points[v].double().numpy() @ R.T + t
    uv = cam @ K.T
    uv = uv[:, :2] / uv[:, 2:]
    px = np.round(uv).astype(int)
    assert np.median(dist[px[:, 1], px[:, 0]]) <= 1.5
    out = np.round(uv + 4 * (model.normals[v].double().numpy() @ R.T)[:, :2]).astype(int)
    assert (~mask[out[:, 1], out[:, 0]]).mean() > 0.9


@pytest.mark.parametrize("with_mask", [False, True])
def test_refinement_pulls_perturbed_poses_onto_the_object(scene, with_mask):
    """Starts 10 degrees and 4 % of the distance off come back within a few degrees and
    millimetres, batched per image over several starts (a start may fall into another
    basin: most, not all, must converge)."""
    objs, _, refiner = scene
    labels, R0s, t0s, truth, images, masks = [], [], [], [], [], []
    for i, obj in enumerate(objs):
        R = random_rotations(1, generator=torch.Generator().manual_seed(3 + i))[0].double()
        t = torch.tensor([0.03, -0.02, 0.6], dtype=torch.float64)
        rgb, _, mask = render_with_mask(obj, R.numpy(), t.numpy())
        images.append(torch.from_numpy(rgb).permute(2, 0, 1).float() / 255)
        masks.append(torch.from_numpy(mask).float())
        for seed in range(3):
            R0, t0 = _perturbed(R, t, 10.0, 0.04, seed)
            labels.append(i)
            R0s.append(R0)
            t0s.append(t0)
            truth.append((R, t))
    ends, moves = [], []
    for i in range(len(objs)):  # one image per object, its starts batched
        sel = [j for j, lab in enumerate(labels) if lab == i]
        kwargs = {}
        if with_mask:
            kwargs = {"masks": masks[i][None], "mask_index": torch.zeros(len(sel), dtype=int)}
        out = refiner(images[i], torch.from_numpy(K), torch.tensor([labels[j] for j in sel]),
                      torch.stack([R0s[j] for j in sel]), torch.stack([t0s[j] for j in sel]),
                      **kwargs)
        for k, j in enumerate(sel):
            R, t = truth[j]
            ends.append(_degrees(out.R[k], R))
            moves.append(float((out.t[k] - t).norm() / (t0s[j] - t).norm()))
    ends, moves = np.array(ends), np.array(moves)
    assert np.median(ends) < 2.0 and (ends < 4.0).mean() >= 0.8, ends
    assert np.median(moves) < 0.5, moves


def test_contour_score_prefers_the_true_pose(scene):
    """Unrefined scoring (no iterations): the true pose's contour agrees with the image far
    more than poses 15 degrees off."""
    from pose6d_ros.refine.region import RefineConfig

    objs, models, _ = scene
    judge = RegionRefiner(models, RefineConfig(scales=(1.0,), iterations=(0,)))
    obj = objs[1]
    R = random_rotations(1, generator=torch.Generator().manual_seed(5))[0].double()
    t = torch.tensor([0.0, 0.02, 0.7], dtype=torch.float64)
    rgb, _, _ = render_with_mask(obj, R.numpy(), t.numpy())
    image = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    wrong = [_perturbed(R, t, 15.0, 0.0, s) for s in range(3)]
    Rs = torch.stack([R] + [w[0] for w in wrong])
    ts = torch.stack([t] + [w[1] for w in wrong])
    score = judge(image, torch.from_numpy(K), torch.ones(4, dtype=torch.long), Rs, ts).contour
    assert score[0] > 0.6 and (score[0] > score[1:] + 0.2).all(), score


def test_estimator_refines_template_poses(objects, tmp_path):
    """With a coarse template bank (30 degree views), refinement brings the estimator's pose
    of a rendered object closer than the bank's spacing; without it the pose stays coarse."""
    import yaml

    obj = next(o for o in objects if o.name == "cat")
    path = tmp_path / "objects.yaml"
    path.write_text(yaml.safe_dump({"objects": [
        {"name": "cat", "id": obj.id, "mesh": str(obj.mesh_path), "mesh_units": "mm",
         "diameter": obj.diameter * 1000}]}))
    R = random_rotations(1, generator=torch.Generator().manual_seed(21))[0].double()
    t = np.array([0.02, 0.01, 0.65])
    rgb, box, _ = render_with_mask(obj, R.numpy(), t)
    boxes = Boxes(labels=torch.tensor([0]), boxes_xywh=box[None])
    errors = {}
    for refine in ("none", "contour"):
        est = Estimator(EstimatorConfig(objects=str(path), detector_weights=None,
                                        coordnet_weights=None, coarse="templates",
                                        templates=SMALL, viewpoints=VIEWS, refine=refine,
                                        templates_cache=str(tmp_path / "cache"), device="cpu"))
        pose = est.estimate(rgb, K, boxes)[0]
        errors[refine] = _degrees(torch.from_numpy(pose.R), R)
        assert np.linalg.norm(pose.t - t) < 0.1 * np.linalg.norm(t)
    assert errors["contour"] < 5.0 and errors["contour"] < errors["none"], errors


def test_bench_refine_reports_the_basin(capsys):
    """`pose6d bench refine` refines perturbed starts on renders and reports them closer."""
    import json

    from pose6d_ros.cli import main

    assert main(["bench", "refine", "--names", "driller", "--angles", "8", "--starts", "2",
                 "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["mask"] for r in rows] == [False, True]
    for r in rows:
        assert r["starts"] == 2 and r["median_re_deg"] < 4.0 and r["within_5deg"] >= 0.5


def test_bench_refine_track_follows_a_moving_render(capsys):
    """`pose6d bench refine --track`: the tracking schedule follows a slowly moving render
    frame to frame, and its confident agreement drops to nothing without the object, where
    the plain agreement of the full schedule does not."""
    import json

    from pose6d_ros.cli import main

    assert main(["bench", "refine", "--names", "driller", "--track", "6", "--frames", "3",
                 "--json"]) == 0
    full, track = json.loads(capsys.readouterr().out)
    assert (full["schedule"], track["schedule"]) == ("full", "6")
    assert (full["iterations"], track["iterations"], track["frames"]) == (15, 6, 2)
    assert track["median_re_deg"] < 4.0 and track["median_te_mm"] < 20.0
    assert track["median_score"] > 0.5 and track["empty_score"] < 0.1
    assert full["empty_score"] > 0.5


def test_tracking_schedule_is_the_fine_stages():
    from pose6d_ros.refine.region import TRACK_CONFIDENT_STD_PX, RefineConfig

    cfg = RefineConfig().tracking(7)
    assert cfg.scales == (2.0, 1.0) and cfg.iterations == (4, 3)
    assert cfg.confident_std_px == TRACK_CONFIDENT_STD_PX and RefineConfig().confident_std_px == 0
    assert RefineConfig().tracking(0).iterations == (0, 0)
    with pytest.raises(ValueError, match="refine_iterations"):
        RefineConfig().tracking(-1)
