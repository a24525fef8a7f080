"""Camera poses of views from the objects they share (unknown extrinsics, CosyPose-style).

When views come without camera poses, each object seen in two views ties them together:
T_ref_cam = T_ref_obj @ S @ inv(T_cam_obj) for a symmetry S of the object. For every view
and every pair of same-object instances (one in the reference view, one in the view), and
every symmetry, that candidate is scored by how many of the view's other instances it
carries onto an instance of the same object in the reference view (centre within a share of
the diameter, rotation within a tolerance modulo symmetry): RANSAC-like consensus. The best
candidate with enough support is refined by a rigid fit of the supporting objects (their
centres and six points a quarter diameter along their axes, in both views). A view that
shares nothing with the reference may be placed through a view already placed (chaining).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from pose6d_ros.core.objects import ObjectRegistry
from pose6d_ros.core.pose import rigid_fit
from pose6d_ros.core.symmetry import SymmetryPools, symmetry_transforms
from pose6d_ros.pipeline import ObjectPose


@dataclass(frozen=True)
class CameraPoseConfig:
    """When a candidate camera pose is supported by an instance, and how many it needs."""

    # Loose by default: a single RGB view's distance is often 5-10 % off, and a candidate
    # built from two such poses carries both errors to the other objects.
    centre_tolerance: float = 0.5  # share of the object's diameter
    rotation_tolerance_deg: float = 30.0  # modulo the object's symmetries
    min_support: int = 2  # instances of the view that agree, the seed included
    # Accept one supporting instance when the two views share only one (then `weak`).
    allow_single: bool = True
    continuous_samples: int = 36  # samples of a continuous symmetry, candidates
    chain: bool = True  # place views sharing nothing with the reference through others


@dataclass
class Placement:
    """One view's camera pose relative to the reference view."""

    T_ref_cam: np.ndarray  # (4, 4)
    support: int  # the view's instances that agree with it
    weak: bool  # placed on a single shared instance: unchecked
    via: int  # the view it was placed against (the reference itself, or a chained one)


