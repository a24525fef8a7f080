"""Initial PnP poses on the points' device: robust Levenberg-Marquardt from a fixed set of
starting rotations, every instance and start in one batch.

Each instance starts from `starts` well-spread rotations, with the translation that puts
the object points' centroid on the rays through the image points' centroid, at the depth
their spreads imply. Every start is refined with Cauchy-weighted least squares (iteratively
reweighted, so outliers fade), scored by the truncated squared reprojection error (MSAC)
and the best start per instance is kept with its inliers. Unlike a minimal-set RANSAC it
needs no per-instance solver calls and no host round trip, and flat point sets are no
special case.
"""

import torch
from torch import Tensor

from pose6d_ros.core.rotations import rotation_grid
from pose6d_ros.pnp.levenberg_marquardt import refine
from pose6d_ros.pnp.reprojection import Reprojection

INIT_MULTISTART = "multistart"  # the name of this initialisation in PnPOptions.method


def multistart_init(x: Tensor, X1: Tensor, K: Tensor, valid: Tensor, *, starts: int,
                    reprojection_px: float, min_points: int, points: int = 128,
                    rounds: int = 3, iterations: int = 8, seed: int = 0
                    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Best robust start per instance and its inliers.

    Args:
        x: `(2, B, N)` pixels, X1: `(B, 4, N)` homogeneous object points `[1; z]` (the
            layouts of `Reprojection`, zero at invalid points). K: `(B, 3, 3)`. float64.
        valid: `(B, N)` bool, the points that may be used.
        points: the starts are refined on at most this many valid points per instance
            (drawn at random with `seed`); the inliers are then judged on all of them.
        rounds: reweighting rounds of `iterations` LM iterations each.

    Returns:
        `R (B, 3, 3)`, `t (B, 3)`, `inliers (B, N)` bool (subset of `valid`) and `ok (B,)`
        bool, like `opencv_init`; failed instances get R = I, t = 0.
    """
    full_x, full_X1, full_valid = x, X1, valid
    B, N = valid.shape
    S = starts
    dev, f64 = x.device, x.dtype
    if points < N:
        g = torch.Generator(device=dev).manual_seed(seed)
        keys = torch.rand(B, N, generator=g, device=dev) + valid.to(torch.float32) * 2
        idx = keys.topk(points, dim=1).indices
        x = x.gather(2, idx.expand(2, B, points)).contiguous()
        X1 = X1.gather(2, idx[:, None].expand(B, 4, points)).contiguous()
        valid = valid.gather(1, idx)
        N = points
    w = valid.to(f64)
    count = w.sum(1).clamp_min(1.0)
    z = X1[:, 1:].mT  # (B, N, 3)
    c3 = (z * w[..., None]).sum(1) / count[:, None]
    s3 = (((z - c3[:, None]).square().sum(-1) * w).sum(1) / count).sqrt()
    uv = x.permute(1, 2, 0)  # (B, N, 2)
    c2 = (uv * w[..., None]).sum(1) / count[:, None]
    s2 = (((uv - c2[:, None]).square().sum(-1) * w).sum(1) / count).sqrt()
    focal = (K[:, 0, 0] + K[:, 1, 1]) / 2
    depth = focal * s3 / s2.clamp_min(1e-6)
    ray = torch.linalg.solve(K, torch.cat([c2, torch.ones_like(c2[:, :1])], -1)[..., None])[..., 0]
    centre = ray / ray[:, 2:] * depth[:, None]  # (B, 3) where the centroid should be

    R0 = rotation_grid(S).to(dev, f64)
    R = R0.expand(B, S, 3, 3).reshape(B * S, 3, 3)
    t = (centre[:, None] - (R0 @ c3[:, None, :, None])[..., 0]).reshape(B * S, 3)

    def rep(t_: Tensor) -> Tensor:  # (B, ...) -> (B * S, ...)
        return t_.repeat_interleave(S, 0)

    Xs, xs, Ks, valid_s = rep(X1), rep(x.transpose(0, 1)).transpose(0, 1).contiguous(), rep(K), \
        rep(valid)
    scale2 = (2.0 * reprojection_px) ** 2  # Cauchy scale
    weights = valid_s.to(f64)
    for _ in range(rounds):
        objective = Reprojection(Xs, xs, Ks, weights)
        R, t = refine(R, t, objective, max_iterations=iterations, step_tolerance=1e-8)[:2]
        err2 = objective.project(R, t).e.square().sum(0)
        weights = torch.where(valid_s, 1.0 / (1.0 + err2 / scale2), 0.0)

    thr2 = reprojection_px ** 2

    def msac(objective: Reprojection, R_: Tensor, t_: Tensor, valid_: Tensor
             ) -> tuple[Tensor, Tensor]:
        """Truncated cost `(n,)` and inliers `(n, N)` of poses on their points."""
        err2_ = objective.project(R_, t_).e.square().sum(0)
        inlier_ = valid_ & (objective.depth(R_, t_) > 0) & (err2_ < thr2)
        cost_ = torch.where(inlier_, err2_, thr2).masked_fill(~valid_, 0.0).sum(-1)
        finite_ = R_.isfinite().all((-1, -2)) & t_.isfinite().all(-1) & cost_.isfinite()
        return torch.where(finite_, cost_, torch.inf), inlier_

    cost = msac(Reprojection(Xs, xs, Ks, valid_s.to(f64)), R, t, valid_s)[0].view(B, S)
    best = cost.argmin(1) + torch.arange(B, device=dev) * S
    R, t = R[best], t[best]
    found, inliers = msac(Reprojection(full_X1, full_x, K, full_valid.to(f64)), R, t,
                          full_valid)
    ok = (full_valid.sum(1) >= min_points) & (inliers.sum(1) >= min_points) & found.isfinite()
    eye = torch.eye(3, dtype=f64, device=dev).expand(B, 3, 3)
    R = torch.where(ok[:, None, None], R, eye)
    t = torch.where(ok[:, None], t, torch.zeros_like(t))
    return R, t, inliers & ok[:, None], ok
