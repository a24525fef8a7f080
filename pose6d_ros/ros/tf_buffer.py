"""TF without ROS: a bag's /tf and /tf_static, looked up as tf2 would, for `pose6d bag`.

Each child frame has its parent and its transforms over time; a lookup walks from both
frames up to their common ancestor. Between two recorded stamps of a frame a transform is
interpolated (translation linearly, rotation by slerp); outside them the nearest one within
`tolerance_s` is taken (tf2 would refuse to extrapolate; a bag's last camera pose often
comes a little before its last image). /tf_static transforms hold at every stamp.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from pose6d_ros.core.rotations import quaternion_to_matrix

MAX_DEPTH = 1000  # frames between one frame and its root, as tf2's limit (a loop otherwise)


def quaternion_matrix(q_xyzw: np.ndarray) -> np.ndarray:
    """Rotation matrix `(3, 3)` of a quaternion `(4,)` (x, y, z, w), normalised first."""
    q = torch.as_tensor(np.asarray(q_xyzw, np.float64))
    return quaternion_to_matrix(q).numpy()


def slerp(q0: np.ndarray, q1: np.ndarray, s: float) -> np.ndarray:
    """The unit quaternion `(4,)` a share `s` in [0, 1] of the way from `q0` to `q1`."""
    q0, q1 = q0 / np.linalg.norm(q0), q1 / np.linalg.norm(q1)
    dot = float(q0 @ q1)
    if dot < 0:  # the shorter way round
        q1, dot = -q1, -dot
    if dot > 0.9995:  # nearly equal: linear is exact enough and stable
        q = q0 + s * (q1 - q0)
        return q / np.linalg.norm(q)
    theta = np.arccos(dot)
    return (np.sin((1 - s) * theta) * q0 + np.sin(s * theta) * q1) / np.sin(theta)


def _matrix(t: np.ndarray, q: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = quaternion_matrix(q), t
    return T


class _Edge:
    """One child frame's transforms over time: added in any order, sorted on first use."""

    def __init__(self) -> None:
        self._new: list[tuple[int, str, np.ndarray, np.ndarray]] = []
        self.stamps = np.zeros(0, np.int64)  # (N,) ns, sorted
        self.parents: list[str] = []
        self.t = np.zeros((0, 3))  # (N, 3)
        self.q = np.zeros((0, 4))  # (N, 4) x y z w

    def add(self, stamp: int, parent: str, t: np.ndarray, q: np.ndarray) -> None:
        self._new.append((stamp, parent, t, q))

    def sort(self) -> None:
        if not self._new:
            return
        stamps = np.concatenate([self.stamps, [s for s, *_ in self._new]]).astype(np.int64)
        parents = self.parents + [p for _, p, *_ in self._new]
        t = np.concatenate([self.t, [r[2] for r in self._new]])
        q = np.concatenate([self.q, [r[3] for r in self._new]])
        order = np.argsort(stamps, kind="stable")
        self.stamps, self.t, self.q = stamps[order], t[order], q[order]
        self.parents = [parents[i] for i in order]
        self._new = []


