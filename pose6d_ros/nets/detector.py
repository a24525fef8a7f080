"""The detector: torchvision Mask R-CNN (MobileNetV2-FPN on ImageNet features, or
MobileNetV3-Large-FPN / ResNet-50-FPN from scratch), its checkpoints, and `Detector`, the
wrapper the pipeline calls.

Class labels: torchvision's label 0 is the background, so the network's label l is the
objects registry's index l - 1; `Detections.labels` are registry indices.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models.detection import MaskRCNN, maskrcnn_resnet50_fpn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN, mobilenet_backbone
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from pose6d_ros.nets.precision import autocast, memory_format
from pose6d_ros.nets.pretrained import STAGE_ENDS as _V2_STAGE_ENDS
from pose6d_ros.nets.pretrained import mobilenet_v2_features
from pose6d_ros.nets.weights import WeightsError, read_checkpoint, write_checkpoint

BACKBONES = ("mobilenet_v2_fpn", "mobilenet_v3_fpn", "resnet50_fpn")
# MobileNetV3-Large feature blocks that end its stride-8, -16 and -32 stages, and their widths.
_MOBILENET_STAGE_ENDS = {8: ("6", 40), 16: ("12", 112), 32: ("16", 960)}
KIND = "detector"  # the "kind" key of a detector checkpoint


@dataclass
class DetectorConfig:
    """Architecture and pre/post-processing; stored in checkpoints."""

    num_classes: int  # objects, without the background
    backbone: str = "mobilenet_v3_fpn"
    min_size: int = 480  # images are resized so the short side is min_size...
    max_size: int = 640  # ...and the long side at most max_size
    box_detections_per_img: int = 32
    box_score_thresh: float = 0.05
    rpn_pre_nms_top_n_test: int = 1000
    # 300 proposals at test time (Faster R-CNN's setting) instead of torchvision's 1000:
    # the box head on the proposals is most of the CPU time, and a frame holds few objects.
    rpn_post_nms_top_n_test: int = 300
    # Width of the two fully connected box-head layers (torchvision: 1024, 13.9 M of the
    # 21.6 M parameters); 256 keeps the shipped MobileNet detector near 11 M (44 MB).
    box_head_width: int = 1024
    # Finest FPN level of the MobileNet backbone. 32 is torchvision's
    # fasterrcnn_mobilenet_v3_large_fpn (every level at stride 32, anchors 32-512 px on
    # each); 8 or 16 adds the finer stages' levels, each with anchors of 3 and 4 strides,
    # for objects of 20-100 px such as LM-O's at 640x480. ResNet-50-FPN ignores it.
    min_stride: int = 32
    # Channels of the FPN levels (MobileNet with min_stride 8 or 16 only; torchvision: 256)
    # and of the mask head's four convolutions (torchvision: 256). On a CPU the mask head on
    # the positive RoIs is most of a training step: 64 makes it 16x cheaper.
    fpn_width: int = 256
    mask_head_width: int = 256

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone: expected one of {BACKBONES}, got {self.backbone!r}")
        if self.min_stride not in _MOBILENET_STAGE_ENDS:
            raise ValueError(f"min_stride: expected one of {sorted(_MOBILENET_STAGE_ENDS)}, "
                             f"got {self.min_stride!r}")
        if self.fpn_width != 256 and (self.backbone == "resnet50_fpn"
                                      or (self.backbone == "mobilenet_v3_fpn"
                                          and self.min_stride == 32)):
            raise ValueError("fpn_width: only the MobileNet backbone with min_stride 8 or 16 "
                             "has a configurable FPN width")
        if self.fpn_width < 8 or self.mask_head_width < 8 or self.box_head_width < 8:
            raise ValueError("fpn_width, mask_head_width and box_head_width must be >= 8")
        if self.num_classes < 1:
            raise ValueError("num_classes must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        """Plain values, safe for `torch.load(weights_only=True)`."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DetectorConfig:
        """The config stored by `to_dict` (unknown keys are an error)."""
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown detector setting(s) {sorted(unknown)}")
        return cls(**values)


