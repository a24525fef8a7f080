"""`pose6d train detector`: tiny runs from scratch (checkpoints, validation, resume,
fixed-batch fit)."""


import pytest
import torch
import yaml

from pose6d_ros.cli import main
from pose6d_ros.nets.detector import Detector, load_detector, load_detector_checkpoint
from pose6d_ros.train.detector import DetectorTrainConfig, DetectorTrainer, collate
from pose6d_ros.train.logs import read_log
from test.conftest import REPO, torchrun_cli

TINY = ["--backbone", "mobilenet_v3_fpn", "--min-size", "160", "--max-size", "214",
        "--crop-size", "128", "--fpn-width", "32", "--rois-per-image", "64", "--batch-size", "2",
        "--workers", "0", "--device", "cpu", "--quiet"]


def test_train_checkpoint_resume_and_detect(synth_dir, tmp_path):
    run = tmp_path / "run"
    args = ["train", "detector", "--data", str(synth_dir), "--out", str(run), *TINY,
            "--checkpoint-every", "1", "--val-split", "train"]
    assert main([*args, "--max-steps", "2"]) == 0
    for name in ("last.pt", "detector.pt", "log.csv", "losses.png", "config.yaml", "val.csv",
                 "val.png"):
        assert (run / name).stat().st_size > 0, name
    # Validated at each checkpoint (once at the last step), on whole images.
    val = read_log(run / "val.csv")
    assert val["step"] == [1.0, 2.0] and val["images"] == [6.0, 6.0]
    assert all(0 <= v <= 1 for k in ("ap50", "recall", "precision") for v in val[k])
    log = read_log(run / "log.csv")
    assert log["step"][-1] == 2.0
    for term in ("loss", "loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness",
                 "loss_rpn_box_reg"):
        assert all(v == v and v >= 0 for v in log[term]), term
    last = load_detector_checkpoint(run / "last.pt")
    assert last["step"] == 2 and {"optimizer", "scheduler"} <= set(last)
    assert yaml.safe_load((run / "config.yaml").read_text())["min_size"] == 160

    # Resume: the counters continue, the log keeps its rows.
    assert main([*args, "--max-steps", "3", "--resume"]) == 0
    assert load_detector_checkpoint(run / "last.pt")["step"] == 3
    assert read_log(run / "log.csv")["step"][-2:] == [2.0, 3.0]
    assert read_log(run / "val.csv")["step"] == [1.0, 2.0, 3.0]

    # The final weights: 8 objects of the bundled registry, usable by the Detector.
    model, cfg = load_detector(run / "detector.pt")
    assert cfg.num_classes == 8 and cfg.min_size == 160 and cfg.min_stride == 8
    image = torch.rand(3, 240, 320)
    dets = Detector(model, device="cpu", score_threshold=0.0)(image)
    assert dets.masks.shape[1:] == (240, 320)
    assert ((dets.labels >= 0) & (dets.labels < 8)).all()


def test_config_file_errors_are_one_line(synth_dir, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: 0.001\nhorizontal_flip: true\n")
    args = ["train", "detector", "--data", str(synth_dir), "--out", str(tmp_path / "r"),
            "--config", str(bad), "--quiet"]
    assert main(args) == 2
    assert "unknown setting(s) ['horizontal_flip']" in capsys.readouterr().err
    bad.write_text("optimizer: lbfgs\n")
    assert main(args) == 2
    assert "optimizer" in capsys.readouterr().err


@pytest.mark.slow
def test_training_reduces_the_loss_on_a_fixed_batch(synth_dir, tmp_path):
    torch.manual_seed(0)
    cfg = DetectorTrainConfig(data=str(synth_dir), objects=str(REPO / "config" / "objects.yaml"),
                              out=str(tmp_path), min_size=128, max_size=171, batch_size=2,
                              rois_per_image=64, workers=0, device="cpu", lr=1e-3)
    trainer = DetectorTrainer(cfg, progress=False)
    batch = collate([trainer.dataset[i] for i in (0, 4)])
    assert all(len(t["labels"]) > 0 for t in batch[1])
    trainer.net.train()
    losses = []
    for _ in range(15):
        terms = trainer.losses(batch)
        trainer.opt.zero_grad()
        terms["loss"].backward()
        torch.nn.utils.clip_grad_norm_(trainer.net.parameters(), cfg.clip_grad)
        trainer.opt.step()
        losses.append(float(terms["loss"].detach()))
    # From scratch the first steps can spike; the first loss is the reference.
    assert sum(losses[-5:]) / 5 < 0.5 * losses[0], losses


@pytest.mark.slow
def test_two_processes_with_torchrun_gloo(synth_dir, tmp_path):
    run = tmp_path / "ddp"
    done = torchrun_cli("train", "detector", "--data", str(synth_dir), "--out", str(run),
                        *TINY, "--batch-size", "1", "--max-steps", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    assert load_detector_checkpoint(run / "last.pt")["step"] == 2
    assert load_detector(run / "detector.pt")[1].num_classes == 8


def test_data_flag_takes_several_folders(tmp_path):
    from pose6d_ros.cli import _train_config, build_parser

    def config(*data):
        args = build_parser().parse_args(["train", "detector", "--data", *data,
                                          "--out", str(tmp_path)])
        return _train_config(args, DetectorTrainConfig, "detector")

    assert config("a").data == "a"
    cfg = config("a", "b")
    assert cfg.data == ["a", "b"]
    trainer = DetectorTrainer.__new__(DetectorTrainer)
    trainer.cfg = cfg
    assert trainer.validation_root() is None  # a/val does not exist: no validation
