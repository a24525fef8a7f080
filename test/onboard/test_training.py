"""`pose6d onboard --train`: the data / calibration / training plan, tiny, and its resume."""

import json

import pytest

from pose6d_ros.core.objects import load_objects, upsert_object_entry
from pose6d_ros.core.paths import default_objects_yaml, default_weights
from pose6d_ros.data.scenes import SynthConfig
from pose6d_ros.nets.detector import load_detector, load_detector_checkpoint
from pose6d_ros.nets.pretrained import default_pretrained_path
from pose6d_ros.onboard import training
from pose6d_ros.onboard.run import OnboardOptions
from test.onboard.test_onboard import _coloured_box

TINY_SYNTH = SynthConfig(width=160, height=120,
                         K=((143.1, 0, 81.3), (0, 143.4, 60.5), (0, 0, 1)), images_per_scene=2,
                         objects_per_scene=(1, 2), distractors_per_scene=(0, 1), max_faces=500)
TINY_TRAIN = {"min_size": 120, "max_size": 160, "crop_size": 96, "fpn_width": 16,
              "mask_head_width": 16, "box_head_width": 32, "rois_per_image": 32,
              "batch_size": 2}


def _box_yaml(tmp_path, *, bundled: bool):
    tmp_path.mkdir(exist_ok=True)
    mesh = tmp_path / "block.ply"
    _coloured_box((60.0, 40.0, 30.0)).export(mesh)
    objects = tmp_path / "objects.yaml"
    if bundled:
        objects.write_text(default_objects_yaml().read_text().replace("../models/", str(
            default_objects_yaml().parents[1] / "models") + "/"))
    upsert_object_entry(objects, {"name": "block", "mesh": str(mesh), "mesh_units": "mm"})
    return objects


def test_fine_tunes_the_shipped_detector_only_after_the_bundled_objects(tmp_path):
    if not default_weights("detector").is_file():
        pytest.skip("no shipped detector")
    after = training.object_keys(load_objects(_box_yaml(tmp_path / "a", bundled=True)))
    assert training.shipped_detector_for(after) == default_weights("detector")
    alone = training.object_keys(load_objects(_box_yaml(tmp_path / "b", bundled=False)))
    assert training.shipped_detector_for(alone) is None
    assert training.shipped_detector_for(after[1:]) is None  # not in order


def test_train_object_plans_trains_and_resumes(tmp_path, monkeypatch):
    if not default_pretrained_path().is_file():
        pytest.skip(f"{default_pretrained_path()}: not there (run scripts/setup.sh)")
    monkeypatch.setattr(training, "CALIBRATION_STEPS", 3)
    monkeypatch.setattr(training, "CHECKPOINTS", 1)  # each validates and draws plots
    objects = _box_yaml(tmp_path, bundled=False)
    work = tmp_path / "work"
    opts = OnboardOptions(mesh=tmp_path / "block.ply", name="block", objects=objects, work=work,
                          train="cpu", budget_s=0.1, progress=False)
    lines: list[str] = []
    weights = training.train_object(objects, opts, lines.append, synth=TINY_SYNTH,
                                    train=TINY_TRAIN)
    plan = json.loads((work / training.PLAN).read_text())
    assert plan["scenes"] == training.MIN_SCENES and plan["max_steps"] == training.MIN_STEPS
    assert plan["init"] is None and plan["step_s"] > 0
    _, cfg = load_detector(weights["detector"])
    assert cfg.num_classes == 1 and cfg.fpn_width == 16
    assert load_detector_checkpoint(work / "runs" / "detector" / "last.pt")["step"] == 2
    assert any(ln.startswith("calibration:") for ln in lines)

    # A longer plan (as after an interruption) with a time limit that ends the first step:
    # the same run goes on and stops at once, saving as at its end; nothing is re-planned.
    run = work / "runs" / "detector"
    plan.update(max_steps=4, time_limit_s=1e-3)
    (work / training.PLAN).write_text(json.dumps(plan))
    lines.clear()
    assert training.train_object(objects, opts, lines.append) == weights
    assert load_detector_checkpoint(run / "last.pt")["step"] == 3
    assert load_detector_checkpoint(run / "detector.pt")["step"] == 3
    assert not any(ln.startswith("calibration:") for ln in lines)
    assert any("resumed at step 2" in ln for ln in lines)
    assert any("time limit reached at step 3 of 4" in ln for ln in lines)
    plan["max_steps"] = 3
    (work / training.PLAN).write_text(json.dumps(plan))
    lines.clear()
    training.train_object(objects, opts, lines.append)
    assert any("trained before" in ln for ln in lines)


def test_gpu_training_without_cuda_says_to_use_the_cpu(monkeypatch):
    monkeypatch.setattr(training.torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"--train gpu.*use --train cpu"):
        training.training_device("gpu")
    assert training.training_device("cpu") == "cpu"