def build_detector(cfg: DetectorConfig, *, init_backbone: str | Path | None = None
                   ) -> MaskRCNN:
    """A Mask R-CNN with random weights, or its backbone from a local file: a torchvision
    state dict for ResNet-50 / MobileNetV3, the converted ImageNet file (nets/pretrained.py)
    for MobileNetV2. From scratch every layer trains, BatchNorm included; MobileNetV2 keeps
    frozen ImageNet BatchNorm statistics."""
    kwargs = dict(min_size=cfg.min_size, max_size=cfg.max_size,
                  box_detections_per_img=cfg.box_detections_per_img,
                  box_score_thresh=cfg.box_score_thresh,
                  rpn_pre_nms_top_n_test=cfg.rpn_pre_nms_top_n_test,
                  rpn_post_nms_top_n_test=cfg.rpn_post_nms_top_n_test)
    num_classes = cfg.num_classes + 1
    if cfg.backbone == "resnet50_fpn":
        # Without weights torchvision already picks trainable BatchNorm2d and makes all 5
        # backbone stages trainable; passing trainable_backbone_layers would only warn.
        model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None,
                                      num_classes=num_classes, **kwargs)
    else:
        if cfg.backbone == "mobilenet_v2_fpn":
            backbone, sizes = _mobilenet_v2_fpn(cfg.min_stride, cfg.fpn_width, init_backbone)
        else:
            backbone, sizes = _mobilenet_fpn(cfg.min_stride, cfg.fpn_width)
        anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
        model = MaskRCNN(backbone, num_classes=num_classes, rpn_anchor_generator=anchors,
                         **kwargs)
    if cfg.box_head_width != 1024:
        resolution = model.roi_heads.box_roi_pool.output_size[0]
        channels = model.backbone.out_channels
        model.roi_heads.box_head = TwoMLPHead(channels * resolution**2, cfg.box_head_width)
        model.roi_heads.box_predictor = FastRCNNPredictor(cfg.box_head_width, num_classes)
    if cfg.mask_head_width != 256:
        width = cfg.mask_head_width
        model.roi_heads.mask_head = MaskRCNNHeads(model.backbone.out_channels, [width] * 4, 1)
        model.roi_heads.mask_predictor = MaskRCNNPredictor(width, width, num_classes)
    if init_backbone is not None and cfg.backbone != "mobilenet_v2_fpn":
        load_backbone_weights(model, cfg, init_backbone)
    return model


def widen_detector(model: MaskRCNN, cfg: DetectorConfig, num_classes: int
                   ) -> DetectorConfig:
    """Give `model` (built from `cfg`) `num_classes` > cfg.num_classes object classes, in
    place: the background's and the old classes' rows of the box predictor (cls_score,
    bbox_pred) and output channels of the mask predictor (mask_fcn_logits) are kept, the new
    ones freshly initialised. Returns the config with the new `num_classes`."""
    if num_classes <= cfg.num_classes:
        raise ValueError(f"num_classes: widening needs more than the {cfg.num_classes} "
                         f"classes the detector has, got {num_classes}")
    old, new = cfg.num_classes + 1, num_classes + 1  # with the background
    box = model.roi_heads.box_predictor
    cls_score = _widened_linear(box.cls_score, new, old, std=0.01)
    bbox_pred = _widened_linear(box.bbox_pred, 4 * new, 4 * old, std=0.001)
    box.cls_score, box.bbox_pred = cls_score, bbox_pred
    mask = model.roi_heads.mask_predictor
    logits = mask.mask_fcn_logits
    wide = nn.Conv2d(logits.in_channels, new, 1).to(logits.weight)
    nn.init.kaiming_normal_(wide.weight, mode="fan_out", nonlinearity="relu")  # torchvision's
    nn.init.zeros_(wide.bias)
    with torch.no_grad():
        wide.weight[:old] = logits.weight
        wide.bias[:old] = logits.bias
    mask.mask_fcn_logits = wide
    return replace(cfg, num_classes=num_classes)


def _widened_linear(layer: nn.Linear, rows: int, kept: int, std: float) -> nn.Linear:
    """A copy of `layer` with `rows` outputs: its first `kept` rows, then new ones."""
    wide = nn.Linear(layer.in_features, rows).to(layer.weight)
    # Small weights and zero bias (Detectron's initialisation of these heads): a new class
    # starts with near-zero logits and box offsets instead of swamping the trained ones.
    nn.init.normal_(wide.weight, std=std)
    nn.init.zeros_(wide.bias)
    with torch.no_grad():
        wide.weight[:kept] = layer.weight
        wide.bias[:kept] = layer.bias
    return wide


