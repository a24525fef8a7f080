"""Widening a detector to more classes keeps what it gives for the old ones."""

import copy
from dataclasses import replace

import pytest
import torch

from pose6d_ros.nets.detector import DetectorConfig, build_detector, run_detector, widen_detector


def test_widened_detector_gives_the_same_for_the_old_classes():
    torch.manual_seed(0)
    cfg = DetectorConfig(num_classes=2, min_size=64, max_size=80, box_head_width=32,
                         mask_head_width=16, box_score_thresh=0.0)
    old = build_detector(cfg).eval()
    wide = copy.deepcopy(old)
    assert widen_detector(wide, cfg, 5) == replace(cfg, num_classes=5)
    heads, wide_heads = old.roi_heads, wide.roi_heads
    seen = {}  # the old predictors' inputs and outputs in a whole forward

    def keep(name):
        return lambda _, args, out: seen.__setitem__(name, (args[0], out))

    heads.box_predictor.register_forward_hook(keep("box"))
    heads.mask_predictor.register_forward_hook(keep("mask"))
    image = torch.rand(3, 64, 80, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        run_detector(old, [image])
        features, (scores, deltas) = seen["box"]
        wide_scores, wide_deltas = wide_heads.box_predictor(features)
        mask_features, masks = seen["mask"]
        wide_masks = wide_heads.mask_predictor(mask_features)
        out = run_detector(wide, [image])[0]
    assert wide_scores.shape[1] == 6 and wide_deltas.shape[1] == 24 and wide_masks.shape[1] == 6
    assert masks.shape[0] > 0  # some detections reached the mask head
    torch.testing.assert_close(wide_scores[:, :3], scores)
    torch.testing.assert_close(wide_deltas[:, :12], deltas)
    torch.testing.assert_close(wide_masks[:, :3], masks)
    assert ((out["labels"] >= 1) & (out["labels"] <= 5)).all()
    with pytest.raises(ValueError, match="num_classes"):
        widen_detector(wide, replace(cfg, num_classes=5), 5)
