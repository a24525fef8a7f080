"""Initial poses from OpenCV (RANSAC with a minimal solver, or a plain SQPnP solve)."""

import cv2
import numpy as np
import torch
from torch import Tensor

from pose6d_ros.core.rotations import axis_angle_to_matrix

METHODS = {
    "sqpnp": cv2.SOLVEPNP_SQPNP,
    "epnp": cv2.SOLVEPNP_EPNP,
    "ap3p": cv2.SOLVEPNP_AP3P,
    "iterative": cv2.SOLVEPNP_ITERATIVE,
}


def opencv_init(x2d: Tensor, x3d: Tensor, K: Tensor, valid: Tensor, *, method: str,
                ransac: bool, reprojection_px: float, iterations: int, confidence: float,
                min_points: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Initial poses for each instance with OpenCV, on the CPU.

    Args:
        x2d: `(B, N, 2)` pixels. x3d: `(B, N, 3)` object points. K: `(B, 3, 3)`.
        valid: `(B, N)` bool, the points that may be used.

    Returns:
        `R (B, 3, 3)`, `t (B, 3)` float64 on the inputs' device, `inliers (B, N)` bool
        (subset of `valid`), and `ok (B,)` bool; failed instances get R = I, t = 0.
    """
    if method not in METHODS:
        raise ValueError(f"PnP init method: unknown {method!r}; choose auto, multistart or "
                         f"one of {sorted(METHODS)}")
    flag = METHODS[method]
    B, N = valid.shape
    x2d_np = x2d.detach().to("cpu", torch.float64).numpy()
    x3d_np = x3d.detach().to("cpu", torch.float64).numpy()
    K_np = K.detach().to("cpu", torch.float64).numpy()
    valid_np = valid.to("cpu").numpy()
    rvecs = np.zeros((B, 3))
    tvecs = np.zeros((B, 3))
    inliers = np.zeros((B, N), dtype=bool)
    ok = np.zeros(B, dtype=bool)
    # OpenCV solves one instance per call; this loop is the initialisation only, the
    # refinement that follows is batched.
    for b in range(B):
        idx = np.flatnonzero(valid_np[b])
        if idx.size < min_points:
            continue
        obj = np.ascontiguousarray(x3d_np[b, idx])
        img = np.ascontiguousarray(x2d_np[b, idx])
        try:
            if ransac:
                found, rvec, tvec, inl = cv2.solvePnPRansac(
                    obj, img, K_np[b], None, iterationsCount=iterations,
                    reprojectionError=reprojection_px, confidence=confidence, flags=flag)
                sel = idx[inl.ravel()] if found and inl is not None else idx[:0]
            else:
                found, rvec, tvec = cv2.solvePnP(obj, img, K_np[b], None, flags=flag)
                sel = idx
        except cv2.error:
            continue
        if not found or sel.size < min_points or not np.isfinite(tvec).all():
            continue
        rvecs[b], tvecs[b] = rvec.ravel(), tvec.ravel()
        inliers[b, sel] = True
        ok[b] = True
    device = x2d.device
    R = axis_angle_to_matrix(torch.from_numpy(rvecs)).to(device)
    return (R, torch.from_numpy(tvecs).to(device), torch.from_numpy(inliers).to(device),
            torch.from_numpy(ok).to(device))