def _mobilenet_v2_fpn(min_stride: int, width: int, weights: str | Path | None
                      ) -> tuple[nn.Module, tuple[tuple[int, ...], ...]]:
    """MobileNetV2 (ImageNet weights from `weights`, else random) + FPN over its stride
    8/16/32 stage ends, and the anchor sizes of each level."""
    features = mobilenet_v2_features(pretrained=weights if weights is not None else False)
    strides = [s for s in (8, 16, 32) if s >= min_stride]
    ends = [_V2_STAGE_ENDS[s] for s in strides]
    backbone = BackboneWithFPN(features, {str(i): str(k) for k, (i, _) in enumerate(ends)},
                               [channels for _, channels in ends], out_channels=width,
                               extra_blocks=LastLevelMaxPool())
    strides.append(2 * strides[-1])  # the max-pooled level
    return backbone, tuple((3 * s, 4 * s) for s in strides)


def _mobilenet_fpn(min_stride: int, width: int
                   ) -> tuple[nn.Module, tuple[tuple[int, ...], ...]]:
    """MobileNetV3-Large + FPN from scratch, and the anchor sizes of each of its levels."""
    if min_stride == 32:
        # mobilenet_backbone's default norm layer is FrozenBatchNorm2d (constant statistics
        # meant for pretrained weights): from scratch it must be a real BatchNorm2d.
        backbone = mobilenet_backbone(backbone_name="mobilenet_v3_large", weights=None,
                                      fpn=True, norm_layer=nn.BatchNorm2d, trainable_layers=6)
        # Both returned maps are at stride 32 (plus the max-pooled one), so every level
        # gets every size.
        return backbone, ((32, 64, 128, 256, 512),) * 3
    features = torchvision.models.mobilenet_v3_large(weights=None,
                                                     norm_layer=nn.BatchNorm2d).features
    strides = [s for s in sorted(_MOBILENET_STAGE_ENDS) if s >= min_stride]
    ends = [_MOBILENET_STAGE_ENDS[s] for s in strides]
    backbone = BackboneWithFPN(features, {name: str(i) for i, (name, _) in enumerate(ends)},
                               [channels for _, channels in ends], out_channels=width,
                               extra_blocks=LastLevelMaxPool())
    strides.append(2 * strides[-1])  # the max-pooled level
    return backbone, tuple((3 * s, 4 * s) for s in strides)


