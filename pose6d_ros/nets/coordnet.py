"""CoordNet: a Pix2Pose-style U-Net from an RGB crop to per-pixel object coordinates.

For each pixel of a crop it predicts the normalised object coordinates the pixel shows,
(x - center) / scale in [-1, 1] (also for occluded parts of the object), the expected error
of that prediction (sigmoid, in normalised units) and an object-mask logit. One network
serves every object: the last layer has a head per object and each crop reads its own, so
all detected instances go through one batched forward pass.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import Tensor, nn
from torch.nn import functional

from pose6d_ros.nets.pretrained import STAGE_ENDS, mobilenet_v2_features
from pose6d_ros.nets.weights import WeightsError, read_checkpoint, write_checkpoint

KIND = "coordnet"  # the "kind" key of a CoordNet checkpoint
ENCODERS = ("resnet18", "resnet34", "small", "mobilenet_v2")


@dataclass
class CoordNetConfig:
    """Architecture; stored in checkpoints so weights load without extra flags."""

    num_objects: int
    encoder: str = "resnet18"
    input_size: int = 128
    decoder_width: int = 64
    # Auxiliary head classifying the crop's (allocentric) rotation into this many bins of
    # a fixed grid (0: none); a training signal for orientation features (seed 004).
    rotation_bins: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain values, safe for `torch.load(weights_only=True)`."""
        return asdict(self)


@dataclass
class CoordNetOutput:
    """Predictions for a batch of B crops of size (H, W)."""

    xyz: Tensor  # (B, 3, H, W) normalised object coordinates, tanh
    error: Tensor  # (B, 1, H, W) predicted |error| of xyz, sigmoid
    mask_logit: Tensor  # (B, 1, H, W) visible-object logit
    rotation_logits: Tensor | None = None  # (B, rotation_bins) when the head exists


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class _SmallEncoder(nn.Module):
    """Five strided conv stages (strides 2..32): a fast encoder for CPUs and tests."""

    def __init__(self, widths: tuple[int, ...] = (16, 24, 32, 64, 96)) -> None:
        super().__init__()
        cins = (3, *widths[:-1])
        self.stages = nn.ModuleList(nn.Sequential(_conv(a, b, 2), _conv(b, b))
                                    for a, b in zip(cins, widths, strict=True))
        self.channels = widths

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


class _ResNetEncoder(nn.Module):
    """torchvision ResNet features at strides 2, 4, 8, 16, 32."""

    def __init__(self, name: str) -> None:
        super().__init__()
        net = getattr(torchvision.models, name)(weights=None)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu)
        self.pool = net.maxpool
        self.layers = nn.ModuleList([net.layer1, net.layer2, net.layer3, net.layer4])
        self.channels = (64, 64, 128, 256, 512)

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.stem(x)
        feats = [x]
        x = self.pool(x)
        for layer in self.layers:
            x = layer(x)
            feats.append(x)
        return feats


class _MobileNetV2Encoder(nn.Module):
    """torchvision MobileNetV2 `features[:14]` (random here; `load_encoder_weights` puts in
    the ImageNet weights), its stage ends at strides 2, 4, 8, 16 (blocks 1, 3, 6, 13; 16, 24,
    32, 96 channels). BatchNorm is FrozenBatchNorm2d, keeping the ImageNet statistics, as in
    the detector's backbone."""

    def __init__(self) -> None:
        super().__init__()
        ends = [STAGE_ENDS[s] for s in (2, 4, 8, 16)]
        self.ends = tuple(i for i, _ in ends)
        self.features = mobilenet_v2_features(pretrained=False, blocks=self.ends[-1] + 1)
        self.channels = tuple(c for _, c in ends)

    def forward(self, x: Tensor) -> list[Tensor]:
        """`x (B, 3, H, W)` ImageNet-normalised -> maps (B, C_i, H / s, W / s), s = 2..16."""
        feats = []
        for i, block in enumerate(self.features):
            x = block(x)
            if i in self.ends:
                feats.append(x)
        return feats


def _encoder(name: str) -> nn.Module:
    """The encoder `name` with random weights; its `channels` per returned map."""
    if name == "small":
        return _SmallEncoder()
    if name == "mobilenet_v2":
        return _MobileNetV2Encoder()
    return _ResNetEncoder(name)


