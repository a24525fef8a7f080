"""Region-based render-and-compare refinement of pose hypotheses, batched (RBOT / SRT3D).

Each hypothesis projects the contour points of its object's nearest sparse view
(`viewpoint_models.py`). Along each point's projected normal, a short line of pixels is
sampled; colour histograms of the line halves inside and outside the contour give each
pixel a foreground probability (mixed with the instance's mask probability where a mask
exists). The likeliest place of the contour on each line, its mean and variance, is the
measurement; a damped Gauss-Newton step on the 6-DoF pose moves every projected contour
point towards it. Coarse-to-fine: long, sparse lines first, then short, dense ones. A fixed
number of iterations and no Python loop over hypotheses.

The final iteration also scores each hypothesis (`contour`): the share of its contour
points whose line says the contour is where the pose puts it. `RefineConfig.tracking` is the
short schedule of a pose carried over from the previous video frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor
from torch.nn import functional

from pose6d_ros.core.rotations import axis_angle_to_matrix
from pose6d_ros.refine.viewpoint_models import NearestView, ViewpointModel, stack_views


@dataclass(frozen=True)
class RefineConfig:
    """The schedule and the measurement model."""

    # Pixels between line samples per stage and iterations per stage: coarse to fine.
    scales: tuple[float, ...] = (8.0, 4.0, 2.0, 1.0)
    iterations: tuple[int, ...] = (4, 4, 4, 3)
    half_line: int = 8  # samples on each side of the contour point
    bins: int = 8  # colour histogram bins per channel
    mask_weight: float = 0.25  # share of the mask probability in a pixel's foreground odds
    damping: float = 0.05  # Levenberg-Marquardt damping, relative to the normal matrix
    # Log-likelihoods of line samples are not independent (blur, texture): scaled by this
    # before the contour posterior, which keeps one line from being overconfident.
    temper: float = 0.3
    accept_px: float = 1.5  # |contour offset| within which a contour point agrees
    # > 0: a contour point agrees only where its line is also sure of the contour (posterior
    # std within this many pixels, finest lines). A flat or plain image puts the posterior's
    # mean at the middle of every line, so without this an empty region agrees everywhere;
    # a uniform posterior's std is 4.9 px, a rendered object's edge about 1.5-2 px.
    confident_std_px: float = 0.0
    # Largest step per iteration: rotation (degrees) and translation (share of the distance);
    # a bad line's pull cannot throw a pose far in one go.
    max_step_deg: float = 5.0
    max_step_distance: float = 0.02
    # Pull of the starting translation, relative to the contour's own translation weight:
    # a contour that fits badly would rather shrink the object into the distance.
    translation_prior: float = 0.3

    def __post_init__(self) -> None:
        if len(self.scales) != len(self.iterations) or not self.scales:
            raise ValueError("refine: scales and iterations need one entry per stage")
        if min(self.iterations) < 0:
            raise ValueError(f"refine: iterations must be >= 0, got {self.iterations}")

    def tracking(self, iterations: int) -> RefineConfig:
        """The schedule of a tracked pose (it starts within a few pixels of the object):
        `iterations` split over the two finest line spacings (the coarser one takes the odd
        one), and agreement only where the contour is confident (`TRACK_CONFIDENT_STD_PX`)."""
        if iterations < 0:
            raise ValueError(f"refine_iterations: expected >= 0, got {iterations}")
        scales = self.scales[-2:]
        split = ((iterations,) if len(scales) == 1 else
                 (iterations - iterations // 2, iterations // 2))
        return replace(self, scales=scales, iterations=split,
                       confident_std_px=TRACK_CONFIDENT_STD_PX)


# On renders (cat, driller, duck): true poses keep 85-100 % of their contour points within
# 3 px, poses 15 degrees off 2-57 %, the image without the object 0 %.
TRACK_CONFIDENT_STD_PX = 3.0


@dataclass
class Refined:
    """Refined hypotheses and how well their contours agree with the image."""

    R: Tensor  # (N, 3, 3) float64
    t: Tensor  # (N, 3) float64
    contour: Tensor  # (N,) in [0, 1]: share of contour points that agree (final stage)


class RegionRefiner:
    """Refines poses of the objects whose viewpoint models it holds (see module doc)."""

    def __init__(self, models: Sequence[ViewpointModel], config: RefineConfig | None = None,
                 *, device: str | torch.device = "cpu") -> None:
        self.config = config or RefineConfig()
        self.device = torch.device(device)
        self.nearest = NearestView(models, device)
        self.points = stack_views(models, "points", device)
        self.normals = stack_views(models, "normals", device)

    def _views(self, labels: Tensor, R: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Contour points and normals `(N, P, 3)`, model frame, of each pose's nearest view."""
        best = self.nearest(labels, R, t)
        return self.points[labels, best], self.normals[labels, best]

    def __call__(self, image: Tensor, K: Tensor, labels: Tensor, R: Tensor, t: Tensor,
                 masks: Tensor | None = None, mask_index: Tensor | None = None) -> Refined:
        """Refine poses `R (N, 3, 3)`, `t (N, 3)` of objects `labels (N,)` in `image (3, H,
        W)` float in [0, 1] seen through `K (3, 3)`. `masks (M, H, W)` are instance mask
        probabilities over the image, `mask_index (N,)` each hypothesis's mask."""
        cfg = self.config
        R, t = R.double().clone(), t.double().clone()
        t_start = t.clone()
        K = K.double().to(self.device)
        if len(R) == 0:
            return Refined(R, t, torch.zeros(0, dtype=torch.float64, device=self.device))
        for scale, iters in zip(cfg.scales, cfg.iterations, strict=True):
            for _ in range(iters):
                A, b, ok = self.contour_system(image, K, labels, R, t, scale, t_start, masks,
                                               mask_index)
                R, t = self.apply(R, t, solve_damped(A, b, ok))
        return Refined(R, t, self.agreement(image, K, labels, R, t, masks, mask_index))

    def agreement(self, image: Tensor, K: Tensor, labels: Tensor, R: Tensor, t: Tensor,
                  masks: Tensor | None = None, mask_index: Tensor | None = None) -> Tensor:
        """`(N,)` share of each pose's contour points that the image puts where the pose
        does (within `accept_px`, on the finest lines); arguments as `__call__`'s."""
        cfg = self.config
        K = K.double().to(self.device)
        X, N = self._views(labels, R, t)
        Xc, n2 = self._project(K, R, t, X, N)
        mean, var, valid = self._measure(image, K, Xc, n2, cfg.scales[-1], masks, mask_index)
        agree = (mean.abs() <= cfg.accept_px) & valid
        if cfg.confident_std_px > 0:
            agree &= var <= cfg.confident_std_px**2
        return agree.sum(1).double() / valid.sum(1).clamp_min(1).double()

    @staticmethod
    def _project(K: Tensor, R: Tensor, t: Tensor, X: Tensor, N: Tensor
                 ) -> tuple[Tensor, Tensor]:
        """Contour points in the camera frame `(N, P, 3)` and their normals' unit image
        directions `(N, P, 2)`, float32 (only the 6 x 6 solve needs float64)."""
        R, t, K = R.float(), t.float(), K.float()
        Xc = X @ R.transpose(1, 2) + t[:, None]
        return Xc, _projected_normals(K, Xc, N @ R.transpose(1, 2))

    def _measure(self, image: Tensor, K: Tensor, Xc: Tensor, n2: Tensor, scale: float,
                 masks: Tensor | None, mask_index: Tensor | None
                 ) -> tuple[Tensor, Tensor, Tensor]:
        """Per contour point `(N, P)` (`Xc`, `n2` from `_project`): the contour's offset
        along its normal (pixels, mean and variance of its posterior) and whether the line
        could be measured."""
        cfg = self.config
        z = Xc[..., 2].clamp_min(1e-6)
        uv = (Xc @ K.float().T)[..., :2] / z[..., None]
        L = cfg.half_line
        offsets = (torch.arange(2 * L, dtype=uv.dtype, device=uv.device) - L + 0.5) * scale
        pos = uv[:, :, None] + offsets[:, None] * n2[:, :, None]  # (N, P, 2L, 2)
        H, W = image.shape[-2:]
        inside = ((pos[..., 0] >= 0) & (pos[..., 0] <= W - 1) & (pos[..., 1] >= 0)
                  & (pos[..., 1] <= H - 1)).all(-1) & (Xc[..., 2] > 0)
        grid = torch.stack([pos[..., 0] / (W - 1) * 2 - 1, pos[..., 1] / (H - 1) * 2 - 1], -1)
        n, P = Xc.shape[:2]
        colours = functional.grid_sample(image[None].to(grid.dtype), grid.view(1, n, P * 2 * L, 2),
                                         align_corners=True)[0]  # (3, n, P * 2L)
        colours = colours.permute(1, 2, 0).reshape(n, P, 2 * L, 3)
        p_fg = self._colour_foreground(colours, inside)
        if masks is not None and mask_index is not None:
            # Every mask at every hypothesis's samples, then each hypothesis's own: cheaper
            # than a copy of a mask per hypothesis, with a few instances per frame.
            M = len(masks)
            m = functional.grid_sample(masks[:, None].to(grid.dtype),
                                       grid.reshape(1, -1, 1, 2).expand(M, -1, -1, -1),
                                       align_corners=True).view(M, n, P * 2 * L)
            m = m[mask_index, torch.arange(n, device=m.device)].view(n, P, 2 * L)
            p_fg = (1 - cfg.mask_weight) * p_fg + cfg.mask_weight * m
        p_fg = p_fg.clamp(0.05, 0.95)
        # The contour after j samples: samples < j foreground, samples >= j background.
        lf, lb = p_fg.log(), (1 - p_fg).log()
        zero = torch.zeros(n, P, 1, dtype=lf.dtype, device=lf.device)
        fg_before = torch.cat([zero, lf.cumsum(-1)], -1)  # (N, P, 2L + 1)
        bg_after = torch.cat([lb.flip(-1).cumsum(-1).flip(-1), zero], -1)
        post = torch.softmax(cfg.temper * (fg_before + bg_after), -1)
        where = (torch.arange(2 * L + 1, dtype=lf.dtype, device=lf.device) - L) * scale
        mean = (post * where).sum(-1)
        var = (post * where**2).sum(-1) - mean**2
        return mean, var, inside

    def _colour_foreground(self, colours: Tensor, inside: Tensor) -> Tensor:
        """`(N, P, 2L)` foreground probability of each line sample from per-hypothesis
        colour histograms of the line halves inside / outside the contour."""
        cfg = self.config
        b = cfg.bins
        q = (colours.clamp(0, 1) * (b - 1) + 0.5).long()
        idx = (q[..., 0] * b + q[..., 1]) * b + q[..., 2]  # (N, P, 2L)
        n, P, S = idx.shape
        half = torch.arange(S, device=idx.device) < S // 2  # samples inside the contour
        w = inside[..., None].expand(-1, -1, S).to(colours.dtype)
        fg = torch.zeros(n, b**3, dtype=colours.dtype, device=colours.device)
        bg = torch.zeros_like(fg)
        fg.scatter_add_(1, idx.flatten(1), (w * half).flatten(1))
        bg.scatter_add_(1, idx.flatten(1), (w * ~half).flatten(1))
        fg = fg / fg.sum(1, keepdim=True).clamp_min(1.0)
        bg = bg / bg.sum(1, keepdim=True).clamp_min(1.0)
        pf, pb = fg.gather(1, idx.flatten(1)), bg.gather(1, idx.flatten(1))
        return ((pf + 1e-6) / (pf + pb + 2e-6)).view(n, P, S)

    def contour_system(self, image: Tensor, K: Tensor, labels: Tensor, R: Tensor, t: Tensor,
                       scale: float, t_start: Tensor, masks: Tensor | None = None,
                       mask_index: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """The normal equations of one contour step of poses `R (N, 3, 3)`, `t (N, 3)` at
        line spacing `scale` (see `system`); arguments as `__call__`'s, `K` float64."""
        X, N = self._views(labels, R, t)
        Xc, n2 = self._project(K, R, t, X, N)
        mean, var, valid = self._measure(image, K, Xc, n2, scale, masks, mask_index)
        return self.system(K, R, t, Xc, n2, mean, var, valid, scale, t_start)

    def apply(self, R: Tensor, t: Tensor, delta: Tensor) -> tuple[Tensor, Tensor]:
        """Poses moved by `delta (N, 6)` (turn about the origin, shift; camera frame), each
        part limited to the largest step."""
        cfg = self.config
        return limited_update(R, t, delta, cfg.max_step_deg,
                              cfg.max_step_distance * t.norm(dim=1, keepdim=True))

    def system(self, K: Tensor, R: Tensor, t: Tensor, Xc: Tensor, n2: Tensor, mean: Tensor,
               var: Tensor, valid: Tensor, scale: float, t_start: Tensor
               ) -> tuple[Tensor, Tensor, Tensor]:
        """The damped normal equations `A (N, 6, 6)`, `b (N, 6)` float64 of the step that
        moves the projected contour by `mean`, and whether enough points were measured."""
        cfg = self.config
        tf, Kf = t.float(), K.float()
        x, y, z = Xc.unbind(-1)
        z = z.clamp_min(1e-6)
        fx, fy = Kf[0, 0], Kf[1, 1]
        # d(normal . uv) / d(Xc), then d(Xc) / d(omega, v) = [-[Xc - t]x | I]: the pose turns
        # about the object's origin, so turn and shift are nearly independent (and each can
        # be limited alone).
        gx, gy = n2[..., 0] * fx / z, n2[..., 1] * fy / z
        gz = -(n2[..., 0] * fx * x + n2[..., 1] * fy * y) / z**2
        g = torch.stack([gx, gy, gz], -1)  # (N, P, 3)
        J = torch.cat([torch.cross(Xc - tf[:, None], g, dim=-1), g], -1)  # (N, P, 6)
        w = valid.to(J.dtype) / (var + scale**2)
        A = torch.einsum("np,npi,npj->nij", w, J, J).double()
        b = torch.einsum("np,npi,np->ni", w, J, mean).double()
        diag = torch.diagonal(A, dim1=1, dim2=2)
        # Strongest on the coarse, ambiguous lines; gone on the finest.
        fade = (scale - cfg.scales[-1]) / max(cfg.scales[0] - cfg.scales[-1], 1e-9)
        prior = cfg.translation_prior * fade * diag[:, 3:].mean(1, keepdim=True)  # (N, 1)
        b[:, 3:] += prior * (t_start - t)
        A = A + torch.diag_embed(cfg.damping * diag + 1e-9)
        A[:, 3:, 3:] += torch.diag_embed(prior.expand(-1, 3))
        return A, b, valid.sum(1) >= 6


def solve_damped(A: Tensor, b: Tensor, ok: Tensor) -> Tensor:
    """`delta (N, 6)` solving `A (N, 6, 6) delta = b (N, 6)`; zero where `ok (N,)` is false
    or the solve is not finite."""
    delta = torch.linalg.solve(A, b[..., None])[..., 0]
    good = ok[:, None] & torch.isfinite(delta).all(1, keepdim=True)
    return torch.where(good, delta, torch.zeros_like(delta))


def limited_update(R: Tensor, t: Tensor, delta: Tensor, max_deg: float, max_move: Tensor | float
                   ) -> tuple[Tensor, Tensor]:
    """`R (N, 3, 3)`, `t (N, 3)` turned about the object origin by `delta[:, :3]` (axis-angle)
    and shifted by `delta[:, 3:]`, each part scaled down to at most `max_deg` degrees and
    `max_move` metres (a number or `(N, 1)`)."""
    rot, move = delta[:, :3], delta[:, 3:]
    angle = rot.norm(dim=1, keepdim=True)
    max_angle = torch.deg2rad(torch.tensor(max_deg, dtype=rot.dtype))
    rot = rot * (max_angle / angle.clamp_min(1e-12)).clamp(max=1.0)
    move = move * (max_move / move.norm(dim=1, keepdim=True).clamp_min(1e-12)).clamp(max=1.0)
    return axis_angle_to_matrix(rot) @ R, t + move


def _projected_normals(K: Tensor, Xc: Tensor, Nc: Tensor) -> Tensor:
    """Unit image directions `(N, P, 2)` of camera-frame normals `Nc` at points `Xc`."""
    x, y, z = Xc.unbind(-1)
    z = z.clamp_min(1e-6)
    du = K[0, 0] * (Nc[..., 0] / z - x * Nc[..., 2] / z**2)
    dv = K[1, 1] * (Nc[..., 1] / z - y * Nc[..., 2] / z**2)
    d = torch.stack([du, dv], -1)
    return d / d.norm(dim=-1, keepdim=True).clamp_min(1e-12)
