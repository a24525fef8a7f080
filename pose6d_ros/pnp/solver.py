"""`solve_pnp`: robust initialisation plus batched refinement, failures flagged per instance."""

from dataclasses import dataclass
from enum import IntEnum

import torch
from torch import Tensor

from pose6d_ros.core.camera import check_intrinsics
from pose6d_ros.pnp.init import opencv_init
from pose6d_ros.pnp.levenberg_marquardt import refine
from pose6d_ros.pnp.multistart import INIT_MULTISTART, multistart_init
from pose6d_ros.pnp.reprojection import Reprojection


class PnPStatus(IntEnum):
    """Outcome of one instance's solve."""

    OK = 0
    TOO_FEW_POINTS = 1
    INIT_FAILED = 2
    DEGENERATE = 3
    BEHIND_CAMERA = 4
    NUMERICAL = 5


@dataclass(frozen=True)
class PnPOptions:
    """Settings of `solve_pnp`; the defaults suit coordinate-network correspondences."""

    # Initial pose: "multistart", batched on the points' device (pnp/multistart.py), or one
    # of OpenCV's solvers, one instance at a time on the CPU: sqpnp, epnp, ap3p, iterative.
    # "auto": multistart for points on a GPU (no host round trip), sqpnp on the CPU (faster
    # there when most correspondences are inliers).
    method: str = "auto"
    starts: int = 32  # starting rotations per instance of "multistart"
    ransac: bool = True  # RANSAC over the initial solver; its inliers are kept for refinement
    reprojection_px: float = 3.0  # RANSAC inlier threshold in pixels
    ransac_iterations: int = 150
    confidence: float = 0.99
    min_points: int = 6  # fewer valid points (or RANSAC inliers) fail the instance
    max_iterations: int = 30  # Levenberg-Marquardt iterations
    step_tolerance: float = 1e-10
    degenerate_eigenvalue: float = 1e-10  # of the normalised Gauss-Newton matrix


DEFAULT_OPTIONS = PnPOptions()


@dataclass(frozen=True)
class PnPResult:
    """Poses of `B` instances with what the solver knows about them."""

    R: Tensor  # (B, 3, 3) rotation, object to camera
    t: Tensor  # (B, 3) translation in the units of the 3D points
    inliers: Tensor  # (B, N) bool, the points the refinement used
    status: Tensor  # (B,) int64, PnPStatus values
    cost: Tensor  # (B,) weighted squared reprojection error at the solution (px^2)
    iterations: Tensor  # (B,) refinement iterations

    @property
    def success(self) -> Tensor:
        """`(B,)` bool: the instance has a pose."""
        return self.status == PnPStatus.OK


def check_correspondences(x2d: Tensor, x3d: Tensor, K: Tensor, weights: Tensor | None,
                          mask: Tensor | None) -> Tensor:
    """Validate shapes (raising ValueError that names the argument); return `K (B, 3, 3)`."""
    if x2d.dim() != 3 or x2d.shape[-1] != 2:
        raise ValueError(f"x2d: expected shape (B, N, 2), got {tuple(x2d.shape)}")
    B, N = x2d.shape[:2]
    if x3d.shape != (B, N, 3):
        raise ValueError(f"x3d: expected shape ({B}, {N}, 3) to match x2d, got {tuple(x3d.shape)}")
    for name, value in (("weights", weights), ("mask", mask)):
        if value is not None and value.shape != (B, N):
            raise ValueError(f"{name}: expected shape ({B}, {N}), got {tuple(value.shape)}")
    if K.dim() == 2:
        K = K.expand(B, 3, 3)
    if K.shape != (B, 3, 3):
        raise ValueError(f"K: expected shape (3, 3) or ({B}, 3, 3), got {tuple(K.shape)}")
    check_intrinsics(K)
    return K


