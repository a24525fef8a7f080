"""Template banks and retrieval: self-retrieval, held-out views, symmetric objects, the cache
key, and poses for an object that has no CoordNet head."""

import shutil

import numpy as np
import pytest
import torch
import trimesh
import yaml

from pose6d_ros.cli import main
from pose6d_ros.core.objects import load_objects
from pose6d_ros.core.rotations import random_rotations, ray_rotation, rotation_angle
from pose6d_ros.core.symmetry import SymmetryPools
from pose6d_ros.pipeline import Boxes, Estimator, EstimatorConfig
from pose6d_ros.templates.bank import BankConfig, load_or_build_banks, template_rotations
from pose6d_ros.templates.retrieval import TemplateMatcher
from test.conftest import REPO

# A coarse bank keeps the tests fast: views 30 degrees apart, in-plane turns of 45 degrees.
SMALL = BankConfig(view_spacing_deg=30.0, inplane_step_deg=45.0, render_size=128)
K = np.array([[500.0, 0, 319.5], [0, 500.0, 239.5], [0, 0, 1]])


def render(obj, R: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, torch.Tensor]:
    """`obj` at pose R, t in a 640 x 480 image on a mid-grey background with noise, and its
    visible box `(4,)` x, y, w, h."""
    rgb, box, _ = render_with_mask(obj, R, t)
    return rgb, box


def render_with_mask(obj, R: np.ndarray, t: np.ndarray
                     ) -> tuple[np.ndarray, torch.Tensor, np.ndarray]:
    """`render`, plus the object's mask `(480, 640)` bool."""
    from pose6d_ros.eval.bench_refine import render_scene

    rgb, mask = render_scene(obj, R, t, 0, K=K, noise=(90, 150))
    ys, xs = np.nonzero(mask)
    box = torch.tensor([xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()],
                       dtype=torch.float32)
    return rgb, box, mask


@pytest.fixture(scope="module")
def lmo(objects):
    return {o.name: (i, o) for i, o in enumerate(objects)}


@pytest.fixture(scope="module")
def matcher(lmo, tmp_path_factory):
    """A small-bank matcher for the cat (asymmetric) and the glue (symmetric)."""
    objs = [lmo["cat"][1], lmo["glue"][1]]
    banks = load_or_build_banks(objs, SMALL, cache_dir=tmp_path_factory.mktemp("banks"))
    return TemplateMatcher(banks, SMALL, top_k=5), banks


def _retrieve(matcher, label, rgb, box):
    image = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    return matcher(image, torch.from_numpy(K), torch.tensor([label]), box[None])


def test_templates_retrieve_themselves(lmo, matcher):
    m, banks = matcher
    cat = lmo["cat"][1]
    bank = banks[0]
    t = np.array([0.04, -0.03, 0.6])
    for i in np.linspace(0, len(bank) - 1, 6).astype(int):
        R_allo = bank.rotations[i].double()
        R = (ray_rotation(torch.from_numpy(t)[None])[0] @ R_allo).numpy()
        rgb, box = render(cat, R, t)
        hyp = _retrieve(m, 0, rgb, box)
        assert int(hyp.template[0, 0]) == i
        # The ray through the object is taken from the box: a hair off the true one.
        assert rotation_angle(hyp.R[0, 0], torch.from_numpy(R)).item() < np.deg2rad(1.0)
        assert np.linalg.norm(hyp.t[0, 0].numpy() - t) < 0.05 * np.linalg.norm(t)


def test_held_out_views_retrieve_a_template_within_the_spacing(lmo, matcher):
    m, _ = matcher
    cat = lmo["cat"][1]
    t = np.array([-0.02, 0.03, 0.55])
    Rs = random_rotations(8, generator=torch.Generator().manual_seed(1)).double()
    errors = []
    for R in Rs:
        rgb, box = render(cat, R.numpy(), t)
        hyp = _retrieve(m, 0, rgb, box)
        errors.append(rotation_angle(hyp.R[0, 0], R).item())
    errors = np.rad2deg(errors)
    assert np.median(errors) < SMALL.view_spacing_deg, errors
    assert (errors < 2 * SMALL.view_spacing_deg).mean() >= 0.75, errors