class CameraPoseEstimator:
    """Relative camera poses of views from their single-view object poses (module doc)."""

    def __init__(self, objects: ObjectRegistry, config: CameraPoseConfig | None = None
                 ) -> None:
        self.objects = objects
        self.config = config or CameraPoseConfig()
        self.pools = SymmetryPools(objects)
        centre, _ = objects.coordinate_normalisation()
        self.centres = centre  # (O, 3) model-frame bounding-box middles
        self.diameters = np.array([o.diameter for o in objects])
        step = np.pi / max(self.config.continuous_samples, 1)
        self.symmetries = []  # per label, (P, 4, 4)
        for o in objects:
            R, t = symmetry_transforms(o, max_step_fraction=step)
            S = np.tile(np.eye(4), (len(R), 1, 1))
            S[:, :3, :3], S[:, :3, 3] = R, t
            self.symmetries.append(S)

    def __call__(self, views: Sequence[Sequence[ObjectPose]], reference: int = 0
                 ) -> list[Placement | None]:
        """Every view's camera pose relative to view `reference` (the identity for it), or
        None for a view that cannot be placed."""
        out: list[Placement | None] = [None] * len(views)
        out[reference] = Placement(np.eye(4), len(views[reference]), False, reference)
        for v in range(len(views)):
            if v != reference:
                out[v] = self.place(views[reference], views[v], via=reference)
        progress = self.config.chain
        while progress:
            progress = False
            for v in range(len(views)):
                if out[v] is not None:
                    continue
                best = None
                for u, pu in enumerate(out):
                    if pu is None or u == reference:
                        continue
                    p = self.place(views[u], views[v], via=u)
                    if p is not None and (best is None or (p.support, not p.weak)
                                          > (best.support, not best.weak)):
                        best = Placement(pu.T_ref_cam @ p.T_ref_cam, p.support,
                                         p.weak or pu.weak, u)
                if best is not None:
                    out[v], progress = best, True
        return out

    def place(self, ref: Sequence[ObjectPose], view: Sequence[ObjectPose], via: int = 0
              ) -> Placement | None:
        """The pose of `view`'s camera in `ref`'s camera frame from their shared objects,
        or None (nothing shared, or no candidate with enough support)."""
        cfg = self.config
        if not ref or not view:
            return None
        la = np.array([p.label for p in ref])
        lb = np.array([p.label for p in view])
        Ta, Tb = _matrices(ref), _matrices(view)  # (Na, 4, 4), (Nb, 4, 4)
        same = la[None, :] == lb[:, None]  # (Nb, Na)
        shared = int(same.any(1).sum())  # the view's instances with a possible partner
        if shared == 0:
            return None
        # Candidates: every same-label pair times every symmetry of the object.
        cand, seeds = [], []
        Tb_inv = np.linalg.inv(Tb)
        for j, i in zip(*np.nonzero(same), strict=True):
            S = self.symmetries[la[i]]
            cand.append(Ta[i] @ S @ Tb_inv[j])  # (P, 4, 4)
            seeds += [(int(i), int(j))] * len(S)
        T = np.concatenate(cand)  # (C, 4, 4)
        agree, resid = self._consensus(T, Ta, Tb, la, lb, same)  # (C, Nb, Na)
        support = agree.any(2).sum(1)  # (C,)
        # Most support, then the smallest summed centre residual of the supporting pairs.
        cost = np.where(agree, resid, 0.0).sum((1, 2))
        best = int(np.lexsort((cost, -support))[0])
        need = 1 if (cfg.allow_single and shared == 1) else cfg.min_support
        if support[best] < need:
            return None
        pairs = [(int(np.argmin(np.where(agree[best, j], resid[best, j], np.inf))), j)
                 for j in np.flatnonzero(agree[best].any(1))]
        T_best = self._refit(T[best], Ta, Tb, la, pairs, ref, view)
        return Placement(T_best, int(support[best]), int(support[best]) < 2, via)

    def _consensus(self, T: np.ndarray, Ta: np.ndarray, Tb: np.ndarray, la: np.ndarray,
                   lb: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For candidates `T (C, 4, 4)`: whether each view instance lands on each reference
        instance, `agree (C, Nb, Na)` bool, and the centre distance in diameters `(C, Nb, Na)`.
        """
        cfg = self.config
        ca = (Ta[:, :3, :3] @ self.centres[la][:, :, None])[..., 0] + Ta[:, :3, 3]  # (Na, 3)
        cb = (Tb[:, :3, :3] @ self.centres[lb][:, :, None])[..., 0] + Tb[:, :3, 3]  # (Nb, 3)
        cb_ref = np.einsum("cij,bj->cbi", T[:, :3, :3], cb) + T[:, None, :3, 3]  # (C, Nb, 3)
        resid = (np.linalg.norm(cb_ref[:, :, None] - ca[None, None], axis=-1)
                 / self.diameters[la][None, None])  # (C, Nb, Na)
        agree = same[None] & (resid <= cfg.centre_tolerance)
        c, j, i = np.nonzero(agree)
        if len(c):
            # Symmetry-aware angle only where the centres already agree.
            R_pred = torch.from_numpy(T[c, :3, :3] @ Tb[j, :3, :3])
            R_ref = torch.from_numpy(Ta[i, :3, :3])
            aligned, _ = self.pools.canonicalise(torch.from_numpy(la[i]), R_pred,
                                                 torch.zeros(len(c), 3, dtype=R_pred.dtype),
                                                 R_ref)
            cos = (torch.diagonal(R_ref.transpose(1, 2) @ aligned, dim1=1, dim2=2).sum(-1)
                   - 1) / 2
            angle = np.rad2deg(np.arccos(cos.clamp(-1, 1).numpy()))
            agree[c, j, i] = angle <= cfg.rotation_tolerance_deg
        return agree, resid

    def _refit(self, T: np.ndarray, Ta: np.ndarray, Tb: np.ndarray, la: np.ndarray,
               pairs: list[tuple[int, int]], ref: Sequence[ObjectPose],
               view: Sequence[ObjectPose]) -> np.ndarray:
        """The rigid transform `(4, 4)` best aligning the supporting objects' points of the
        view onto the reference's, each view pose turned to its symmetric twin nearest
        the candidate `T (4, 4)`."""
        src, dst, w = [], [], []
        for i, j in pairs:
            label = int(la[i])
            # The view's pose in the reference frame, canonicalised towards the reference's.
            R_ref = T[:3, :3] @ Tb[j, :3, :3]
            t_ref = T[:3, :3] @ Tb[j, :3, 3] + T[:3, 3]
            R_s, t_s = self.pools.canonicalise(
                torch.tensor([label]), torch.from_numpy(R_ref)[None],
                torch.from_numpy(t_ref)[None], torch.from_numpy(Ta[i, :3, :3])[None])
            T_sym = np.eye(4)
            T_sym[:3, :3], T_sym[:3, 3] = R_s[0].numpy(), t_s[0].numpy()
            T_view = np.linalg.inv(T) @ T_sym  # that twin back in the view's camera frame
            pts = self._points(label)  # (7, 3)
            src.append(pts @ T_view[:3, :3].T + T_view[:3, 3])
            dst.append(pts @ Ta[i, :3, :3].T + Ta[i, :3, 3])
            w.append(np.full(len(pts), min(ref[i].score, view[j].score) + 1e-6))
        return rigid_fit(np.concatenate(src), np.concatenate(dst), np.concatenate(w))

    def _points(self, label: int) -> np.ndarray:
        """Model-frame points `(7, 3)`: the centre and a quarter diameter along each axis."""
        r = self.diameters[label] / 4
        offsets = np.concatenate([np.zeros((1, 3)), r * np.eye(3), -r * np.eye(3)])
        return self.centres[label] + offsets


def _matrices(poses: Sequence[ObjectPose]) -> np.ndarray:
    """`T_cam_obj (N, 4, 4)` of `poses`."""
    T = np.tile(np.eye(4), (len(poses), 1, 1))
    for k, p in enumerate(poses):
        T[k, :3, :3], T[k, :3, 3] = p.R, p.t
    return T