def channels_first(x2d: Tensor, x3d: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """Float64 copies of the points in the layouts of `Reprojection`: `x (2, B, N)` and
    homogeneous `[1; z] (B, 4, N)`, with the points `~valid (B, N)` at x = 0, z = 0 (padding
    may hold NaN, and 0 * NaN would poison sums over points)."""
    B, N = valid.shape
    x = torch.empty(2, B, N, dtype=torch.float64, device=x2d.device)
    x.copy_(x2d.permute(2, 0, 1)).masked_fill_(~valid, 0.0)
    X1 = torch.empty(B, 4, N, dtype=torch.float64, device=x3d.device)
    X1[:, 0] = 1.0
    X1[:, 1:].copy_(x3d.mT).masked_fill_(~valid[:, None], 0.0)
    return x, X1


def solve_pnp(x2d: Tensor, x3d: Tensor, K: Tensor, *, weights: Tensor | None = None,
              mask: Tensor | None = None, init: tuple[Tensor, Tensor] | None = None,
              options: PnPOptions = DEFAULT_OPTIONS) -> PnPResult:
    """Poses minimising the weighted reprojection error of 2D-3D correspondences.

    Args:
        x2d: `(B, N, 2)` pixel coordinates. x3d: `(B, N, 3)` object points.
        K: `(3, 3)` or `(B, 3, 3)` intrinsics.
        weights: `(B, N)` non-negative per-point weights (default 1).
        mask: `(B, N)` bool, points that exist (padding is False).
        init: `(R (B, 3, 3), t (B, 3))` to start from instead of OpenCV; then every valid
            point is an inlier.

    Returns:
        A PnPResult in float64 on the inputs' device; failed instances are flagged in
        `status`, never raised.

    Example:
        >>> res = solve_pnp(x2d, x3d, K)
        >>> R, t = res.R[res.success], res.t[res.success]
    """
    K = check_correspondences(x2d, x3d, K, weights, mask)
    f64 = torch.float64
    x2d, x3d, K = x2d.detach().to(f64), x3d.detach().to(f64), K.detach().to(f64)
    B, N = x2d.shape[:2]
    w = torch.ones(B, N, dtype=f64, device=x2d.device) if weights is None \
        else weights.detach().to(f64)
    valid = x2d.isfinite().all(-1) & x3d.isfinite().all(-1) & w.isfinite() & (w > 0)
    if mask is not None:
        valid &= mask.to(torch.bool)
    x, X1 = channels_first(x2d, x3d, valid)
    enough = valid.sum(-1) >= options.min_points

    method = init_method(options, x2d.device)
    if init is None and method == INIT_MULTISTART:
        R, t, inliers, ok = multistart_init(x, X1, K, valid, starts=options.starts,
                                            reprojection_px=options.reprojection_px,
                                            min_points=options.min_points)
    elif init is None:
        R, t, inliers, ok = opencv_init(
            x2d, x3d, K, valid, method=method, ransac=options.ransac,
            reprojection_px=options.reprojection_px, iterations=options.ransac_iterations,
            confidence=options.confidence, min_points=options.min_points)
    else:
        R, t = init[0].detach().to(f64).expand(B, 3, 3), init[1].detach().to(f64).expand(B, 3)
        inliers, ok = valid & enough[:, None], enough.clone()
    objective = Reprojection(X1, x, K, torch.where(inliers, w, 0.0))
    R, t, f, JtJ, iterations = refine(R, t, objective, max_iterations=options.max_iterations,
                                      step_tolerance=options.step_tolerance)

    status = torch.full((B,), PnPStatus.OK, dtype=torch.long, device=x2d.device)
    depth_ok = ((objective.depth(R, t) > 0) | ~inliers).all(-1)
    finite = R.isfinite().all((-1, -2)) & t.isfinite().all(-1) & f.isfinite()
    degenerate = is_degenerate(JtJ, options.degenerate_eigenvalue)
    status[degenerate] = PnPStatus.DEGENERATE
    status[~depth_ok] = PnPStatus.BEHIND_CAMERA
    status[~finite] = PnPStatus.NUMERICAL
    status[~ok] = PnPStatus.INIT_FAILED
    status[~enough] = PnPStatus.TOO_FEW_POINTS
    failed = status != PnPStatus.OK
    eye = torch.eye(3, dtype=f64, device=x2d.device)
    R = torch.where(failed[:, None, None], eye, R)
    t = torch.where(failed[:, None], torch.zeros_like(t), t)
    f = torch.where(failed, torch.zeros_like(f), f)
    return PnPResult(R=R, t=t, inliers=inliers & ~failed[:, None], status=status, cost=f,
                     iterations=iterations)


def init_method(options: PnPOptions, device: torch.device) -> str:
    """The initialisation `options.method` names for points on `device` ("auto" resolved)."""
    if options.method == "auto":
        return INIT_MULTISTART if device.type == "cuda" else "sqpnp"
    return options.method


def is_degenerate(JtJ: Tensor, threshold: float) -> Tensor:
    """`(B,)` bool: the symmetric matrix `(B, 6, 6)`, scaled to a unit diagonal, has an
    eigenvalue below `threshold` (it is nearly rank deficient)."""
    d = torch.diagonal(JtJ, dim1=-2, dim2=-1)
    scale = torch.where(d > 0, d.rsqrt(), torch.zeros_like(d))
    C = scale[:, :, None] * JtJ * scale[:, None, :]
    finite = C.isfinite().all((-1, -2))
    C = torch.where(finite[:, None, None], C, torch.zeros_like(C))
    # Smallest eigenvalue >= threshold  <=>  C - threshold I is positive definite; a
    # Cholesky test never raises on ill-conditioned input, unlike eigvalsh.
    eye = torch.eye(6, dtype=C.dtype, device=C.device)
    info = torch.linalg.cholesky_ex(C - threshold * eye).info
    return (info != 0) | (d <= 0).any(-1) | ~finite