def test_symmetric_objects_keep_one_template_per_equivalence_class(lmo, matcher):
    glue = lmo["glue"][1]
    _, asym = template_rotations(lmo["cat"][1], SMALL)
    _, sym = template_rotations(glue, SMALL)
    assert 0.4 * len(asym) < len(sym) < 0.6 * len(asym)  # one 2-fold symmetry: half
    pools = SymmetryPools([glue])
    Rt = torch.from_numpy(sym)
    Rc, _ = pools.canonicalise(torch.zeros(len(sym), dtype=torch.long), Rt,
                               torch.zeros(len(sym), 3, dtype=torch.float64))
    assert rotation_angle(Rc, Rt).max().item() < 1e-6  # no two templates are equivalent

    # Retrieval: the top k are k distinct poses of the glue, not one pose and its twin.
    m, _ = matcher
    t = np.array([0.0, 0.02, 0.5])
    R = random_rotations(1, generator=torch.Generator().manual_seed(4))[0].double()
    rgb, box = render(glue, R.numpy(), t)
    hyp = _retrieve(m, 1, rgb, box)
    Rk = hyp.R[0]
    canon, _ = pools.canonicalise(torch.zeros(len(Rk), dtype=torch.long), Rk,
                                  torch.zeros(len(Rk), 3, dtype=torch.float64))
    for a in range(len(Rk)):
        for b in range(a + 1, len(Rk)):
            assert rotation_angle(canon[a], canon[b]).item() > np.deg2rad(1.0)


def _object_yaml(tmp_path, mesh_path, name="mug", obj_id=99):
    path = tmp_path / "objects.yaml"
    path.write_text(yaml.safe_dump({"objects": [
        {"name": name, "id": obj_id, "mesh": str(mesh_path), "mesh_units": "mm",
         "diameter": 154.546}]}))
    return path


