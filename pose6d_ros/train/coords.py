"""`pose6d train coords`: CoordNet training with the symmetric transformer loss, the error
and mask losses, and the projection loss back-propagated through BPnP.

Runs on CUDA when present (bf16 autocast), else on the CPU; on several GPUs or processes
under `torchrun` (DistributedDataParallel; NCCL on CUDA, gloo on CPU). Writes into the run
folder: `last.pt` (resumable: weights, optimiser, counters), `coordnet.pt` (final
weights), `log.csv`, `losses.png`, `config.yaml`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pose6d_ros.core.objects import ObjectRegistry, load_objects
from pose6d_ros.core.rotations import ray_rotation, rotation_grid
from pose6d_ros.core.symmetry import SymmetryPools
from pose6d_ros.data.datasets import CropDataset
from pose6d_ros.nets.coordnet import (
    CoordNet,
    CoordNetConfig,
    load_checkpoint,
    load_encoder_weights,
    save_checkpoint,
)
from pose6d_ros.nets.correspondences import gather_coordinates, random_pixels
from pose6d_ros.nets.losses import (
    error_map_loss,
    mask_loss,
    projection_loss,
    rotation_class_loss,
    transformer_loss,
)
from pose6d_ros.nets.precision import autocast
from pose6d_ros.pnp.bpnp import bpnp
from pose6d_ros.train.common import RunConfig, TrainLoop
from pose6d_ros.train.logs import plot_curves

LOG_FIELDS = ["step", "epoch", "lr", "loss", "xyz", "error", "mask", "rot", "proj", "proj_ok",
              "seconds"]


@dataclass
class CoordTrainConfig(RunConfig):
    """Every setting of a CoordNet training run (saved as the run's config.yaml)."""

    input_size: int = 128
    encoder: str = "resnet18"
    decoder_width: int = 64
    rotation_bins: int = 128  # auxiliary rotation classification (0: off)
    beta: float = 3.0  # weight of object pixels in the transformer loss
    lambda_error: float = 1.0
    lambda_mask: float = 0.5
    lambda_rot: float = 1.0  # weight of the rotation-classification loss
    lambda_proj: float = 1.0  # 0 switches the BPnP projection loss off
    proj_warmup_steps: int = 1000  # projection loss from this step on
    proj_pixels: int = 128  # correspondences per instance for BPnP
    proj_points: int = 128  # mesh points per object compared in the image
    # Encoder initialisation: ResNets from a local torchvision state dict (else random);
    # mobilenet_v2 from the converted ImageNet MobileNetV2 (default: the file set-up writes).
    init_encoder: str | None = None
    # mobilenet_v2: its first `frozen_blocks` feature blocks keep their ImageNet weights (4:
    # the stem and the stride-2/4 stages, as in the detector).
    frozen_blocks: int = 4
    val_crops: int = 512  # validation crops, spread over the validation split

    def __post_init__(self) -> None:
        if not 0 <= self.frozen_blocks <= 14:
            raise ValueError(f"frozen_blocks: expected 0..14, got {self.frozen_blocks}")


def _mesh_points(objects: ObjectRegistry, count: int, seed: int) -> Tensor:
    """`(O, count, 3)` mesh vertices per object (metres), drawn with a fixed seed."""
    rng = np.random.default_rng(seed)
    out = []
    for obj in objects:
        v = np.asarray(obj.mesh.vertices)
        out.append(v[rng.choice(len(v), size=count, replace=len(v) < count)])
    return torch.from_numpy(np.stack(out))


class CoordTrainer(TrainLoop):
    """One training run; `run()` trains, checkpoints and logs."""

    name, final_name = "train coords", "coordnet.pt"
    val_fields = ("xyz", "xyz_zero", "mask_iou", "crops")
    val_curves = ("xyz", "xyz_zero", "mask_iou")

    def __init__(self, cfg: CoordTrainConfig, *, resume: bool = False,
                 progress: bool = True) -> None:
        self.start_process(cfg, progress)
        self.objects = load_objects(cfg.objects)
        self.dataset = CropDataset(cfg.data, self.objects, split=cfg.split, size=cfg.input_size)
        if len(self.dataset) < cfg.batch_size * self.world:
            raise ValueError(f"{cfg.data}: {len(self.dataset)} training crops, fewer than one "
                             f"batch ({cfg.batch_size} x {self.world} processes)")
        net = CoordNet(CoordNetConfig(num_objects=len(self.objects), encoder=cfg.encoder,
                                      input_size=cfg.input_size,
                                      decoder_width=cfg.decoder_width,
                                      rotation_bins=cfg.rotation_bins))
        resuming = resume and (self.out / "last.pt").exists()  # its weights replace these
        if cfg.init_encoder or (cfg.encoder == "mobilenet_v2" and not resuming):
            load_encoder_weights(net, cfg.init_encoder)
        if cfg.encoder == "mobilenet_v2":
            net.encoder.features[:cfg.frozen_blocks].requires_grad_(False)
        self.net = net.to(self.device)
        params = [p for p in self.net.parameters() if p.requires_grad]
        self.setup_training(self.net, torch.optim.AdamW(params, lr=cfg.lr,
                                                        weight_decay=cfg.weight_decay))
        self.pools = SymmetryPools(self.objects, device=self.device)
        center, scale = self.objects.coordinate_normalisation()
        self.center = torch.from_numpy(center).float().to(self.device)
        self.scale = torch.from_numpy(scale).float().to(self.device)
        self.grid = rotation_grid(max(cfg.rotation_bins, 1)).float().to(self.device)
        self.points = _mesh_points(self.objects, cfg.proj_points, cfg.seed).to(self.device)
        self.gen = torch.Generator(device=self.device).manual_seed(cfg.seed + 7919 * self.rank)
        self.val_set = self._validation_set() if self.rank == 0 else None
        self.start_run(resume, LOG_FIELDS)

    def _validation_set(self) -> list[dict[str, Any]] | None:
        """Fixed, unaugmented crops spread over the validation split, read once and kept in
        memory for every checkpoint's validation (None: no split)."""
        cfg, root = self.cfg, self.validation_root()
        if root is None:
            return None
        crops = CropDataset(root, self.objects, split=cfg.val_split, size=cfg.input_size,
                            augment=False)
        return list(self.spread_subset(crops, cfg.val_crops))

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """On the validation crops: mean |error| of the normalised coordinates on object
        pixels (symmetry-aware), the same for predicting 0 (no orientation learnt), and the
        IoU of the predicted and true visible masks."""
        from torch.utils.data import DataLoader

        dev = self.device
        err = zero = pixels = inter = union = 0.0
        self.net.eval()
        for batch in DataLoader(self.val_set, batch_size=64, num_workers=0):
            b = {k: v.to(dev) for k, v in batch.items()}
            labels = b["label"]
            with autocast(dev, self.amp_dtype):
                out = self.net(b["image"], labels)
            full = b["mask_full"] > 0
            target = transformer_loss(out.xyz.float(), b["xyz"], full, self.pools.R[labels],
                                      self.pools.t[labels], self.pools.valid[labels],
                                      b["center"], b["scale"], beta=self.cfg.beta).target
            m = full[:, None]
            err += float(((out.xyz.float() - target).abs() * m).sum())
            zero += float((target.abs() * m).sum())
            pixels += 3 * float(m.sum())
            pred, visible = out.mask_logit[:, 0] > 0, b["mask_visib"] > 0
            inter += float((pred & visible).sum())
            union += float((pred | visible).sum())
        self.net.train()
        return {"xyz": err / max(pixels, 1.0), "xyz_zero": zero / max(pixels, 1.0),
                "mask_iou": inter / max(union, 1.0), "crops": float(len(self.val_set))}

    def load_checkpoint(self, path: Path) -> dict[str, Any]:
        """The CoordNet checkpoint at `path`."""
        return load_checkpoint(path, self.device)

    def losses(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Every loss term of one batch (scalars) plus the weighted total under "loss"."""
        cfg, dev = self.cfg, self.device
        b = {k: v.to(dev, non_blocking=True) for k, v in batch.items()}
        labels = b["label"]
        with autocast(dev, self.amp_dtype):
            out = self.model(b["image"], labels)
        xyz, err, logit = out.xyz.float(), out.error.float(), out.mask_logit.float()
        full = b["mask_full"] > 0
        sym = transformer_loss(xyz, b["xyz"], full, self.pools.R[labels], self.pools.t[labels],
                               self.pools.valid[labels], b["center"], b["scale"],
                               beta=cfg.beta)
        terms = {"xyz": sym.loss.mean(),
                 "error": error_map_loss(err, xyz, sym.target, full, beta=cfg.beta).mean(),
                 "mask": mask_loss(logit, b["mask_visib"]).mean()}
        total = terms["xyz"] + cfg.lambda_error * terms["error"] + cfg.lambda_mask * terms["mask"]
        if out.rotation_logits is not None:
            R_allo = ray_rotation(b["t"]).transpose(-1, -2) @ b["R"]
            terms["rot"] = rotation_class_loss(out.rotation_logits.float(), R_allo, self.grid,
                                               self.pools.R[labels].float(),
                                               self.pools.valid[labels]).mean()
            total = total + cfg.lambda_rot * terms["rot"]
        if cfg.lambda_proj > 0 and self.step >= cfg.proj_warmup_steps:
            proj, ok = self._projection(xyz, b, labels, sym.best)
            terms["proj"], terms["proj_ok"] = proj, ok
            total = total + cfg.lambda_proj * proj
        terms["loss"] = total
        return terms

    def _projection(self, xyz: Tensor, b: dict[str, Tensor], labels: Tensor, best: Tensor
                    ) -> tuple[Tensor, Tensor]:
        """Projection loss through BPnP; the ground truth is the pose of the symmetry member
        the transformer loss chose, T_gt S (the frame the prediction is in)."""
        S = xyz.shape[-1]
        visible = (b["mask_visib"] > 0).flatten(1)
        idx, valid = random_pixels(visible, self.cfg.proj_pixels, self.gen)
        x3d = gather_coordinates(xyz, idx, b["center"], b["scale"], torch.float64)
        x2d = torch.stack([idx % S, idx // S], -1).double()
        K = b["K"].double()
        res = bpnp(x2d, x3d, K, mask=valid)
        R_s, t_s = self.pools.R[labels, best], self.pools.t[labels, best]
        R_gt = b["R"].double() @ R_s
        t_gt = (b["R"].double() @ t_s[..., None])[..., 0] + b["t"].double()
        per = projection_loss(res.R, res.t, R_gt, t_gt, self.points[labels].double(), K,
                              image_size=float(S))
        ok = res.success
        loss = (per * ok).sum() / ok.sum().clamp_min(1)
        return loss.float(), ok.float().mean()

    def save_checkpoint(self, path: Path, *, final: bool) -> None:
        """Weights (final) or weights + optimiser state + counters (resumable)."""
        if final:
            save_checkpoint(path, self.net, step=self.step)
        else:
            save_checkpoint(path, self.net, optimizer=self.opt.state_dict(),
                            scheduler=self.sched.state_dict(), step=self.step, epoch=self.epoch)

    def plot(self) -> None:
        """losses.png from log.csv."""
        plot_curves(self.out / "log.csv", self.out / "losses.png",
                    curves=["loss", "xyz", "error", "mask", "rot", "proj", "lr"],
                    title=f"CoordNet ({self.cfg.encoder}) {self.out.name}")
