"""Viewpoints of a template bank: out-of-plane views on a sphere times in-plane turns.

A template's rotation is allocentric: the object's rotation in a camera that looks straight
at it (its origin on the optical axis), which is what a crop centred on the object shows.
"""

from __future__ import annotations

import math

import numpy as np


def sphere_directions(spacing_deg: float) -> np.ndarray:
    """Unit vectors `(V, 3)` spread evenly over the sphere (Fibonacci lattice), about
    `spacing_deg` apart."""
    if not 0.5 <= spacing_deg <= 90:
        raise ValueError(f"view spacing: expected 0.5..90 degrees, got {spacing_deg}")
    # A lattice point covers 4 pi / V steradians; a square cell of side s covers s^2.
    count = max(8, math.ceil(4 * math.pi / math.radians(spacing_deg) ** 2))
    i = np.arange(count) + 0.5
    z = 1 - 2 * i / count
    phi = i * math.pi * (3 - math.sqrt(5))
    r = np.sqrt(1 - z**2)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], 1)


def look_at_rotations(directions: np.ndarray) -> np.ndarray:
    """Rotations `(V, 3, 3)` object -> camera for cameras on the rays `directions (V, 3)`
    (object frame, from the object towards the camera), looking at the origin."""
    z = -directions / np.linalg.norm(directions, axis=1, keepdims=True)  # camera z, object frame
    up = np.where(np.abs(z[:, 2:3]) > 0.95, [[0.0, 1.0, 0.0]], [[0.0, 0.0, 1.0]])
    x = np.cross(up, z)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = np.cross(z, x)
    return np.stack([x, y, z], 1)  # rows: the camera axes in the object frame


def inplane_rotations(step_deg: float) -> np.ndarray:
    """Rotations `(P, 3, 3)` about the camera's optical axis, every `step_deg` degrees."""
    if not 1 <= step_deg <= 360:
        raise ValueError(f"in-plane step: expected 1..360 degrees, got {step_deg}")
    angles = np.deg2rad(np.arange(0.0, 360.0 - 1e-9, step_deg))
    c, s = np.cos(angles), np.sin(angles)
    R = np.zeros((len(angles), 3, 3))
    R[:, 0, 0], R[:, 0, 1], R[:, 1, 0], R[:, 1, 1], R[:, 2, 2] = c, -s, s, c, 1
    return R
