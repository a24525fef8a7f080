"""`pose6d train detector`: Mask R-CNN training on synthetic BOP scenes, from ImageNet
MobileNetV2 features (the default) or from scratch.

Runs on CUDA when present (bf16 autocast of the backbone), else on the CPU; on several GPUs
or processes under `torchrun` (DistributedDataParallel; NCCL on CUDA, gloo on CPU). Writes
into the run folder: `last.pt` (resumable: weights, optimiser, scheduler, counters),
`detector.pt` (final weights), `log.csv`, `losses.png`, `config.yaml`, and at every
checkpoint, when there is a validation split, `val.csv` and `val.png` (AP at IoU 0.5, recall
and precision at score 0.5, on whole validation images at test-time size).

Augmentation is photometric only (DetectionDataset): no horizontal flips, since a mirrored
object is a different, chiral object.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

from pose6d_ros.core.objects import load_objects
from pose6d_ros.data.datasets import DetectionDataset
from pose6d_ros.eval.detection import ImageDetections, detection_metrics
from pose6d_ros.nets.detector import (
    DetectorConfig,
    build_detector,
    load_detector,
    load_detector_checkpoint,
    run_detector,
    save_detector,
    widen_detector,
)
from pose6d_ros.nets.pretrained import default_pretrained_path
from pose6d_ros.train.common import RunConfig, TrainLoop
from pose6d_ros.train.logs import plot_curves

LOSS_TERMS = ["loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness",
              "loss_rpn_box_reg"]
LOG_FIELDS = ["step", "epoch", "lr", "loss", *LOSS_TERMS, "seconds"]
OPTIMIZERS = ("adamw", "sgd")
VAL_BATCH = 8  # validation images per forward


@dataclass
class DetectorTrainConfig(RunConfig):
    """Every setting of a detector training run (saved as the run's config.yaml)."""

    batch_size: int = 4
    # AdamW: from scratch, with small batches and BatchNorm everywhere, it brings the loss
    # down much faster than SGD at the torchvision-recipe lr (see README, "Detector").
    optimizer: str = "adamw"
    lr: float = 3e-4
    clip_grad: float = 10.0  # max gradient norm
    backbone: str = "mobilenet_v2_fpn"
    # MobileNetV2's first `frozen_blocks` feature blocks keep their ImageNet weights (4: the
    # stem and the stride-2/4 stages, generic edges and colours that renders teach badly).
    frozen_blocks: int = 4
    box_head_width: int = 256  # box-head FC width (torchvision's 1024 adds 10 M parameters)
    # Test-time size: images are resized so the short side is min_size and the long side
    # at most max_size (LM-O's 640x480 photographs: unchanged).
    min_size: int = 480
    max_size: int = 640
    min_stride: int = 8  # finest MobileNet FPN level (8, 16 or 32; see DetectorConfig)
    fpn_width: int = 128
    mask_head_width: int = 64
    # Training on random crop_size x crop_size crops of the images at test-time scale (times
    # 1 +- scale_jitter): a third of a 640x480 image's compute per step at 320. 0: whole
    # images, resized as at test time.
    crop_size: int = 320
    scale_jitter: float = 0.25
    # RoIs sampled per image for the box and mask heads (torchvision: 512, a quarter of them
    # positive); the mask head on the positives is most of a step's compute.
    rois_per_image: int = 512
    # Backbone initialisation: MobileNetV2 from the converted ImageNet file (default: the one
    # set-up writes); ResNet-50 / MobileNetV3 from a local torchvision state dict, else random.
    init_backbone: str | None = None
    # Whole-detector initialisation (fine-tuning): a detector checkpoint, e.g. the shipped
    # models/detector.pt; its architecture settings replace this config's. With fewer
    # classes than objects, its classes are taken as the first objects' and it is widened.
    init_weights: str | None = None
    val_images: int = 64  # validation images, spread over the validation split

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer: expected one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.frozen_blocks < 0 or self.frozen_blocks > 19:
            raise ValueError(f"frozen_blocks: expected 0..19, got {self.frozen_blocks}")



def collate(batch: list[tuple[Tensor, dict[str, Tensor]]]
            ) -> tuple[list[Tensor], list[dict[str, Tensor]]]:
    """Images and targets as lists: images differ in size, targets in instance count."""
    return [im for im, _ in batch], [t for _, t in batch]


class _Losses(nn.Module):
    """The model's loss terms as one module, so DistributedDataParallel sees the forward."""

    def __init__(self, net: nn.Module, dtype: torch.dtype | None) -> None:
        super().__init__()
        self.net, self.dtype = net, dtype

    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]]
                ) -> dict[str, Tensor]:
        return run_detector(self.net, images, targets, dtype=self.dtype)