class TfBuffer:
    """Transforms from TFMessages (any message flavour), looked up by frame and stamp."""

    def __init__(self, tolerance_s: float = 0.0) -> None:
        self.tolerance_ns = round(tolerance_s * 1e9)
        self._static: dict[str, tuple[str, np.ndarray]] = {}  # child -> (parent, T (4, 4))
        self._dynamic: dict[str, _Edge] = {}
        self.frames: set[str] = set()  # every frame named so far

    def add(self, msg: Any, *, static: bool = False) -> None:
        """Every transform of a tf2_msgs TFMessage (`static`: from /tf_static)."""
        for tf in msg.transforms:
            v, r = tf.transform.translation, tf.transform.rotation
            t = np.array([v.x, v.y, v.z], np.float64)
            q = np.array([r.x, r.y, r.z, r.w], np.float64)
            stamp = int(tf.header.stamp.sec) * 10**9 + int(tf.header.stamp.nanosec)
            self.add_transform(str(tf.header.frame_id), str(tf.child_frame_id), stamp, t, q,
                               static=static)

    def add_transform(self, parent: str, child: str, stamp_ns: int, t: np.ndarray,
                      q: np.ndarray, *, static: bool = False) -> None:
        """`T_parent_child` at `stamp_ns`: translation `t (3,)` metres, rotation `q (4,)`
        (x, y, z, w). Transforms that are not finite are ignored, as tf2 does."""
        parent, child = parent.lstrip("/"), child.lstrip("/")
        if not (np.isfinite(t).all() and np.isfinite(q).all()) or not np.any(q) \
                or not parent or not child or parent == child:
            return
        self.frames |= {parent, child}
        if static:
            self._static[child] = (parent, _matrix(t, q))
        else:
            self._dynamic.setdefault(child, _Edge()).add(stamp_ns, parent, t, q)

    def lookup(self, target: str, source: str, stamp_ns: int) -> np.ndarray:
        """`T_target_source (4, 4)` at `stamp_ns`: maps points in `source` to `target`.
        LookupError naming the frames and the stamp when it cannot be had."""
        target, source = target.lstrip("/"), source.lstrip("/")
        if target == source:
            return np.eye(4)
        for frame in (target, source):
            if frame not in self.frames:
                raise LookupError(f"frame {frame!r} does not exist (TF has "
                                  f"{sorted(self.frames)[:10]})")
        up_source, error_s = self._chain(source, stamp_ns)
        up_target, error_t = self._chain(target, stamp_ns)
        common = next((f for f in up_source if f in up_target), None)
        if common is None:
            raise LookupError(error_s or error_t or f"frames {target!r} and {source!r} are "
                                                    "not connected")
        return np.linalg.inv(up_target[common]) @ up_source[common]

    def _chain(self, frame: str, stamp: int) -> tuple[dict[str, np.ndarray], str | None]:
        """`{ancestor: T_ancestor_frame}` from `frame` up to its root or the first edge
        without a transform at `stamp` (then also the reason)."""
        out = {frame: np.eye(4)}
        T = np.eye(4)
        for _ in range(MAX_DEPTH):
            try:
                edge = self._edge(frame, stamp)
            except LookupError as exc:
                return out, str(exc)
            if edge is None:
                return out, None
            frame, T_parent = edge
            T = T_parent @ T
            if frame in out:
                return out, f"TF loop through {frame!r}"
            out[frame] = T
        return out, f"TF deeper than {MAX_DEPTH} frames"

    def _edge(self, child: str, stamp: int) -> tuple[str, np.ndarray] | None:
        """(parent, T_parent_child) at `stamp`; None for a root; LookupError when the
        child's recorded transforms do not reach `stamp`."""
        if child in self._static:
            return self._static[child]
        edge = self._dynamic.get(child)
        if edge is None:
            return None
        edge.sort()
        stamps = edge.stamps
        i = int(np.searchsorted(stamps, stamp))
        if i < len(stamps) and stamps[i] == stamp:
            return edge.parents[i], _matrix(edge.t[i], edge.q[i])
        if 0 < i < len(stamps) and edge.parents[i - 1] == edge.parents[i]:
            s = (stamp - int(stamps[i - 1])) / int(stamps[i] - stamps[i - 1])
            t = (1 - s) * edge.t[i - 1] + s * edge.t[i]
            return edge.parents[i], _matrix(t, slerp(edge.q[i - 1], edge.q[i], s))
        near = [j for j in (i - 1, i) if 0 <= j < len(stamps)]
        j = min(near, key=lambda j: abs(int(stamps[j]) - stamp))
        if abs(int(stamps[j]) - stamp) <= self.tolerance_ns:
            return edge.parents[j], _matrix(edge.t[j], edge.q[j])
        raise LookupError(f"no transform {edge.parents[j]!r} -> {child!r} at "
                          f"{stamp * 1e-9:.3f} s: recorded from {stamps[0] * 1e-9:.3f} to "
                          f"{stamps[-1] * 1e-9:.3f} s")
