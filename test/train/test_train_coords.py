"""`pose6d train coords`: tiny end-to-end runs (BPnP loss, checkpoints, resume, torchrun)."""


import pytest
import torch

from pose6d_ros.cli import main
from pose6d_ros.nets.coordnet import load_checkpoint, load_coordnet
from pose6d_ros.nets.pretrained import default_pretrained_path, load_pretrained_state
from pose6d_ros.train.common import warmup_cosine
from pose6d_ros.train.coords import CoordTrainConfig, CoordTrainer
from pose6d_ros.train.logs import read_log
from test.conftest import REPO, torchrun_cli
from test.nets.test_pretrained import _needs

TINY_NET = ["--encoder", "small", "--input-size", "32", "--decoder-width", "8",
            "--batch-size", "4", "--workers", "0", "--device", "cpu", "--quiet"]


def test_train_with_bpnp_checkpoint_and_resume(synth_dir, tmp_path):
    run = tmp_path / "run"
    args = ["train", "coords", "--data", str(synth_dir), "--out", str(run), *TINY_NET,
            "--proj-warmup-steps", "2", "--checkpoint-every", "2"]
    # --stop-after ends the run at step 4 of a 6-step learning-rate schedule.
    assert main([*args, "--max-steps", "6", "--stop-after", "4"]) == 0
    log = read_log(run / "log.csv")
    assert log["step"] == [4.0] or log["step"][-1] == 4.0
    assert (run / "losses.png").stat().st_size > 0
    last = load_checkpoint(run / "last.pt")
    assert last["step"] == 4 and "optimizer" in last
    lr = CoordTrainConfig(data="", objects="", out="").lr
    assert last["optimizer"]["param_groups"][0]["lr"] == pytest.approx(
        lr * warmup_cosine(4, 6))
    net = load_coordnet(run / "coordnet.pt")
    assert net.config.input_size == 32

    # Resume: the counters continue, the log keeps its rows.
    assert main([*args, "--max-steps", "6", "--resume"]) == 0
    assert load_checkpoint(run / "last.pt")["step"] == 6
    log = read_log(run / "log.csv")
    assert log["step"][-1] == 6.0
    proj = [p for s, p in zip(log["step"], log["proj"], strict=True) if s > 2]
    assert proj and all(p == p and p >= 0 for p in proj)  # BPnP loss on after warm-up

    # The whole chain: synth -> train with BPnP -> eval of the trained weights.
    assert main(["eval", "--data", str(synth_dir), "--split", "train", "--weights",
                 str(run / "coordnet.pt"), "--out", str(tmp_path / "eval"), "--device", "cpu",
                 "--max-images", "2", "--json"]) == 0
    assert (tmp_path / "eval" / "figures.json").exists()


def test_training_reduces_the_loss_on_a_fixed_batch(synth_dir, tmp_path):
    torch.manual_seed(0)
    cfg = CoordTrainConfig(data=str(synth_dir), objects=str(REPO / "config" / "objects.yaml"),
                           out=str(tmp_path), encoder="small", input_size=32, decoder_width=16,
                           batch_size=8, workers=0, device="cpu", lr=3e-3,
                           proj_warmup_steps=10**9)
    trainer = CoordTrainer(cfg, progress=False)
    batch = next(iter(torch.utils.data.DataLoader(trainer.dataset, batch_size=8)))
    first = None
    for _ in range(40):
        terms = trainer.losses(batch)
        trainer.opt.zero_grad()
        terms["loss"].backward()
        trainer.opt.step()
        first = first if first is not None else float(terms["xyz"].detach())
    assert float(terms["xyz"].detach()) < 0.7 * first


