"""`pose6d eval`: targets, figures, files."""

import json

import numpy as np
import torch

from pose6d_ros.cli import main
from pose6d_ros.data.bop import load_scene_gt_info, read_results_csv
from pose6d_ros.eval.evaluate import EvalReport, find_scenes
from pose6d_ros.nets.coordnet import CoordNet, CoordNetConfig, save_checkpoint


def test_eval_cli_writes_csv_json_and_plot(synth_dir, tmp_path, capsys):
    torch.manual_seed(0)
    weights = tmp_path / "w.pt"
    save_checkpoint(weights, CoordNet(CoordNetConfig(num_objects=8, encoder="small",
                                                     input_size=32, decoder_width=8)))
    out = tmp_path / "eval"
    assert main(["eval", "--data", str(synth_dir), "--split", "train", "--weights",
                 str(weights), "--out", str(out), "--device", "cpu", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    targets = sum(1 for scene in find_scenes(synth_dir, "train")
                  for infos in load_scene_gt_info(scene / "scene_gt_info.json").values()
                  for i in infos if i["visib_fract"] >= 0.1)
    assert figures["instances"] == targets
    assert set(figures) >= {"add_0.1d", "ar_mssd", "ar_mspd", "per_object", "failed"}
    assert (out / "recall_add.png").stat().st_size > 0
    rows = read_results_csv(out / "results_bop19.csv")
    assert len(rows) == targets - figures["failed"]


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
