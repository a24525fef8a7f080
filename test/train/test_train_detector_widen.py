"""`train detector --init-weights` with fewer classes than objects: the detector widens."""

from dataclasses import replace

import pytest

from pose6d_ros.nets.detector import DetectorConfig, build_detector, save_detector
from pose6d_ros.train.detector import DetectorTrainConfig, DetectorTrainer
from test.conftest import REPO


def test_init_weights_with_fewer_classes_widens_more_is_an_error(synth_dir, tmp_path):
    net = DetectorConfig(num_classes=5, min_size=128, max_size=160, box_head_width=32,
                         mask_head_width=16)
    save_detector(tmp_path / "five.pt", build_detector(net), net)
    cfg = DetectorTrainConfig(data=str(synth_dir), objects=str(REPO / "config" / "objects.yaml"),
                              out=str(tmp_path / "run"), init_weights=str(tmp_path / "five.pt"),
                              batch_size=2, workers=0, device="cpu", val_split="")
    lines: list[str] = []
    trainer = DetectorTrainer(cfg, progress=False, log=lines.append)
    assert trainer.net_config == replace(net, num_classes=8)
    assert trainer.net.roi_heads.box_predictor.cls_score.out_features == 9
    assert len(lines) == 1 and "5 classes widened to 8" in lines[0]

    net = replace(net, num_classes=9)
    save_detector(tmp_path / "nine.pt", build_detector(net), net)
    with pytest.raises(ValueError, match=r"nine\.pt: 9 classes"):
        DetectorTrainer(replace(cfg, init_weights=str(tmp_path / "nine.pt")), progress=False)