class CoordNet(nn.Module):
    """U-Net with skip connections and one output head per object."""

    def __init__(self, config: CoordNetConfig) -> None:
        super().__init__()
        if config.encoder not in ENCODERS:
            raise ValueError(f"encoder: expected one of {ENCODERS}, got {config.encoder!r}")
        if config.num_objects < 1:
            raise ValueError("num_objects must be >= 1")
        self.config = config
        self.encoder = _encoder(config.encoder)  # random: load_encoder_weights initialises it
        ch = self.encoder.channels
        d = config.decoder_width
        # Decoder stages from the coarsest map (stride 32, or 16 for mobilenet_v2) up to
        # stride 1, each fed the matching skip.
        self.up = nn.ModuleList()
        cin = ch[-1]
        for skip in reversed(ch[:-1]):
            self.up.append(nn.Sequential(_conv(cin + skip, d), _conv(d, d)))
            cin = d
        self.full = nn.Sequential(_conv(d + 3, d), _conv(d, d))  # stride 1, sees the image
        self.heads = nn.Conv2d(d, 5 * config.num_objects, 1)
        self.rotation_head = (nn.Linear(ch[-1], config.rotation_bins * config.num_objects)
                              if config.rotation_bins > 0 else None)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, image: Tensor, labels: Tensor) -> CoordNetOutput:
        """Predict for crops `image (B, 3, H, W)` in [0, 1] of objects `labels (B,)`; every
        encoder sees them normalised with ImageNet's mean and standard deviation."""
        x = (image - self.mean) / self.std
        feats = self.encoder(x)
        y = feats[-1]
        for up, skip in zip(self.up, reversed(feats[:-1]), strict=True):
            y = functional.interpolate(y, size=skip.shape[-2:], mode="bilinear")
            y = up(torch.cat([y, skip], 1))
        y = functional.interpolate(y, size=image.shape[-2:], mode="bilinear")
        y = self.full(torch.cat([y, x], 1))
        B, _, H, W = y.shape
        out = self.heads(y).view(B, self.config.num_objects, 5, H, W)
        b = torch.arange(B, device=y.device)
        out = out[b, labels]  # (B, 5, H, W): each crop's head
        rot = None
        if self.rotation_head is not None:
            rot = self.rotation_head(feats[-1].mean((-1, -2))).view(B, self.config.num_objects,
                                                                    -1)[b, labels]
        return CoordNetOutput(xyz=torch.tanh(out[:, :3]), error=torch.sigmoid(out[:, 3:4]),
                              mask_logit=out[:, 4:5], rotation_logits=rot)


def save_checkpoint(path: str | Path, model: nn.Module, **extra: Any) -> None:
    """Weights + architecture (+ optimiser state, counters) in a weights_only-loadable file."""
    net = model.module if hasattr(model, "module") else model
    write_checkpoint(path, net, KIND, net.config.to_dict(), **extra)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu"
                    ) -> dict[str, Any]:
    """A checkpoint written by `save_checkpoint`, loaded with weights_only=True."""
    return read_checkpoint(path, KIND, map_location)


def load_coordnet(path: str | Path, map_location: str | torch.device = "cpu") -> CoordNet:
    """A CoordNet with the weights and architecture stored at `path`."""
    ckpt = load_checkpoint(path, map_location)
    try:
        net = CoordNet(CoordNetConfig(**ckpt["config"]))
        net.load_state_dict(ckpt["model"])
    except (TypeError, ValueError, RuntimeError) as exc:
        raise WeightsError(f"{path}: weights do not fit the stored architecture: {exc}") from exc
    return net.to(map_location)


def load_encoder_weights(net: CoordNet, path: str | Path | None = None) -> None:
    """Initialise the encoder: ResNets from a local torchvision state dict at `path`,
    mobilenet_v2 from the converted ImageNet MobileNetV2 (nets/pretrained.py; `path` or, when
    None, the default file), with its errors for a missing or corrupt file."""
    if isinstance(net.encoder, _MobileNetV2Encoder):
        blocks = len(net.encoder.features)
        ref = mobilenet_v2_features(pretrained=True if path is None else path, blocks=blocks)
        net.encoder.features.load_state_dict(ref.state_dict())
        return
    if path is None:
        raise WeightsError(f"encoder {net.config.encoder}: no encoder weights file given")
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{path}: cannot load encoder weights: {exc}") from exc
    if not isinstance(net.encoder, _ResNetEncoder):
        raise WeightsError(f"{path}: encoder weights need a ResNet or mobilenet_v2 encoder")
    ref = getattr(torchvision.models, net.config.encoder)(weights=None)
    missing, _ = ref.load_state_dict(state, strict=False)
    if len(missing) > len(ref.state_dict()) // 2:
        raise WeightsError(f"{path}: does not look like a {net.config.encoder} state dict")
    enc = net.encoder
    enc.stem.load_state_dict(nn.Sequential(ref.conv1, ref.bn1, ref.relu).state_dict())
    enc.layers.load_state_dict(nn.ModuleList([ref.layer1, ref.layer2, ref.layer3,
                                              ref.layer4]).state_dict())
