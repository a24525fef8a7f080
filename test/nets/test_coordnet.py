"""CoordNet: shapes, per-object heads, batching, checkpoints, the ImageNet encoder."""

import pytest
import torch
import torchvision

from pose6d_ros.nets.coord_poses import CoordPoseEstimator
from pose6d_ros.nets.coordnet import (
    CoordNet,
    CoordNetConfig,
    WeightsError,
    load_coordnet,
    load_encoder_weights,
    save_checkpoint,
)
from pose6d_ros.nets.pretrained import default_pretrained_path, load_pretrained_state
from test.nets.test_pretrained import _needs


@pytest.mark.parametrize("encoder", ["small", "resnet18", "mobilenet_v2"])
def test_outputs_and_ranges(encoder):
    net = CoordNet(CoordNetConfig(num_objects=3, encoder=encoder, input_size=64,
                                  decoder_width=16)).eval()
    out = net(torch.rand(2, 3, 64, 64), torch.tensor([0, 2]))
    assert out.xyz.shape == (2, 3, 64, 64) and out.error.shape == (2, 1, 64, 64)
    assert out.mask_logit.shape == (2, 1, 64, 64)
    assert out.xyz.abs().max() <= 1 and out.error.min() >= 0 and out.error.max() <= 1


def test_each_crop_reads_its_own_head_and_batching_changes_nothing():
    torch.manual_seed(0)
    net = CoordNet(CoordNetConfig(num_objects=3, encoder="small", input_size=32,
                                  decoder_width=16)).eval()
    x = torch.rand(3, 3, 32, 32)
    labels = torch.tensor([0, 1, 2])
    batch = net(x, labels)
    for i in range(3):
        one = net(x[i:i + 1], labels[i:i + 1])
        torch.testing.assert_close(one.xyz[0], batch.xyz[i], atol=1e-5, rtol=0)
    other = net(x[:1], torch.tensor([1]))
    assert not torch.allclose(other.xyz[0], batch.xyz[0])


def test_checkpoint_round_trip_and_bad_files(tmp_path, objects):
    net = CoordNet(CoordNetConfig(num_objects=len(objects), encoder="small", input_size=32,
                                  decoder_width=16)).eval()
    path = tmp_path / "w.pt"
    save_checkpoint(path, net, step=3)
    back = load_coordnet(path).eval()
    x, lab = torch.rand(1, 3, 32, 32), torch.tensor([4])
    torch.testing.assert_close(back(x, lab).xyz, net(x, lab).xyz)

    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match=r"corrupt\.pt"):
        load_coordnet(bad)
    with pytest.raises(WeightsError, match="no such"):
        load_coordnet(tmp_path / "missing.pt")
    torch.save({"config": {"num_objects": 2, "encoder": "small"}, "model": {}}, bad)
    with pytest.raises(WeightsError, match="do not fit"):
        load_coordnet(bad)
    wrong = CoordNet(CoordNetConfig(num_objects=len(objects) + 1, encoder="small"))
    with pytest.raises(ValueError, match=f"{len(objects) + 1} objects"):
        CoordPoseEstimator(wrong, objects)


def test_rotation_head_reads_each_crops_object():
    torch.manual_seed(0)
    net = CoordNet(CoordNetConfig(num_objects=3, encoder="small", input_size=32,
                                  decoder_width=8, rotation_bins=16)).eval()
    x = torch.rand(2, 3, 32, 32)
    out = net(x, torch.tensor([0, 2]))
    assert out.rotation_logits.shape == (2, 16)
    torch.testing.assert_close(net(x[1:], torch.tensor([2])).rotation_logits[0],
                               out.rotation_logits[1], atol=1e-5, rtol=0)
    assert CoordNet(CoordNetConfig(3, "small", 32, 8))(x, torch.tensor([0, 1])) \
        .rotation_logits is None


def test_mobilenet_v2_encoder_builds_without_the_pretrained_file(tmp_path, monkeypatch):
    """Random weights need no file (a checkpoint brings the weights); initialising from a
    missing file is the pretrained loader's error."""
    missing = tmp_path / "none.pt"
    monkeypatch.setattr("pose6d_ros.nets.pretrained.default_pretrained_path", lambda: missing)
    net = CoordNet(CoordNetConfig(num_objects=2, encoder="mobilenet_v2", input_size=32,
                                  decoder_width=8, rotation_bins=4)).eval()
    feats = net.encoder(torch.rand(1, 3, 32, 32))
    assert [f.shape[1:] for f in feats] == [(16, 16, 16), (24, 8, 8), (32, 4, 4), (96, 2, 2)]
    assert net(torch.rand(1, 3, 32, 32), torch.tensor([1])).rotation_logits.shape == (1, 4)
    with pytest.raises(WeightsError, match=r"none\.pt: no pretrained MobileNetV2"):
        load_encoder_weights(net)


def test_mobilenet_v2_encoder_is_torchvisions_with_the_imagenet_weights(tmp_path):
    path = _needs(default_pretrained_path())
    net = CoordNet(CoordNetConfig(num_objects=2, encoder="mobilenet_v2", input_size=32,
                                  decoder_width=8))
    load_encoder_weights(net)
    ref = torchvision.models.mobilenet_v2(weights=None).features[:14]
    ref.load_state_dict({k: v for k, v in load_pretrained_state(path).items()
                         if int(k.split(".")[0]) < 14})
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(net.encoder.eval()(x)[-1], ref.eval()(x), rtol=1e-4,
                                   atol=1e-4)
    # The encoder is recorded in the checkpoint, whose loading needs no pretrained file.
    save_checkpoint(tmp_path / "w.pt", net)
    back = load_coordnet(tmp_path / "w.pt")
    assert back.config.encoder == "mobilenet_v2"
    torch.testing.assert_close(back.encoder.features[13].conv[0][0].weight,
                               ref[13].conv[0][0].weight)
