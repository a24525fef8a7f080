"""`pose6d eval`: targets, figures, files."""

import json

import numpy as np
import pytest
import torch

from pose6d_ros.cli import main
from pose6d_ros.data.bop import load_scene_gt, load_scene_gt_info, read_results_csv
from pose6d_ros.eval.evaluate import EvalReport, evaluate, find_scenes
from pose6d_ros.eval.instances import read_instances_csv
from pose6d_ros.nets.coordnet import CoordNet, CoordNetConfig, save_checkpoint
from pose6d_ros.nets.detector import Detections
from pose6d_ros.pipeline import ObjectPose


def test_eval_cli_writes_csv_json_and_plot(synth_dir, tmp_path, capsys):
    torch.manual_seed(0)
    weights = tmp_path / "w.pt"
    save_checkpoint(weights, CoordNet(CoordNetConfig(num_objects=8, encoder="small",
                                                     input_size=32, decoder_width=8)))
    out = tmp_path / "eval"
    # (the box-consistency checks off: they drop most of an untrained network's poses)
    assert main(["eval", "--data", str(synth_dir), "--split", "train", "--weights",
                 str(weights), "--out", str(out), "--device", "cpu", "--json",
                 "--max-size-mismatch", "0", "--max-centre-offset", "0"]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    targets = sum(1 for scene in find_scenes(synth_dir, "train")
                  for infos in load_scene_gt_info(scene / "scene_gt_info.json").values()
                  for i in infos if i["visib_fract"] >= 0.1)
    assert figures["instances"] == targets
    assert set(figures) >= {"add_0.1d", "ar_mssd", "ar_mspd", "per_object", "failed"}
    assert (out / "recall_add.png").stat().st_size > 0
    rows = read_results_csv(out / "results_bop19.csv")
    assert len(rows) == targets - figures["failed"]
    # instances.csv: one row per target, whose column means are the figures
    inst = read_instances_csv(out)
    assert len(inst) == targets and len({tuple(k) for k in inst.keys.tolist()}) == targets
    assert (inst.errors["add_rel"] < 0.1).mean() == figures["add_0.1d"]
    assert abs(inst.errors["ar_mssd"].mean() - figures["ar_mssd"]) < 1e-6
    assert abs(inst.errors["ar_mspd"].mean() - figures["ar_mspd"]) < 1e-6
    assert inst.found.any()
    assert np.median(inst.errors["re_deg"][inst.found]) == pytest.approx(
        figures["median_re_deg"], 1e-4)


def test_eval_cli_errors(tmp_path, capsys):
    assert main(["eval", "--data", str(tmp_path), "--weights", str(tmp_path / "none.pt")]) == 2
    assert "none.pt" in capsys.readouterr().err
    assert main(["eval", "--data", str(tmp_path), "--weights", "x.pt", "--boxes",
                 "detector", "--detector", str(tmp_path / "det.pt")]) == 2
    assert "det.pt: no such weights file" in capsys.readouterr().err


def test_summary_of_perfect_and_failed_estimates(objects):
    diam = np.array([o.diameter for o in objects])
    rep = EvalReport(objects=[o.name for o in objects], labels=[0, 0, 1],
                     add=[0.0, 0.0, np.inf], mssd=[0.0, 0.0, np.inf], mspd=[0.0, 0.0, np.inf],
                     re=[0.0, 0.0, np.inf], te=[0.0, 0.0, np.inf], ok=[True, True, False])
    s = rep.summary(diam)
    assert s["add_0.1d"] == 2 / 3 and s["failed"] == 1
    assert s["per_object"]["ape"]["add_0.1d"] == 1.0 and s["per_object"]["can"]["failed"] == 1
    assert abs(s["ar_mssd"] - 2 / 3) < 1e-9 and abs(s["ar_mspd"] - 2 / 3) < 1e-9


def test_find_scenes_accepts_dataset_split_and_scene_folders(synth_dir):
    scene = synth_dir / "train" / "000000"
    assert find_scenes(scene) == [scene]
    assert find_scenes(synth_dir, "train") == [scene, synth_dir / "train" / "000001"]
    assert find_scenes(synth_dir / "train") == find_scenes(synth_dir, "train")


class _DetectorStub:
    """An estimator whose detector finds every target with its exact visible box, plus one
    false ape box per image, and whose poses are the ground truth."""

    def __init__(self, objects, scene):
        self.objects = objects
        self.gts = load_scene_gt(scene / "scene_gt.json")
        self.infos = load_scene_gt_info(scene / "scene_gt_info.json")
        self.last_detections = None
        self.calls = 0

    def estimate(self, rgb, K, boxes=None, depth=None):
        assert boxes is None
        im_id = sorted(self.gts)[self.calls]
        self.calls += 1
        found = [(g, i) for g, i in zip(self.gts[im_id], self.infos[im_id], strict=True)
                 if i["visib_fract"] >= 0.1 and i["bbox_visib"][2] > 0]
        xywh = torch.tensor([i["bbox_visib"] for _, i in found], dtype=torch.float32)
        labels = torch.tensor([self.objects.index_of_id(g.obj_id) for g, _ in found])
        xyxy = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
        self.last_detections = Detections(
            labels=torch.cat([labels, torch.tensor([0])]),
            scores=torch.linspace(0.9, 0.6, len(found) + 1),
            boxes=torch.cat([xyxy, torch.tensor([[0.0, 0.0, 5.0, 5.0]])]),
            masks=torch.zeros(len(found) + 1, *rgb.shape[:2]))
        return [ObjectPose(name=self.objects[int(lab)].name, label=int(lab),
                           object_id=g.obj_id, instance=0, score=0.9, R=g.R, t=g.t,
                           inliers=100, box=tuple(i["bbox_visib"]))
                for (g, i), lab in zip(found, labels, strict=True)]


def test_eval_with_detector_reports_its_boxes(synth_dir, objects):
    scene = synth_dir / "train" / "000000"
    stub = _DetectorStub(objects, scene)
    report = evaluate(scene, stub, boxes="detector", progress=False)
    figures = report.summary(np.array([o.diameter for o in objects]))
    det = figures["detection"]
    assert det["targets"] == figures["instances"] > 0
    assert det["recall"] == 1.0 and det["ap50"] == 1.0
    images = len(stub.gts)
    assert det["precision"] == figures["instances"] / (figures["instances"] + images)
    assert figures["add_0.1d"] == 1.0
    # With ground-truth boxes there is no detector to report on.
    assert EvalReport(objects=report.objects).summary(np.ones(8))["detection"] is None


def test_score_calibration_counts_correct_poses_per_score_bin():
    """Found poses fall into tenths by score; each bin says how many and how many correct;
    poses not found are left out."""
    from pose6d_ros.eval.evaluate import score_calibration

    scores = np.array([0.05, 0.07, 0.55, 0.95, 1.0, 0.5])
    correct = np.array([False, True, True, True, True, True])
    found = np.array([True, True, True, True, True, False])
    cal = score_calibration(scores, correct, found)
    assert cal["count"] == [2, 0, 0, 0, 0, 1, 0, 0, 0, 2]
    rate = cal["correct_rate"]
    assert rate[0] == 0.5 and rate[5] == 1.0 and rate[9] == 1.0 and np.isnan(rate[1])