def test_bpnp_loss_sends_gradients_to_the_network(synth_dir, tmp_path):
    cfg = CoordTrainConfig(data=str(synth_dir), objects=str(REPO / "config" / "objects.yaml"),
                           out=str(tmp_path), encoder="small", input_size=32, decoder_width=8,
                           batch_size=4, workers=0, device="cpu", proj_warmup_steps=0,
                           lambda_error=0, lambda_mask=0)
    trainer = CoordTrainer(cfg, progress=False)
    batch = next(iter(torch.utils.data.DataLoader(trainer.dataset, batch_size=4)))
    terms = trainer.losses(batch)
    assert float(terms["proj_ok"]) > 0
    trainer.opt.zero_grad()
    terms["proj"].backward()
    grads = [p.grad for p in trainer.net.parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0


@pytest.mark.slow
def test_two_processes_with_torchrun_gloo(synth_dir, tmp_path):
    run = tmp_path / "ddp"
    done = torchrun_cli("train", "coords", "--data", str(synth_dir), "--out", str(run),
                        *TINY_NET, "--max-steps", "2", "--proj-warmup-steps", "1")
    assert done.returncode == 0, done.stderr[-3000:]
    assert load_checkpoint(run / "last.pt")["step"] == 2
    assert load_coordnet(run / "coordnet.pt").config.num_objects == 8


def test_validation_at_every_checkpoint(synth_dir, tmp_path, capsys):
    """val.csv gets the coordinate error next to the predict-zero reference and the mask
    IoU at every checkpoint; a validation split named explicitly must exist."""
    run = tmp_path / "val"
    args = ["train", "coords", "--data", str(synth_dir), "--out", str(run), *TINY_NET,
            "--lambda-proj", "0", "--checkpoint-every", "2", "--max-steps", "4",
            "--val-data", str(synth_dir), "--val-split", "train", "--val-crops", "6"]
    assert main(args) == 0
    val = read_log(run / "val.csv")
    assert val["step"] == [2.0, 4.0]  # two checkpoints, the second at the end of the run
    assert all(c == 6 for c in val["crops"])
    assert all(0 < e < 2 and 0 < z < 2 for e, z in zip(val["xyz"], val["xyz_zero"],
                                                      strict=True))
    assert all(0 <= iou <= 1 for iou in val["mask_iou"])
    assert (run / "val.png").stat().st_size > 0
    bad = [*args[:-4], "--val-split", "nowhere", "--out", str(tmp_path / "bad")]
    assert main(bad) == 2
    assert "nowhere: no validation split" in capsys.readouterr().err


def test_mobilenet_v2_encoder_trains_from_imagenet_and_reloads(synth_dir, tmp_path,
                                                                monkeypatch, capsys):
    """Two tiny steps from the ImageNet weights with the first blocks frozen; the weights
    reload as a mobilenet_v2 CoordNet; resuming needs no pretrained file, a fresh run does."""
    path = _needs(default_pretrained_path())
    imagenet = load_pretrained_state(path)
    run = tmp_path / "mnv2"
    args = ["train", "coords", "--data", str(synth_dir), "--out", str(run), *TINY_NET,
            "--encoder", "mobilenet_v2", "--frozen-blocks", "4", "--proj-warmup-steps", "1",
            "--val-split", "", "--checkpoint-every", "2"]
    assert main([*args, "--max-steps", "2"]) == 0
    net = load_coordnet(run / "coordnet.pt")
    assert net.config.encoder == "mobilenet_v2"
    feats = net.encoder.features
    assert torch.equal(feats[3].conv[0][0].weight, imagenet["3.conv.0.0.weight"])  # frozen
    assert not torch.equal(feats[13].conv[0][0].weight, imagenet["13.conv.0.0.weight"])
    assert load_checkpoint(run / "last.pt")["config"]["encoder"] == "mobilenet_v2"
    monkeypatch.setattr("pose6d_ros.nets.pretrained.default_pretrained_path",
                        lambda: tmp_path / "none.pt")
    assert main([*args, "--max-steps", "3", "--resume"]) == 0
    assert load_checkpoint(run / "last.pt")["step"] == 3
    assert main([*args, "--max-steps", "2", "--out", str(tmp_path / "fresh")]) == 2
    assert "none.pt: no pretrained MobileNetV2" in capsys.readouterr().err
