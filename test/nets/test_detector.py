"""Mask R-CNN detector: architecture from scratch, Detections, checkpoints and their errors."""

import re

import pytest
import torch
import torchvision
from torchvision.ops.misc import FrozenBatchNorm2d

from pose6d_ros.nets.coordnet import (
    CoordNet,
    CoordNetConfig,
    WeightsError,
    load_coordnet,
    save_checkpoint,
)
from pose6d_ros.nets.detector import (
    Detections,
    Detector,
    DetectorConfig,
    build_detector,
    load_detector,
    run_detector,
    save_detector,
)

SMALL = dict(min_size=128, max_size=160)


def _image(seed: int = 0, h: int = 96, w: int = 128) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(3, h, w, generator=g)


def _calibrated(model: torch.nn.Module) -> torch.nn.Module:
    """Random weights with BatchNorm statistics of random images: untrained BatchNorm
    (mean 0, variance 1) makes every proposal look the same, with tied scores."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # a plain average over the calibration batch
    model.train()
    with torch.no_grad():
        model.backbone(torch.rand(4, 3, 128, 160, generator=torch.Generator().manual_seed(9)))
    return model.eval()


@pytest.fixture(scope="module")
def mobilenet():
    torch.manual_seed(0)
    cfg = DetectorConfig(num_classes=4, box_score_thresh=0.0, **SMALL)
    return _calibrated(build_detector(cfg)), cfg


@pytest.mark.parametrize("backbone", ["mobilenet_v3_fpn", "resnet50_fpn"])
def test_from_scratch_models_train_every_layer_and_detect(backbone):
    torch.manual_seed(0)
    model = build_detector(DetectorConfig(num_classes=3, backbone=backbone, **SMALL))
    # From scratch, frozen BatchNorm statistics (meant for pretrained weights) would never
    # adapt; every parameter must learn.
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in model.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.backbone.modules())
    assert all(p.requires_grad for p in model.parameters())
    assert model.roi_heads.box_predictor.cls_score.out_features == 4  # 3 objects + background

    det = Detector(model, device="cpu", score_threshold=0.0, max_instances=8)
    out = det(_image())
    assert isinstance(out, Detections)
    n = len(out)
    assert 0 < n <= 8
    assert out.labels.dtype == torch.int64 and out.labels.shape == (n,)
    assert ((out.labels >= 0) & (out.labels < 3)).all()
    assert out.boxes.shape == (n, 4) and out.scores.shape == (n,)
    assert out.masks.shape == (n, 96, 128)
    assert ((out.masks >= 0) & (out.masks <= 1)).all()
    assert (out.boxes[:, 2:] >= out.boxes[:, :2]).all()
    assert (out.boxes[:, 2] <= 128).all() and (out.boxes[:, 3] <= 96).all()
    assert (out.scores[:-1] >= out.scores[1:]).all()


def test_threshold_and_instance_limit_apply_at_each_call(mobilenet):
    model, _ = mobilenet
    det = Detector(model, device="cpu", score_threshold=0.0, max_instances=32)
    heads = model.roi_heads
    before = heads.score_thresh, heads.detections_per_img
    image = _image(1)
    every = det(image)
    assert len(every) >= 3
    assert (heads.score_thresh, heads.detections_per_img) == before  # model left as it was

    det.max_instances = 2
    top = det(image)
    assert len(top) == 2
    torch.testing.assert_close(top.scores, every.scores[:2])
    torch.testing.assert_close(top.boxes, every.boxes[:2])

    det.max_instances = 32
    det.score_threshold = float(every.scores[2])
    kept = det(image)
    expected = int((every.scores > det.score_threshold).sum())
    assert 0 < expected < len(every)
    assert len(kept) == expected and (kept.scores > det.score_threshold).all()
    torch.testing.assert_close(kept.boxes, every.boxes[:expected])
    det.score_threshold = float(every.scores[0]) + 1e-3
    none = det(image)
    assert len(none) == 0 and none.masks.shape == (0, 96, 128)


def test_a_batch_gives_the_same_as_single_images(mobilenet):
    model, _ = mobilenet
    det = Detector(model, device="cpu", score_threshold=0.0, max_instances=5)
    images = [_image(2), _image(3, 80, 120)]
    batch = det(images)
    assert isinstance(batch, list) and len(batch) == 2
    for image, b in zip(images, batch, strict=True):
        one = det(image)
        assert b.masks.shape[1:] == image.shape[1:]
        # Batching pads the images to one size, and threads reorder sums: 0.02 px seen.
        torch.testing.assert_close(b.boxes, one.boxes, atol=0.1, rtol=1e-3)
        torch.testing.assert_close(b.labels, one.labels)


def test_save_load_round_trip_gives_identical_detections(mobilenet, tmp_path):
    model, cfg = mobilenet
    path = tmp_path / "detector.pt"
    save_detector(path, model, cfg, step=7)
    loaded, cfg2 = load_detector(path)
    assert cfg2 == cfg and not loaded.training
    image = _image(4)
    a = Detector(model, device="cpu", score_threshold=0.0)(image)
    b = Detector.load(path, score_threshold=0.0)(image)
    assert len(a) > 0
    for name in ("labels", "scores", "boxes", "masks"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=0, atol=0)


def test_bad_weight_files_raise_weights_error_naming_the_file(mobilenet, tmp_path):
    model, cfg = mobilenet
    missing = tmp_path / "nowhere.pt"
    with pytest.raises(WeightsError, match=re.escape(f"{missing}: no such weights file")):
        load_detector(missing)

    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a zip file at all" * 10)
    with pytest.raises(WeightsError, match=re.escape(f"{corrupt}: cannot load weights")):
        load_detector(corrupt)

    coord = tmp_path / "coordnet.pt"
    save_checkpoint(coord, CoordNet(CoordNetConfig(num_objects=2, encoder="small",
                                                   input_size=32, decoder_width=8)))
    with pytest.raises(WeightsError, match=r"coordnet\.pt: not a detector checkpoint"):
        load_detector(coord)

    det = tmp_path / "detector.pt"
    save_detector(det, model, cfg)
    with pytest.raises(WeightsError, match=r"detector\.pt: not a CoordNet checkpoint"):
        load_coordnet(det)

    # Weights of a 4-object detector under a config claiming 6 objects.
    ckpt = torch.load(det, weights_only=True)
    ckpt["config"]["num_classes"] = 6
    mismatch = tmp_path / "mismatch.pt"
    torch.save(ckpt, mismatch)
    with pytest.raises(WeightsError, match=r"mismatch\.pt: weights do not fit"):
        load_detector(mismatch)


def test_backbone_initialised_from_a_local_torchvision_file(tmp_path):
    torch.manual_seed(0)
    ref = torchvision.models.mobilenet_v3_large(weights=None)
    path = tmp_path / "mnv3.pth"
    torch.save(ref.state_dict(), path)
    cfg = DetectorConfig(num_classes=2, **SMALL)
    model = build_detector(cfg, init_backbone=path)
    got = model.backbone.body.state_dict()
    for key, value in ref.features.state_dict().items():
        torch.testing.assert_close(got[key], value, rtol=0, atol=0)

    wrong = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), wrong)
    with pytest.raises(WeightsError, match=r"resnet18\.pth: not a mobilenet_v3_large"):
        build_detector(cfg, init_backbone=wrong)


def test_training_losses_with_an_empty_image_and_bf16_backbone():
    torch.manual_seed(0)
    model = build_detector(DetectorConfig(num_classes=4, **SMALL)).train()
    mask = torch.zeros(1, 96, 128, dtype=torch.uint8)
    mask[0, 20:60, 30:80] = 1
    targets = [
        {"boxes": torch.tensor([[30.0, 20.0, 80.0, 60.0]]), "labels": torch.tensor([2]),
         "masks": mask},
        # No instance at all: only background proposals, a zero mask loss.
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
         "masks": torch.zeros(0, 96, 128, dtype=torch.uint8)},
    ]
    for dtype in (None, torch.bfloat16):  # bf16 autocast of the backbone (CPU autocast here)
        losses = run_detector(model, [_image(5), _image(6)], targets, dtype=dtype)
        assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_mask",
                               "loss_objectness", "loss_rpn_box_reg"}
        assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
        model.zero_grad()
        sum(losses.values()).backward()
        assert model.backbone.body["0"][0].weight.grad.abs().sum() > 0


def test_shrunk_weights_load_as_float32_within_float16_rounding(mobilenet, tmp_path):
    from pose6d_ros.cli import main

    model, cfg = mobilenet
    full = tmp_path / "detector.pt"
    save_detector(full, model, cfg, step=3)
    assert main(["weights", "shrink", str(full), "--out", str(tmp_path / "half.pt")]) == 0
    assert (tmp_path / "half.pt").stat().st_size < 0.6 * full.stat().st_size
    half, _ = load_detector(tmp_path / "half.pt")
    assert all(p.dtype == torch.float32 for p in half.parameters())
    for (name, p), q in zip(model.state_dict().items(), half.state_dict().values(),
                            strict=True):
        torch.testing.assert_close(q, p.to(q.dtype), rtol=1e-3, atol=1e-4, msg=name)


def test_int8_weights_load_as_float32_within_half_a_step(mobilenet, tmp_path):
    """`weights shrink --int8`: big tensors as int8 with a float16 scale per output channel,
    so each weight comes back within half a quantisation step of its value."""
    from pose6d_ros.cli import main

    model, cfg = mobilenet
    full = tmp_path / "detector.pt"
    save_detector(full, model, cfg, step=3)
    assert main(["weights", "shrink", str(full), "--out", str(tmp_path / "q.pt"),
                 "--int8"]) == 0
    assert (tmp_path / "q.pt").stat().st_size < 0.35 * full.stat().st_size
    small, _ = load_detector(tmp_path / "q.pt")
    for (name, p), q in zip(model.state_dict().items(), small.state_dict().values(),
                            strict=True):
        if not p.is_floating_point():
            continue
        assert q.dtype == torch.float32, name
        dims = tuple(range(1, p.dim()))
        step = p.abs().amax(dim=dims, keepdim=True) / 127 if dims else p.abs()
        assert ((q - p).abs() <= 0.51 * step + 1e-3 * p.abs() + 1e-6).all(), name


@pytest.mark.parametrize("min_stride", [8, 16])
def test_fine_fpn_levels_with_narrow_heads(min_stride, tmp_path):
    torch.manual_seed(0)
    cfg = DetectorConfig(num_classes=3, min_stride=min_stride, fpn_width=32,
                         mask_head_width=16, box_head_width=64, box_score_thresh=0.0, **SMALL)
    model = build_detector(cfg)
    features = model.backbone(torch.rand(1, 3, 128, 160))
    strides = [128 // f.shape[-2] for f in features.values()]
    assert strides == [s for s in (8, 16, 32, 64) if s >= min_stride]
    assert all(f.shape[1] == 32 for f in features.values())
    # One anchor set per level, two sizes x three ratios everywhere.
    assert model.rpn.anchor_generator.num_anchors_per_location() == [6] * len(strides)
    assert model.roi_heads.mask_head[0][0].out_channels == 16
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in model.modules())

    model.train()
    target = {"boxes": torch.tensor([[20.0, 30, 60, 70]]), "labels": torch.tensor([2]),
              "masks": torch.zeros(1, 96, 128, dtype=torch.uint8)}
    target["masks"][0, 30:70, 20:60] = 1
    losses = run_detector(model, [_image()], [target])
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()

    save_detector(tmp_path / "d.pt", _calibrated(model), cfg)
    loaded, loaded_cfg = load_detector(tmp_path / "d.pt")
    assert loaded_cfg == cfg
    a, b = (Detector(m, device="cpu", score_threshold=0.0)(_image()) for m in (model, loaded))
    assert torch.equal(a.boxes, b.boxes)


def test_fine_level_settings_are_checked():
    with pytest.raises(ValueError, match="min_stride"):
        DetectorConfig(num_classes=2, min_stride=4)
    with pytest.raises(ValueError, match="fpn_width"):
        DetectorConfig(num_classes=2, fpn_width=128)  # stride-32 levels: torchvision's FPN
    with pytest.raises(ValueError, match="fpn_width"):
        DetectorConfig(num_classes=2, backbone="resnet50_fpn", min_stride=8, fpn_width=128)
