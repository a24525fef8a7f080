"""Instances over video frames: stable per-object indices and symmetry choices that do not flip.

Each frame's poses are matched to the previous frame's tracks of the same object by
translation distance (optimal assignment within a gate). A matched pose is replaced by the
member of its symmetry class (T @ S for S in the object's pool) closest in rotation to the
track's previously published pose, so a box or a can spinning in view keeps a continuous
frame; a new track takes the canonical member (closest to the identity). A track keeps the
smallest per-object index free when it started (the `_<index>` of its TF frame) until it is
missed for more than `max_missed` frames.

`DetectionSchedule` decides, frame by frame, whether the detector runs or the previous
frame's poses are refined instead (tracking mode), and which tracked poses go on.
"""

from collections.abc import Sequence
from typing import Protocol, TypeVar

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from pose6d_ros.core.objects import ObjectModel
from pose6d_ros.core.symmetry import SymmetryPools


class SymmetryTracker:
    """Stable instance indices and symmetry-consistent poses for a stream of frames."""

    def __init__(self, objects: Sequence[ObjectModel], *, gate: float = 0.1,
                 max_missed: int = 5, pools: SymmetryPools | None = None) -> None:
        """`gate`: largest translation (metres) between frames for a match; `max_missed`:
        frames a track survives without a match."""
        self.pools = pools if pools is not None else SymmetryPools(objects)
        self.gate = gate
        self.max_missed = max_missed
        self.reset()

    def reset(self) -> None:
        """Forget every track."""
        self._label = np.zeros(0, np.int64)  # (T,) class index
        self._index = np.zeros(0, np.int64)  # (T,) per-object instance index
        self._R = np.zeros((0, 3, 3))  # (T, 3, 3) last published rotation
        self._t = np.zeros((0, 3))  # (T, 3) last published translation, metres
        self._missed = np.zeros(0, np.int64)  # (T,) consecutive frames without a match

    @property
    def tracks(self) -> int:
        """Number of live tracks."""
        return len(self._label)

    def update(self, labels: np.ndarray, R: np.ndarray, t: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One frame: `labels (N,)` class indices, poses `R (N, 3, 3)`, `t (N, 3)` (metres).

        Returns `index (N,)` (stable per-object instance index), `R (N, 3, 3)`, `t (N, 3)`:
        each pose replaced by an equivalent one under the object's symmetries.
        """
        labels = np.asarray(labels, np.int64).reshape(-1)
        R = np.asarray(R, np.float64).reshape(-1, 3, 3)
        t = np.asarray(t, np.float64).reshape(-1, 3)
        match = self._match(labels, t)  # (N,) track row or -1
        matched = match >= 0
        reference = np.where(matched[:, None, None], self._R[np.maximum(match, 0)]
                             if self.tracks else np.eye(3), np.eye(3))  # (N, 3, 3)
        if len(labels):
            Rc, tc = self.pools.canonicalise(torch.from_numpy(labels), torch.from_numpy(R),
                                             torch.from_numpy(t), torch.from_numpy(reference))
            R, t = Rc.numpy(), tc.numpy()
        index = np.where(matched, self._index[np.maximum(match, 0)] if self.tracks else 0, -1)

        missed = self._missed + 1
        missed[match[matched]] = 0
        self._R[match[matched]], self._t[match[matched]] = R[matched], t[matched]
        keep = missed <= self.max_missed
        self._label, self._index = self._label[keep], self._index[keep]
        self._R, self._t, self._missed = self._R[keep], self._t[keep], missed[keep]
        for i in np.flatnonzero(~matched):  # new tracks: few per frame
            used = set(self._index[self._label == labels[i]].tolist())
            index[i] = next(k for k in range(len(used) + 1) if k not in used)
            self._label = np.append(self._label, labels[i])
            self._index = np.append(self._index, index[i])
            self._R = np.concatenate([self._R, R[i : i + 1]])
            self._t = np.concatenate([self._t, t[i : i + 1]])
            self._missed = np.append(self._missed, 0)
        return index, R, t

    def _match(self, labels: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Track row `(N,)` for each pose (-1: none), by least total translation distance."""
        match = np.full(len(labels), -1, np.int64)
        if not len(labels) or not self.tracks:
            return match
        dist = np.linalg.norm(t[:, None, :] - self._t[None, :, :], axis=-1)  # (N, T)
        allowed = (labels[:, None] == self._label[None, :]) & (dist <= self.gate)
        rows, cols = linear_sum_assignment(np.where(allowed, dist, 1e3 * (1.0 + self.gate)))
        ok = allowed[rows, cols]
        match[rows[ok]] = cols[ok]
        return match


class Scored(Protocol):
    """Anything with a score in [0, 1] (an ObjectPose)."""

    score: float


P = TypeVar("P", bound=Scored)


class DetectionSchedule:
    """Tracking mode's frame-to-frame logic: detect on every `detect_every`-th frame and
    refine the previous poses on the frames between; a tracked pose scoring below the
    threshold is lost, and the next frame detects again (as it does with no pose left).
    `detect_every` 1 detects on every frame."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget the poses: the next frame detects."""
        self.poses: list = []  # the poses the next tracked frame starts from
        self._since_detect = 0  # frames since the last detection, that one included
        self._redetect = True

    def should_detect(self, detect_every: int) -> bool:
        """Whether the next frame runs the detector (else: `tracked` with refined poses)."""
        if detect_every < 1:
            raise ValueError(f"detect_every: expected >= 1, got {detect_every}")
        return self._redetect or not self.poses or self._since_detect >= detect_every

    def detected(self, poses: Sequence[P]) -> None:
        """A detection frame's poses (as published): the next tracked frame starts there."""
        self.poses = list(poses)
        self._since_detect = 1
        self._redetect = False

    def tracked(self, poses: Sequence[P], min_score: float) -> tuple[list[P], int]:
        """A tracked frame's refined poses: those scoring at least `min_score` go on, and
        how many were lost; any lost one makes the next frame detect. Call `keep` with the
        published poses afterwards."""
        kept = [p for p in poses if p.score >= min_score]
        lost = len(poses) - len(kept)
        self._redetect = lost > 0 or not kept
        self._since_detect += 1
        self.poses = kept
        return kept, lost

    def keep(self, poses: Sequence[P]) -> None:
        """The poses the next tracked frame starts from (after symmetry and index tracking)."""
        self.poses = list(poses)
