"""Registered depth images: one checked form for every input path.

Cameras send depth as `16UC1` millimetres (RealSense, Kinect, OAK-D) or `32FC1` metres
(ZED, simulators); BOP scenes store 16-bit PNGs with a per-image `depth_scale`. Everything
downstream takes `(H, W)` float32 metres with 0 where the sensor saw nothing, registered
to the colour image (same size, same intrinsics). `check_depth` turns what arrived into
that or raises `DepthError` saying why, so a bad frame is rejected by name, never guessed.
"""

from __future__ import annotations

import numpy as np

# Plausible range of a valid reading, in metres: outside it the units are wrong (a 16UC1
# image read as metres gives hundreds of "metres"; metres read as millimetres give a few mm).
MIN_PLAUSIBLE_M = 0.05
MAX_PLAUSIBLE_M = 20.0


class DepthError(ValueError):
    """A depth image that cannot be used with its colour image, and why."""


def depth_to_metres(raw: np.ndarray, scale: float) -> np.ndarray:
    """`raw (H, W)` readings times `scale` (metres per unit), as float32; NaN and inf to 0."""
    depth = raw.astype(np.float32) * np.float32(scale)
    depth[~np.isfinite(depth)] = 0.0
    depth[depth < 0] = 0.0
    return depth


def check_depth(depth: np.ndarray, image_shape: tuple[int, ...], source: str = "depth"
                ) -> np.ndarray:
    """`depth (H, W)` float32 metres, checked against the colour image's `(H, W, ...)` shape.

    Raises DepthError naming `source` when the sizes differ, no pixel has a reading, or the
    median reading is outside [MIN_PLAUSIBLE_M, MAX_PLAUSIBLE_M] (a unit mismatch).
    """
    if depth.ndim != 2:
        raise DepthError(f"{source}: expected a single-channel (H, W) image, got shape "
                         f"{depth.shape}")
    if depth.shape != tuple(image_shape[:2]):
        raise DepthError(f"{source}: {depth.shape[1]}x{depth.shape[0]} depth for a "
                         f"{image_shape[1]}x{image_shape[0]} image; register the depth to "
                         "the colour camera")
    depth = np.asarray(depth, np.float32)
    valid = np.isfinite(depth) & (depth > 0)
    if not valid.any():
        raise DepthError(f"{source}: no valid reading (all zero or NaN)")
    median = float(np.median(depth[valid]))
    if not MIN_PLAUSIBLE_M <= median <= MAX_PLAUSIBLE_M:
        raise DepthError(f"{source}: median reading {median:.4g} m is not a plausible "
                         f"distance ({MIN_PLAUSIBLE_M}-{MAX_PLAUSIBLE_M} m); check the "
                         "units (depth_scale)")
    if not valid.all():
        depth = np.where(valid, depth, np.float32(0.0))
    return depth