def load_backbone_weights(model: MaskRCNN, cfg: DetectorConfig, path: str | Path) -> None:
    """Initialise the backbone from a local torchvision classification state dict
    (ResNet-50 or MobileNetV3-Large, e.g. ImageNet weights saved with torch.save)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such backbone weights file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{path}: cannot load backbone weights: {exc}") from exc
    name = "resnet50" if cfg.backbone == "resnet50_fpn" else "mobilenet_v3_large"
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: not a state dict")
    ref = getattr(torchvision.models, name)(weights=None)
    try:
        missing, _ = ref.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # a key with the wrong shape
        raise WeightsError(f"{path}: does not fit a {name}: {exc}") from exc
    # The classifier is not part of the detector; every feature layer must be there.
    head = ("fc.",) if name == "resnet50" else ("classifier.",)
    missing = [k for k in missing if not k.startswith(head)]
    if missing:
        raise WeightsError(f"{path}: not a {name} state dict ({len(missing)} backbone keys "
                           f"missing, e.g. {missing[0]!r})")
    body = model.backbone.body
    if name == "resnet50":
        body.load_state_dict({k: v for k, v in ref.state_dict().items()
                              if not k.startswith("fc.")})
    else:
        body.load_state_dict(ref.features.state_dict())


def run_detector(model: MaskRCNN, images: list[Tensor],
                 targets: list[dict[str, Tensor]] | None = None, *,
                 dtype: torch.dtype | None = None
                 ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
    """Mask R-CNN forward: the loss terms in training mode, detections in eval mode.

    With `dtype` (bf16 or fp16), only the backbone + FPN run under autocast; the RPN and the
    RoI heads get float32 features, because torchvision decodes boxes in the dtype of the
    predicted offsets (anchors at x = 600 would be rounded to 4 px in bf16) and matches them
    by IoU.
    """
    original_sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
    batch, targets = model.transform(images, targets)
    with autocast(batch.tensors.device, dtype):
        features = model.backbone(batch.tensors)
    features = {k: v.float() for k, v in features.items()}
    proposals, rpn_losses = model.rpn(batch, features, targets)
    detections, head_losses = model.roi_heads(features, proposals, batch.image_sizes, targets)
    if model.training:
        return {**rpn_losses, **head_losses}
    return model.transform.postprocess(detections, batch.image_sizes, original_sizes)


@dataclass
class Detections:
    """The instances found in one image, by decreasing score."""

    labels: Tensor  # (n,) int64 registry indices (0-based)
    scores: Tensor  # (n,) float
    boxes: Tensor  # (n, 4) x0, y0, x1, y1 in pixels of the input image
    masks: Tensor  # (n, H, W) float mask probabilities in [0, 1], image size

    def __len__(self) -> int:
        return int(self.labels.shape[0])


class Detector:
    """Finds instances of the registry's objects in RGB images (eval mode, no gradients).

    Keeps at most `max_instances` instances scoring above `score_threshold` (and above the
    model's own `box_score_thresh`); both are read at every call and may be changed.
    """

    def __init__(self, model: MaskRCNN, *, device: str | torch.device,
                 score_threshold: float = 0.5, max_instances: int = 16,
                 dtype: torch.dtype | None = None) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.model.backbone.to(memory_format=memory_format(self.device))
        self.score_threshold, self.max_instances = score_threshold, max_instances
        self.dtype = dtype  # autocast dtype of the backbone + FPN (None: float32)

    @classmethod
    def load(cls, path: str | Path, *, device: str | torch.device = "cpu",
             **kwargs: Any) -> Detector:
        """A Detector with the weights of a checkpoint written by `save_detector`."""
        model, _ = load_detector(path, device)
        return cls(model, device=device, **kwargs)

    def __call__(self, images: Tensor | list[Tensor]) -> Detections | list[Detections]:
        """Detect in one image `(3, H, W)` float in [0, 1] (or a list of them: one batched
        forward, one `Detections` each)."""
        single = isinstance(images, Tensor)
        batch = [images] if single else list(images)
        for im in batch:
            if im.ndim != 3 or im.shape[0] != 3:
                raise ValueError(f"expected images of shape (3, H, W), got {tuple(im.shape)}")
        batch = [im.to(self.device, torch.float32) for im in batch]
        heads = self.model.roi_heads
        saved = heads.score_thresh, heads.detections_per_img
        # Thresholding inside torchvision pastes only the kept masks into the image.
        heads.score_thresh = max(saved[0], float(self.score_threshold))
        heads.detections_per_img = int(self.max_instances)
        self.model.eval()
        try:
            with torch.no_grad():
                out = run_detector(self.model, batch, dtype=self.dtype)
        finally:
            heads.score_thresh, heads.detections_per_img = saved
        dets = [_detections(o, self.score_threshold, self.max_instances) for o in out]
        return dets[0] if single else dets


def _detections(out: dict[str, Tensor], threshold: float, limit: int) -> Detections:
    # Stable: ties keep torchvision's order, so a lower limit keeps a prefix.
    order = torch.argsort(out["scores"], descending=True, stable=True)
    order = order[out["scores"][order] > threshold][:limit]
    return Detections(labels=out["labels"][order] - 1, scores=out["scores"][order],
                      boxes=out["boxes"][order], masks=out["masks"][order, 0])


def save_detector(path: str | Path, model: nn.Module, cfg: DetectorConfig,
                  **extra: Any) -> None:
    """Weights + architecture (+ optimiser state, counters) in a weights_only-loadable file."""
    write_checkpoint(path, model, KIND, cfg.to_dict(), **extra)


def load_detector_checkpoint(path: str | Path, map_location: str | torch.device = "cpu"
                             ) -> dict[str, Any]:
    """A checkpoint written by `save_detector`, loaded with weights_only=True."""
    return read_checkpoint(path, KIND, map_location)


def load_detector(path: str | Path, map_location: str | torch.device = "cpu"
                  ) -> tuple[MaskRCNN, DetectorConfig]:
    """The Mask R-CNN (eval mode) and its config stored at `path`."""
    ckpt = load_detector_checkpoint(path, map_location)
    try:
        cfg = DetectorConfig.from_dict(ckpt["config"])
        model = build_detector(cfg)
        model.load_state_dict(ckpt["model"])
    except (TypeError, ValueError, RuntimeError) as exc:
        raise WeightsError(f"{path}: weights do not fit the stored architecture: {exc}") from exc
    return model.to(map_location).eval(), cfg
