"""The depth term: pose hypotheses aligned with a registered depth image, and verified by it.

Each hypothesis takes the visible surface points of its object's nearest sparse view
(`viewpoint_models.py`). Projected into the depth image, each point meets the measured
surface at its pixel (projective association, as in KinectFusion and ICG's depth modality):
- `align`: the distance along the line of sight is the weakest part of an RGB pose. Every
  hypothesis slides along its ray by the offset that most of its points agree on (a 1-D
  vote, robust to occluders in front and the table behind).
- `refine`: robust point-to-plane ICP, a damped Gauss-Newton step on the 6-DoF pose per
  iteration, with an association distance that shrinks; points in another instance's mask
  or far from the measured surface do not pull.
- `score`: the share of points that sit on the measured surface, where points the sensor saw
  through (the object would be in front of the measured surface) count against the pose and
  hidden ones (behind it) half against. That share cannot see a pose too small for the
  object (all its points on the surface, much of the surface left over), so where the
  instance's visible box is given, the score is also multiplied by the IoU of that box with
  the box around the confirmed points.
All hypotheses at once, no Python loop over them; without depth nothing here runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from pose6d_ros.core.boxes import box_iou_xywh, points_box
from pose6d_ros.refine.region import limited_update, solve_damped
from pose6d_ros.refine.viewpoint_models import NearestView, ViewpointModel, stack_views

_SEARCH_RANGE = 0.5  # metres: the farthest `search` slides a pose along its ray


@dataclass(frozen=True)
class DepthConfig:
    """How depth aligns, refines and verifies poses."""

    iterations: int = 10  # ICP iterations
    # Association distance (metres) of the first and the last iteration: a point further
    # from the measured surface at its pixel does not pull.
    inlier_start: float = 0.03
    inlier_end: float = 0.008
    # Residual scale (metres) of the robust (Geman-McClure) weights: sensor noise and the
    # mesh's own error.
    residual_scale: float = 0.004
    damping: float = 1e-3  # Levenberg-Marquardt damping, relative to the normal matrix
    max_step_deg: float = 5.0  # largest rotation per iteration
    max_step_m: float = 0.03  # largest translation per iteration
    # Along-the-ray alignment: points whose offsets are within this (metres) vote together.
    align_window: float = 0.01
    agree: float = 0.01  # metres: a point this close to the measured surface agrees
    hidden_weight: float = 0.5  # how much a point behind the measured surface counts against
    min_points: int = 8  # fewer usable points: the step (or the score) is skipped
    # With templates: this many more hypotheses per instance, the templates whose poses
    # slid onto the measured surface agree best with it (plus `search_similarity` times
    # their image similarity), spread apart (`search`; docs/depth.md).
    search_k: int = 5
    search_similarity: float = 0.5
    search_separation_deg: float = 25.0
    search_stride: int = 3  # every n-th visible surface point, for the search only
    # The best this many searched templates of each instance are searched again placed with
    # their silhouette's edges on the visible box's edges (`edge_placements`; 0: not).
    search_edge_pool: int = 48
    # With the instances' visible boxes, the score is multiplied by the IoU of the box with
    # the box around the confirmed points to this power (0: boxes are not used).
    box_power: float = 1.0

    def __post_init__(self) -> None:
        if self.iterations < 0 or not 0 < self.inlier_end <= self.inlier_start:
            raise ValueError("depth: need iterations >= 0 and 0 < inlier_end <= inlier_start")
        if self.search_edge_pool < 0:
            raise ValueError(f"depth: search_edge_pool: expected >= 0, got "
                             f"{self.search_edge_pool}")
        if self.box_power < 0:
            raise ValueError(f"depth: box_power: expected >= 0, got {self.box_power}")


@dataclass
class DepthChecked:
    """Hypotheses after the depth term and how well the depth image confirms them."""

    R: Tensor  # (N, 3, 3) float64
    t: Tensor  # (N, 3) float64
    score: Tensor  # (N,) in [0, 1], see the module docstring
    points: Tensor  # (N,) visible points with a depth reading at their pixel


class DepthRefiner:
    """Aligns, refines and scores poses of the objects whose viewpoint models it holds."""

    def __init__(self, models: Sequence[ViewpointModel], config: DepthConfig | None = None,
                 *, device: str | torch.device = "cpu") -> None:
        self.config = config or DepthConfig()
        self.device = torch.device(device)
        self.nearest = NearestView(models, device)
        self.points = stack_views(models, "surface", device)
        self.normals = stack_views(models, "surface_normals", device)
        self.contours = stack_views(models, "points", device)

    def __call__(self, depth: Tensor, K: Tensor, labels: Tensor, R: Tensor, t: Tensor,
                 masks: Tensor | None = None, mask_index: Tensor | None = None, *,
                 boxes: Tensor | None = None) -> DepthChecked:
        """Align, refine and score poses `R (N, 3, 3)`, `t (N, 3)` of objects `labels (N,)`
        against `depth (H, W)` float32 metres (0 = no reading) seen through `K (3, 3)`.
        `masks (M, H, W)` are instance mask probabilities, `mask_index (N,)` each pose's:
        points in the image's other instances do not pull. `boxes (N, 4)` x, y, w, h: each
        pose's visible box, for the score (module docstring)."""
        cfg = self.config
        R, t = R.double().to(self.device), t.double().to(self.device)
        K = K.double().to(self.device)
        depth = depth.to(self.device).float()
        if len(R) == 0:
            empty = torch.zeros(0, dtype=torch.float64, device=self.device)
            return DepthChecked(R, t, empty, empty)
        others = None
        if masks is not None and mask_index is not None:
            # A pixel in another instance's mask (and not in its own) is someone else's.
            mine = masks[mask_index] > 0.5  # (N, H, W)
            others = (masks > 0.5).any(0)[None] & ~mine
        t = self._align(depth, K, labels, R, t, others)
        for i in range(cfg.iterations):
            frac = i / max(cfg.iterations - 1, 1)
            radius = cfg.inlier_start * (cfg.inlier_end / cfg.inlier_start) ** frac
            R, t = self._step(depth, K, labels, R, t, others, radius)
        return self.score(depth, K, labels, R, t, boxes=boxes)

    @torch.no_grad()
    def search(self, depth: Tensor, K: Tensor, labels: Tensor, R: Tensor, t: Tensor, *,
               boxes: Tensor | None = None) -> DepthChecked:
        """Many rough poses `R (N, 3, 3)`, `t (N, 3)` (e.g. every template of an instance)
        each slid along its ray onto the measured surface by a binned vote, then scored as
        `score` does (with `boxes (N, 4)`) on every `search_stride`-th point; no ICP. Cheap
        enough for thousands of poses per instance; a pose with too few readings scores 0."""
        cfg = self.config
        R, t = R.double().to(self.device), t.double().to(self.device)
        K = K.double().to(self.device)
        depth = depth.to(self.device).float()
        X, _, _, view = self._surface(labels, R, t, cfg.search_stride)
        P, ok, _ = self._measured(depth, K, X, None)
        offset = (P[..., 2] - X[..., 2]).clamp(-_SEARCH_RANGE, _SEARCH_RANGE)
        n_bins = int(2 * _SEARCH_RANGE / cfg.align_window) + 1
        bins = ((offset + _SEARCH_RANGE) / cfg.align_window).round().long()
        votes = torch.zeros(len(X), n_bins + 2, device=X.device)
        votes.scatter_add_(1, bins + 1, ok.float())
        votes = votes[:, :-2] + votes[:, 1:-1] + votes[:, 2:]  # a window of three bins
        centre = votes.argmax(1).float() * cfg.align_window - _SEARCH_RANGE
        members = ok & ((offset - centre[:, None]).abs() <= 1.5 * cfg.align_window)
        shift = (offset * members).sum(1) / members.sum(1).clamp_min(1)
        usable = members.sum(1) >= cfg.min_points
        z = t[:, 2].clamp_min(1e-6)
        scale = torch.where(usable, (z + shift.double()) / z, torch.ones_like(z))
        # Along its own ray a pose keeps its nearest view.
        out = self.score(depth, K, labels, R, t * scale.clamp(0.2, 5.0)[:, None],
                         stride=cfg.search_stride, boxes=boxes, view=view)
        # Unlike a refined pose, a searched one with too few readings is no candidate.
        out.score = torch.where(usable, out.score, torch.zeros_like(out.score))
        return out

    def _surface(self, labels: Tensor, R: Tensor, t: Tensor, stride: int = 1,
                 view: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Visible surface points `(N, S, 3)` and normals in the camera frame (float32) of each
        pose's nearest view (every `stride`-th; or of `view (N,)`), the object origins
        `(N, 3)` and the views `(N,)`."""
        best = self.nearest(labels, R, t) if view is None else view
        Rf, tf = R.float(), t.float()
        X = self.points[labels, best, ::stride] @ Rf.transpose(1, 2) + tf[:, None]
        N = self.normals[labels, best, ::stride] @ Rf.transpose(1, 2)
        return X, N, tf, best

    @staticmethod
    def _measured(depth: Tensor, K: Tensor, X: Tensor, others: Tensor | None
                  ) -> tuple[Tensor, Tensor, Tensor]:
        """For camera-frame points `X (N, S, 3)`: the measured 3D point at each one's pixel
        `(N, S, 3)`, whether there is one `(N, S)` (inside the image, a reading, and not
        another instance's pixel), and the points' image positions `(N, S, 2)`."""
        H, W = depth.shape
        Kf = K.float()
        z = X[..., 2]
        uv = (X @ Kf.T)[..., :2] / z.clamp_min(1e-6)[..., None]
        px = uv.round().long()
        inside = ((px[..., 0] >= 0) & (px[..., 0] < W) & (px[..., 1] >= 0) & (px[..., 1] < H)
                  & (z > 0))
        u, v = px[..., 0].clamp(0, W - 1), px[..., 1].clamp(0, H - 1)
        d = depth[v, u]
        ok = inside & (d > 0)
        if others is not None:
            n = torch.arange(len(X), device=X.device)[:, None].expand_as(u)
            ok &= ~others[n, v, u]
        ray = torch.stack([(u.float() - Kf[0, 2]) / Kf[0, 0], (v.float() - Kf[1, 2]) / Kf[1, 1],
                           torch.ones_like(d)], -1)
        return ray * d[..., None], ok, uv

    def _align(self, depth: Tensor, K: Tensor, labels: Tensor, R: Tensor, t: Tensor,
               others: Tensor | None) -> Tensor:
        """Translations `(N, 3)` slid along their rays so most points meet the surface."""
        cfg = self.config
        X, _, _, _ = self._surface(labels, R, t)
        P, ok, _ = self._measured(depth, K, X, others)
        offset = P[..., 2] - X[..., 2]  # (N, S) how much further the surface is, along z
        close = (offset[:, :, None] - offset[:, None, :]).abs() <= cfg.align_window
        votes = (close & ok[:, :, None] & ok[:, None, :]).sum(2)  # (N, S) per candidate
        votes = torch.where(ok, votes, torch.full_like(votes, -1))
        best = votes.argmax(1)
        n = torch.arange(len(X), device=X.device)
        centre = offset[n, best]
        members = ok & ((offset - centre[:, None]).abs() <= cfg.align_window)
        shift = (offset * members).sum(1) / members.sum(1).clamp_min(1)
        usable = votes[n, best] >= cfg.min_points
        z = t[:, 2].clamp_min(1e-6)
        scale = torch.where(usable, (z + shift.double()) / z, torch.ones_like(z))
        return t * scale.clamp(0.2, 5.0)[:, None]

    def _step(self, depth: Tensor, K: Tensor, labels: Tensor, R: Tensor, t: Tensor,
              others: Tensor | None, radius: float) -> tuple[Tensor, Tensor]:
        """One damped, robust point-to-plane Gauss-Newton step of every pose."""
        cfg = self.config
        X, N, origin, _ = self._surface(labels, R, t)
        P, ok, _ = self._measured(depth, K, X, others)
        ok &= (P - X).norm(dim=-1) <= radius
        r = ((P - X) * N).sum(-1)  # (N, S) signed distance along the model normal
        w = ok.float() / (1 + (r / cfg.residual_scale) ** 2) ** 2
        # d(n . (P - X)) / d(omega, v) with X turning about the object's origin.
        J = torch.cat([torch.cross(X - origin[:, None], N, dim=-1), N], -1)  # (N, S, 6)
        A = torch.einsum("ns,nsi,nsj->nij", w, J, J).double()
        b = torch.einsum("ns,nsi,ns->ni", w, J, r).double()
        diag = torch.diagonal(A, dim1=1, dim2=2)
        scale = diag.mean(1, keepdim=True)
        # Damping relative to the whole matrix: a flat face leaves some directions
        # unconstrained, and those should not move.
        A = A + torch.diag_embed(cfg.damping * diag + 1e-3 * scale + 1e-12)
        delta = solve_damped(A, b, ok.sum(1) >= cfg.min_points)
        return limited_update(R, t, delta, cfg.max_step_deg, cfg.max_step_m)

    def score(self, depth: Tensor, K: Tensor, labels: Tensor, R: Tensor, t: Tensor, *,
              stride: int = 1, boxes: Tensor | None = None, view: Tensor | None = None
              ) -> DepthChecked:
        """Poses `R (N, 3, 3)`, `t (N, 3)` as they are, with their agreement with the measured
        surface `depth (H, W)` (module docstring), on every `stride`-th point; with `boxes
        (N, 4)` x, y, w, h, times the IoU of each box with its confirmed points' box. `view
        (N,)`: the poses' nearest views where already known."""
        cfg = self.config
        R, t = R.double().to(self.device), t.double().to(self.device)
        K = K.double().to(self.device)
        depth = depth.to(self.device).float()
        X, _, _, view = self._surface(labels, R, t, stride, view)
        P, ok, uv = self._measured(depth, K, X, None)
        gap = P[..., 2] - X[..., 2]  # > 0: the sensor saw past where the object would be
        on = ok & (gap.abs() <= cfg.agree)
        through = ok & (gap > cfg.agree)
        hidden = ok & (gap < -cfg.agree)
        total = on.sum(1) + through.sum(1) + cfg.hidden_weight * hidden.sum(1)
        score = on.sum(1).double() / total.double().clamp_min(1.0)
        seen = ok.sum(1)
        # Too few readings say nothing either way.
        score = torch.where(seen >= cfg.min_points, score, torch.ones_like(score))
        if boxes is not None and cfg.box_power > 0:
            confirmed = self._silhouette_box(K, labels, R, t, view, uv, on)
            iou = box_iou_xywh(confirmed, boxes.to(uv))
            fit = iou.double() ** cfg.box_power
            score = score * torch.where(on.sum(1) >= cfg.min_points, fit, torch.ones_like(fit))
        return DepthChecked(R, t, score, seen.double())

    @torch.no_grad()
    def edge_placements(self, K: Tensor, labels: Tensor, R: Tensor, t: Tensor, boxes: Tensor
                        ) -> Tensor:
        """`(N, 8, 3)`: for poses `R (N, 3, 3)`, `t (N, 3)` and their visible boxes `boxes
        (N, 4)` x, y, w, h, translations at the same depth that put the silhouette's left or
        right edge (or neither) on the box's, and its top or bottom edge (or neither): all
        but the pose as it is. An occluded or truncated object's visible box is the
        silhouette cut short on some sides, so it shares the others, not the centre."""
        R, t = R.double().to(self.device), t.double().to(self.device)
        sil = self._silhouette(K, labels, R, t, self.nearest(labels, R, t)).double()
        b = boxes.to(sil)
        lo, hi = b[:, :2] - sil[:, :2], b[:, :2] + b[:, 2:] - sil[:, :2] - sil[:, 2:]
        moves = torch.stack([lo, hi, torch.zeros_like(lo)], 1)  # (N, 3, 2) per axis
        du = moves[:, :, None, 0].expand(-1, 3, 3)
        dv = moves[:, None, :, 1].expand(-1, 3, 3)
        shift = torch.stack([du, dv], -1).reshape(-1, 9, 2)[:, :8]  # not (0, 0)
        Kd = K.double().to(self.device)
        step = torch.stack([shift[..., 0] / Kd[0, 0], shift[..., 1] / Kd[1, 1],
                            torch.zeros_like(shift[..., 0])], -1)
        return t[:, None] + step * t[:, None, 2:]

    def _silhouette(self, K: Tensor, labels: Tensor, R: Tensor, t: Tensor, view: Tensor
                    ) -> Tensor:
        """`(N, 4)` x, y, w, h around the projected contour points of each pose's `view`."""
        C = self.contours[labels, view] @ R.float().transpose(1, 2) + t.float()[:, None]
        uc = (C @ K.float().T)[..., :2] / C[..., 2:].clamp_min(1e-6)
        return points_box(uc, torch.ones_like(uc[..., 0], dtype=torch.bool))

    def _silhouette_box(self, K: Tensor, labels: Tensor, R: Tensor, t: Tensor, view: Tensor,
                        uv: Tensor, keep: Tensor) -> Tensor:
        """`(N, 4)` x, y, w, h: the box around the surface points `uv (N, S, 2)` where `keep
        (N, S)`, each side pushed out by how far the silhouette (the view's contour points)
        reaches past all the surface points: surface points are a sample, and their box
        falls short of the silhouette's."""
        sil = self._silhouette(K, labels, R, t, view)
        surf = points_box(uv, torch.ones_like(keep))
        lo = (surf[:, :2] - sil[:, :2]).clamp_min(0)
        hi = (sil[:, :2] + sil[:, 2:] - surf[:, :2] - surf[:, 2:]).clamp_min(0)
        box = points_box(uv, keep)
        return torch.cat([box[:, :2] - lo, box[:, 2:] + lo + hi], 1)

