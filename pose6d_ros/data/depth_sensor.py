"""What an RGB-D camera would have measured in a synthetic scene (numpy only).

A renderer's depth is perfect and covers the objects alone. Structured-light and
time-of-flight cameras (Kinect, RealSense) see the table around the objects, are noisier
further away, lose readings at depth discontinuities and on dark or saturated surfaces, and
return depth in disparity steps. `sensor_depth` turns a rendered depth image into such a
reading. Depth is camera z in metres, 0 = no reading; the world frame is that of
`pose6d_ros.data.scenes` (z up, the table at z = 0). All randomness comes from the
generator passed in, and every call draws the same amount from it whatever the image shows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pose6d_ros.data.scenes import SynthConfig

# Depth at which the axial noise model is smallest (Nguyen et al. 2012, Kinect v1).
NOISE_MIN_Z = 0.4
# ITU-R BT.601 luma weights for the grey level of an RGB pixel.
LUMA = (0.299, 0.587, 0.114)
# Edge dropouts are decided per block of this many pixels square, so holes are contiguous.
EDGE_HOLE_PX = 2


def sensor_depth(rng: np.random.Generator, depth: np.ndarray, rgb: np.ndarray, K: np.ndarray,
                 T_cam_world: np.ndarray, cfg: SynthConfig) -> np.ndarray:
    """The depth image a camera with `cfg`'s `depth_*` settings reads, `(H, W)` float32.

    Args:
        rng: the only source of randomness.
        depth: `(H, W)` rendered camera z in metres, 0 where no object or distractor.
        rgb: `(H, W, 3)` uint8, the finished colour image (dark/saturated dropouts).
        K: `(3, 3)` intrinsics.
        T_cam_world: `(4, 4)` world-to-camera transform.
        cfg: `depth_sensor` false returns a float32 copy of `depth` and draws nothing.

    Returns:
        `(H, W)` float32 metres, 0 = no reading: the objects, the table disk where nothing
        is in front of it, with axial noise, dropouts and disparity quantisation.
    """
    depth = np.asarray(depth)
    if depth.ndim != 2:
        raise ValueError(f"sensor_depth: depth must be (H, W), got {depth.shape}")
    if rgb.shape != (*depth.shape, 3):
        raise ValueError(f"sensor_depth: rgb must be {(*depth.shape, 3)}, got {rgb.shape}")
    if not cfg.depth_sensor:
        return depth.astype(np.float32, copy=True)
    h, w = depth.shape
    table = table_depth(K, T_cam_world, h, w, cfg.depth_table_extent)
    z = np.where(depth > 0, depth, table).astype(np.float32)  # (H, W)
    valid = z > 0
    edge = depth_edges(z, valid, cfg.depth_edge_jump)

    a, b = cfg.depth_noise
    z += rng.standard_normal((h, w), np.float32) * (a + b * (z - NOISE_MIN_Z) ** 2)
    z = quantise_depth(z, cfg.depth_quantisation)

    grey = rgb @ np.array(LUMA, np.float32)  # (H, W)
    lo, hi = cfg.depth_grey_range
    drop = edge & (_block_uniform(rng, h, w, EDGE_HOLE_PX) < cfg.depth_edge_dropout)
    drop |= ((grey < lo) | (grey > hi)) & (rng.random((h, w), np.float32)
                                           < cfg.depth_grey_dropout)
    drop |= rng.random((h, w), np.float32) < cfg.depth_dropout
    # A camera close above the table would otherwise see it centimetres away; sensors have
    # a minimum range.
    near, far = cfg.depth_range
    return np.where(valid & ~drop & (z >= near) & (z <= far), z, np.float32(0))


def table_depth(K: np.ndarray, T_cam_world: np.ndarray, height: int, width: int,
                extent: float) -> np.ndarray:
    """`(H, W)` float32 camera z of the table plane (world z = 0) through each pixel.

    Only the disk of radius `extent` metres around the world origin is table; rays that
    miss it, meet the plane behind the camera or from below (camera at z <= 0) read 0.
    """
    R, t = T_cam_world[:3, :3], T_cam_world[:3, 3]
    eye = -R.T @ t  # camera centre in the world frame
    M = R.T @ np.linalg.inv(K)  # world direction of pixel (u, v) with camera z 1: M @ (u, v, 1)
    u = np.arange(width, dtype=np.float32)[None, :]  # (1, W)
    v = np.arange(height, dtype=np.float32)[:, None]  # (H, 1)
    M = M.astype(np.float32)
    ray = [(M[i, 0] * u + M[i, 2]) + M[i, 1] * v for i in range(3)]  # 3 x (H, W)
    down = ray[2] < 0
    s = np.divide(np.float32(-eye[2]), ray[2], out=np.zeros((height, width), np.float32),
                  where=down)  # camera z
    x = np.float32(eye[0]) + s * ray[0]
    y = np.float32(eye[1]) + s * ray[1]
    hit = down & (eye[2] > 0) & (x * x + y * y <= np.float32(extent * extent))
    return np.where(hit, s, np.float32(0))


def depth_edges(z: np.ndarray, valid: np.ndarray, jump: float) -> np.ndarray:
    """`(H, W)` bool: valid pixels whose valid 3x3 neighbours span more than `jump` metres.

    A step edge marks a pixel on each side of it; pixels without a reading are ignored.
    """
    hi = _filter3(np.where(valid, z, -np.inf), np.maximum)
    lo = _filter3(np.where(valid, z, np.inf), np.minimum)
    return valid & (hi - lo > jump)


def quantise_depth(z: np.ndarray, q: float) -> np.ndarray:
    """`z` (any shape, metres) rounded to the levels 1 / (q n), n = 1, 2, ...: disparity
    steps, q z^2 metres apart at depth z. `q <= 0` or `z <= 0` leave values unchanged."""
    if q <= 0:
        return z
    pos = z > 0
    n = np.maximum(np.rint(np.divide(1.0, q * z, out=np.ones_like(z), where=pos)), 1.0)
    return np.where(pos, 1.0 / (q * n), z)


def _filter3(a: np.ndarray, op: np.ufunc) -> np.ndarray:
    """`op` (np.maximum or np.minimum) over each `(H, W)` pixel's 3x3 neighbourhood."""
    p = np.pad(a, 1, mode="edge")
    rows = op(op(p[:-2], p[1:-1]), p[2:])  # (H, W + 2)
    return op(op(rows[:, :-2], rows[:, 1:-1]), rows[:, 2:])


def _block_uniform(rng: np.random.Generator, h: int, w: int, block: int) -> np.ndarray:
    """`(H, W)` uniform [0, 1) values, constant over `block` x `block` squares."""
    u = rng.random((-(-h // block), -(-w // block)))
    return np.repeat(np.repeat(u, block, 0), block, 1)[:h, :w]
