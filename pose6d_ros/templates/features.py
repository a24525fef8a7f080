"""Pretrained features of crops, shared by template banks and retrieval."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional

from pose6d_ros.nets.pretrained import mobilenet_v2_features, normalise_imagenet


class CropFeatures(nn.Module):
    """Frozen ImageNet MobileNetV2 `features[:blocks]` (7: stride 8, 32 channels); each cell's
    feature vector scaled to unit length, so that a dot product is a cosine."""

    def __init__(self, blocks: int = 7, *, pretrained: bool | str | Path = True) -> None:
        super().__init__()
        self.net = mobilenet_v2_features(pretrained=pretrained, blocks=blocks)
        self.net.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> CropFeatures:
        """Always in eval mode: the features are frozen."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, crops: Tensor) -> Tensor:
        """`crops (B, 3, S, S)` RGB in [0, 1] -> `(B, C, S / stride, S / stride)` unit cells."""
        feats = self.net(normalise_imagenet(crops.float()))
        return functional.normalize(feats.float(), dim=1)