class DetectorTrainer(TrainLoop):
    """One training run; `run()` trains, checkpoints and logs."""

    name, final_name = "train detector", "detector.pt"
    collate_fn = staticmethod(collate)
    val_fields = ("ap50", "recall", "precision", "targets", "images")
    val_curves = ("ap50", "recall", "precision")

    def __init__(self, cfg: DetectorTrainConfig, *, resume: bool = False,
                 progress: bool = True, log: Callable[[str], None] = print) -> None:
        self.start_process(cfg, progress)
        self.clip_grad = cfg.clip_grad
        self.objects = load_objects(cfg.objects)
        self.dataset = DetectionDataset(cfg.data, self.objects, split=cfg.split,
                                        crop_size=cfg.crop_size, min_size=cfg.min_size,
                                        max_size=cfg.max_size, scale_jitter=cfg.scale_jitter)
        if len(self.dataset) < cfg.batch_size * self.world:
            raise ValueError(f"{cfg.data}: {len(self.dataset)} training images, fewer than one "
                             f"batch ({cfg.batch_size} x {self.world} processes)")
        if cfg.init_weights:
            self._init_from_weights(cfg, log if self.rank == 0 else None)
        else:
            self.net_config = DetectorConfig(
                num_classes=len(self.objects), backbone=cfg.backbone, min_size=cfg.min_size,
                max_size=cfg.max_size, box_head_width=cfg.box_head_width,
                min_stride=cfg.min_stride, fpn_width=cfg.fpn_width,
                mask_head_width=cfg.mask_head_width)
            init = cfg.init_backbone
            if init is None and cfg.backbone == "mobilenet_v2_fpn":
                init = str(default_pretrained_path())
            self.net = build_detector(self.net_config, init_backbone=init).to(self.device)
        if self.net_config.backbone == "mobilenet_v2_fpn":
            for block in list(self.net.backbone.body.children())[:cfg.frozen_blocks]:
                block.requires_grad_(False)
        if cfg.crop_size:  # the crops are already at test-time scale: no resizing
            self.net.transform.min_size = (cfg.crop_size,)
            self.net.transform.max_size = cfg.crop_size
        self.net.roi_heads.fg_bg_sampler.batch_size_per_image = cfg.rois_per_image
        params = [p for p in self.net.parameters() if p.requires_grad]
        if cfg.optimizer == "sgd":
            opt: torch.optim.Optimizer = torch.optim.SGD(
                params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
        else:
            opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.setup_training(_Losses(self.net, self.amp_dtype), opt)
        self.val_set = self._validation_set() if self.rank == 0 else None
        self.start_run(resume, LOG_FIELDS)

    def _init_from_weights(self, cfg: DetectorTrainConfig,
                           log: Callable[[str], None] | None) -> None:
        """`net` and `net_config` from the `init_weights` checkpoint, widened to the
        objects when it has fewer classes (its classes are the first objects')."""
        self.net, self.net_config = load_detector(cfg.init_weights)
        classes, objects = self.net_config.num_classes, len(self.objects)
        if classes > objects:
            raise ValueError(f"{cfg.init_weights}: {classes} classes, {cfg.objects} has "
                             f"only {objects} objects")
        if classes < objects:
            self.net_config = widen_detector(self.net, self.net_config, objects)
            if log is not None:
                log(f"{cfg.init_weights}: {classes} classes widened to {objects} (the first "
                    f"{classes} objects of {cfg.objects} keep theirs)")
        self.net = self.net.to(self.device).train()

    def _validation_set(self) -> Subset | None:
        """Fixed, unaugmented whole images spread over the validation split (None: none)."""
        root = self.validation_root()
        if root is None:
            return None
        images = DetectionDataset(root, self.objects, split=self.cfg.val_split, augment=False)
        return self.spread_subset(images, self.cfg.val_images)

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """AP at IoU 0.5 and recall / precision at score 0.5 on the validation images, run
        as at test time (whole images, resized to the configured sizes)."""
        net, transform = self.net, self.net.transform
        saved = transform.min_size, transform.max_size
        transform.min_size = (self.net_config.min_size,)
        transform.max_size = self.net_config.max_size
        net.eval()
        images = []
        try:
            for batch, targets in DataLoader(self.val_set, batch_size=VAL_BATCH,
                                             collate_fn=collate):
                outs = run_detector(net, [im.to(self.device) for im in batch],
                                    dtype=self.amp_dtype)
                images += [ImageDetections(o["boxes"].cpu(), o["labels"].cpu(), o["scores"].cpu(),
                                           t["boxes"], t["labels"])
                           for o, t in zip(outs, targets, strict=True)]
        finally:
            transform.min_size, transform.max_size = saved
            net.train()
        return {**detection_metrics(images), "images": float(len(images))}

    def load_checkpoint(self, path: Path) -> dict[str, Any]:
        """The detector checkpoint at `path`."""
        return load_detector_checkpoint(path, self.device)

    def losses(self, batch: tuple[list[Tensor], list[dict[str, Tensor]]]
               ) -> dict[str, Tensor]:
        """Every loss term of one batch (scalars) plus their sum under "loss"."""
        images, targets = batch
        dev = self.device
        images = [im.to(dev, non_blocking=True) for im in images]
        targets = [{k: v.to(dev, non_blocking=True) for k, v in t.items()} for t in targets]
        terms = dict(self.model(images, targets))
        terms["loss"] = sum(terms[k] for k in LOSS_TERMS)
        return terms

    def save_checkpoint(self, path: Path, *, final: bool) -> None:
        """Weights (final) or weights + optimiser state + counters (resumable)."""
        if final:
            save_detector(path, self.net, self.net_config, step=self.step)
        else:
            save_detector(path, self.net, self.net_config, optimizer=self.opt.state_dict(),
                          scheduler=self.sched.state_dict(), step=self.step, epoch=self.epoch)

    def plot(self) -> None:
        """losses.png from log.csv."""
        plot_curves(self.out / "log.csv", self.out / "losses.png",
                    curves=["loss", *LOSS_TERMS, "lr"],
                    title=f"Mask R-CNN ({self.cfg.backbone}) {self.out.name}")