def test_cli_builds_once_and_a_changed_mesh_rebuilds(tmp_path, capsys):
    mesh = tmp_path / "mug.ply"
    shutil.copy(REPO / "models/lmo/obj_000006.ply", mesh)
    objects = _object_yaml(tmp_path, mesh)
    cache = tmp_path / "cache"
    args = ["templates", "build", "--objects", str(objects), "--out", str(cache),
            "--view-spacing", "60", "--inplane-step", "120", "--device", "cpu"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert "mug:" in first and "templates in" in first  # built
    assert main(args) == 0
    assert "templates in" not in capsys.readouterr().out  # cached
    m = trimesh.load(mesh, process=False)
    m.apply_scale(1.1)
    m.export(mesh)
    assert main(args) == 0
    assert "templates in" in capsys.readouterr().out  # rebuilt for the new mesh
    assert len(list(cache.glob("mug-*.pt"))) == 2
    assert main(["templates", "build", "--objects", str(tmp_path / "none.yaml")]) == 2


def test_an_object_without_coordnet_gets_template_poses(tmp_path):
    """A new object, known by its mesh alone: template poses with no CoordNet weights, and
    with a CoordNet trained before the object was added (no head for it)."""
    from pose6d_ros.nets.coordnet import CoordNet, CoordNetConfig, save_checkpoint

    mesh = tmp_path / "mug.ply"
    shutil.copy(REPO / "models/lmo/obj_000006.ply", mesh)
    path = tmp_path / "objects.yaml"  # the duck, then the new object
    path.write_text(yaml.safe_dump({"objects": [
        {"name": "duck", "id": 9, "mesh": str(REPO / "models/lmo/obj_000009.ply"),
         "mesh_units": "mm", "diameter": 108.999},
        {"name": "mug", "id": 99, "mesh": str(mesh), "mesh_units": "mm", "diameter": 154.546}]}))
    registry = load_objects(path)
    mug = registry[1]
    cache = tmp_path / "cache"
    assert main(["templates", "build", "--objects", str(path), "--out", str(cache),
                 "--view-spacing", "30", "--inplane-step", "45", "--device", "cpu"]) == 0

    t = np.array([0.03, 0.01, 0.6])
    R = random_rotations(1, generator=torch.Generator().manual_seed(7))[0].double().numpy()
    rgb, box = render(mug, R, t)
    boxes = Boxes(labels=torch.tensor([1]), boxes_xywh=box[None])

    torch.manual_seed(0)
    old = CoordNet(CoordNetConfig(1, encoder="small", input_size=32,
                                  decoder_width=8))  # trained for the duck alone
    save_checkpoint(tmp_path / "coordnet.pt", old)
    for coarse, weights in (("templates", None), ("both", str(tmp_path / "coordnet.pt"))):
        est = Estimator(EstimatorConfig(objects=str(path), detector_weights=None,
                                        coordnet_weights=weights, coarse=coarse,
                                        templates=SMALL, templates_cache=str(cache),
                                        device="cpu"))
        poses = est.estimate(rgb, K, boxes)
        assert len(poses) == 1 and poses[0].name == "mug", coarse
        p = poses[0]
        assert np.rad2deg(rotation_angle(torch.from_numpy(p.R), torch.from_numpy(R)).item()) < 45
        assert np.linalg.norm(p.t - t) < 0.1 * np.linalg.norm(t)
        assert p.inliers == 0 and 0 < p.score <= 1
    with pytest.raises(Exception, match="no CoordNet head for mug"):
        Estimator(EstimatorConfig(objects=str(path), detector_weights=None,
                                  coordnet_weights=str(tmp_path / "coordnet.pt"),
                                  coarse="coordnet", device="cpu"))


class _OneBoxDetector:
    """Stands in for a detector that knows the new object: its box and mask, full score."""

    def __init__(self, label: int, box: torch.Tensor, mask: np.ndarray) -> None:
        self.label, self.box, self.mask = label, box, torch.from_numpy(mask).float()
        self.score_threshold, self.max_instances = 0.5, 16

    def __call__(self, image):
        from pose6d_ros.nets.detector import Detections

        x, y, w, h = self.box.tolist()
        return Detections(labels=torch.tensor([self.label]), scores=torch.ones(1),
                          boxes=torch.tensor([[x, y, x + w, y + h]]), masks=self.mask[None])


def test_the_node_publishes_template_poses_of_an_object_without_coordnet(tmp_path):
    """The node's frame callback (no rclpy) with the real estimator, coarse 'templates' and
    no CoordNet weights: a new object's image message becomes a Detection3DArray and a TF
    frame with its pose, after `pose6d templates build`."""
    from pose6d_ros.ros import messages as msgs
    from pose6d_ros.ros.frame_processor import FrameOutputs, FrameProcessor
    from pose6d_ros.ros.parameters import settings_from_dict

    mesh = tmp_path / "mug.ply"
    shutil.copy(REPO / "models/lmo/obj_000006.ply", mesh)
    path = tmp_path / "objects.yaml"
    path.write_text(yaml.safe_dump({"objects": [
        {"name": "mug", "id": 99, "mesh": str(mesh), "mesh_units": "mm",
         "diameter": 154.546}]}))
    cache = tmp_path / "cache"
    assert main(["templates", "build", "--objects", str(path), "--out", str(cache),
                 "--view-spacing", "30", "--inplane-step", "45", "--device", "cpu"]) == 0
    mug = load_objects(path)[0]
    t = np.array([-0.02, 0.03, 0.55])
    R = random_rotations(1, generator=torch.Generator().manual_seed(11))[0].double().numpy()
    rgb, box, mask = render_with_mask(mug, R, t)
    est = Estimator(EstimatorConfig(objects=str(path), detector_weights=None,
                                    coordnet_weights=None, coarse="templates",
                                    templates=SMALL, templates_cache=str(cache),
                                    device="cpu"))
    est.detector = _OneBoxDetector(0, box, mask)
    settings = settings_from_dict({"objects": str(path), "coarse": "templates",
                                   "templates_cache": str(cache), "device": "cpu"})
    types = msgs.rosbags_types(msgs.rosbags_typestore("humble"))
    processor = FrameProcessor(types, settings, est.objects, estimator=est,
                               image_topic="/cam/image", info_topic="/cam/camera_info")
    hdr = types.Header(stamp=types.Time(sec=3, nanosec=0), frame_id="cam")
    image = types.Image(header=hdr, height=480, width=640, encoding="rgb8", step=3 * 640,
                        data=rgb.reshape(-1))
    info = types.CameraInfo(header=hdr, height=480, width=640, k=K.reshape(-1))
    out = processor.process(image, info)
    assert isinstance(out, FrameOutputs) and len(out.detections.detections) == 1
    det = out.detections.detections[0]
    assert det.results[0].hypothesis.class_id == "mug"
    p = det.results[0].pose.pose.position
    assert np.linalg.norm(np.array([p.x, p.y, p.z]) - t) < 0.1 * np.linalg.norm(t)
    assert [tf.child_frame_id for tf in out.tf.transforms] == ["mug_0"]


def test_spread_topk_skips_near_copies_and_fills_when_too_few_are_apart():
    from scipy.spatial.transform import Rotation

    from pose6d_ros.templates.retrieval import spread_topk

    angles = [0.0, 5.0, 10.0, 60.0, 120.0, 0.0]  # about z; the last is past the bank's end
    R = Rotation.from_euler("z", np.array(angles)[:, None], degrees=True).as_matrix()
    R = torch.from_numpy(R)
    sim = torch.tensor([[0.9, 0.8, 0.7, 0.6, 0.5, -torch.inf]])
    score, idx = spread_topk(sim, R[None].double(), 3, 20.0)
    assert idx.tolist() == [[0, 3, 4]]
    assert score[0].tolist() == pytest.approx([0.9, 0.6, 0.5])
    _, idx = spread_topk(sim, R[None].double(), 4, 20.0)
    assert idx.tolist() == [[0, 3, 4, 1]]  # then the most similar of the rest
    _, idx = spread_topk(sim.expand(2, -1), R[None].double().expand(2, -1, -1, -1), 2, 0.1)
    assert idx.tolist() == [[0, 1], [0, 1]]  # a tiny separation is plain top k
