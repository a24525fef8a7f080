"""Symmetry pools and pose canonicalisation, batched across objects.

A symmetry S = (R_s, t_s) maps the object onto itself: the mesh points S x look the same
as x. A pose T_cam_obj is then indistinguishable from T_cam_obj @ S, i.e.
`R' = R R_s`, `t' = R t_s + t`.
"""

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from pose6d_ros.core.objects import ObjectModel
from pose6d_ros.core.rotations import axis_angle_to_matrix


def symmetry_transforms(obj: ObjectModel, *, max_step_fraction: float = 0.01
                        ) -> tuple[np.ndarray, np.ndarray]:
    """All symmetries of `obj` as `R (P, 3, 3)`, `t (P, 3)` metres, identity first.

    Discrete symmetries are combined with each continuous one, sampled so that no surface
    point moves more than `max_step_fraction` of the diameter between samples: the BOP
    toolkit's `get_symmetry_transformations`, except that the identity sample of a
    continuous symmetry is kept.
    """
    disc = [np.eye(4), *obj.symmetries_discrete]
    cont = [np.eye(4)]
    for sym in obj.symmetries_continuous:
        steps = int(np.ceil(np.pi / max_step_fraction))
        angles = 2.0 * np.pi * np.arange(1, steps) / steps
        R = axis_angle_to_matrix(torch.from_numpy(angles[:, None] * sym.axis)).numpy()
        for Rc in R:
            T = np.eye(4)
            T[:3, :3] = Rc
            T[:3, 3] = sym.offset - Rc @ sym.offset
            cont.append(T)
    pool = np.stack([c @ d for d in disc for c in cont])
    return pool[:, :3, :3], pool[:, :3, 3]


class SymmetryPools:
    """Symmetry pools of several objects padded into tensors, for batched losses, metrics
    and canonicalisation. Index objects by their class index in the registry."""

    def __init__(self, objects: Sequence[ObjectModel], *, max_step_fraction: float = 0.01,
                 device: torch.device | str = "cpu") -> None:
        pools = [symmetry_transforms(o, max_step_fraction=max_step_fraction) for o in objects]
        size = max(len(R) for R, _ in pools)
        n = len(objects)
        R = np.tile(np.eye(3), (n, size, 1, 1))
        t = np.zeros((n, size, 3))
        valid = np.zeros((n, size), dtype=bool)
        for i, (Ri, ti) in enumerate(pools):
            R[i, : len(Ri)], t[i, : len(Ri)], valid[i, : len(Ri)] = Ri, ti, True
        self.R = torch.from_numpy(R).to(device)  # (O, P, 3, 3)
        self.t = torch.from_numpy(t).to(device)  # (O, P, 3)
        self.valid = torch.from_numpy(valid).to(device)  # (O, P)
        # Discrete members (identity first) and at most one continuous axis, for the exact
        # closed-form canonicalisation.
        n_disc = max(len(o.symmetries_discrete) for o in objects) + 1
        dR = np.tile(np.eye(3), (n, n_disc, 1, 1))
        dt = np.zeros((n, n_disc, 3))
        dvalid = np.zeros((n, n_disc), dtype=bool)
        axis = np.zeros((n, 3))
        offset = np.zeros((n, 3))
        for i, o in enumerate(objects):
            for j, T in enumerate([np.eye(4), *o.symmetries_discrete]):
                dR[i, j], dt[i, j], dvalid[i, j] = T[:3, :3], T[:3, 3], True
            if len(o.symmetries_continuous) > 1:
                raise ValueError(f"object {o.name!r}: more than one continuous symmetry is "
                                 "not supported")
            if o.symmetries_continuous:
                axis[i] = o.symmetries_continuous[0].axis
                offset[i] = o.symmetries_continuous[0].offset
        self.discrete_R = torch.from_numpy(dR).to(device)  # (O, D, 3, 3)
        self.discrete_t = torch.from_numpy(dt).to(device)  # (O, D, 3)
        self.discrete_valid = torch.from_numpy(dvalid).to(device)  # (O, D)
        self.axis = torch.from_numpy(axis).to(device)  # (O, 3), zero when none
        self.offset = torch.from_numpy(offset).to(device)  # (O, 3)

    def canonicalise(self, labels: Tensor, R: Tensor, t: Tensor,
                     reference_R: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The member of each pose's symmetry class whose rotation is closest to a reference.

        Args:
            labels: `(B,)` class indices. R: `(B, 3, 3)`, t: `(B, 3)` poses T_cam_obj.
            reference_R: `(B, 3, 3)` rotations to stay close to (e.g. the previously
                published pose, so frames do not flip between video frames); default the
                identity, which makes the choice a deterministic function of the pose.

        Returns:
            `R (B, 3, 3)`, `t (B, 3)`: equivalent poses. Continuous symmetries are solved in
            closed form, not by sampling.
        """
        dtype = R.dtype
        dR = self.discrete_R[labels].to(dtype)  # (B, D, 3, 3)
        dt = self.discrete_t[labels].to(dtype)  # (B, D, 3)
        valid = self.discrete_valid[labels]  # (B, D)
        axis = self.axis[labels].to(dtype)  # (B, 3)
        offset = self.offset[labels].to(dtype)
        if reference_R is None:
            reference_R = torch.eye(3, dtype=dtype, device=R.device).expand_as(R)
        R_d = R.unsqueeze(1) @ dR  # (B, D, 3, 3) candidates before the continuous part
        # Best angle about the axis (object frame) for each candidate: maximise
        # tr(M Rot(a, th)), M = R_ref^T R_d, = cos(th)(tr M - a'Ma) + sin(th) tr(M [a]x) + a'Ma.
        M = reference_R.transpose(-1, -2).unsqueeze(1) @ R_d
        a = axis[:, None, :]
        aMa = torch.einsum("bdi,bdij,bdj->bd", a.expand(-1, M.shape[1], -1), M,
                           a.expand(-1, M.shape[1], -1))
        trM = torch.diagonal(M, dim1=-2, dim2=-1).sum(-1)
        # tr(M [a]x) = a . vee(M^T - M)
        vee = torch.stack([M[..., 1, 2] - M[..., 2, 1], M[..., 2, 0] - M[..., 0, 2],
                           M[..., 0, 1] - M[..., 1, 0]], dim=-1)
        s = (vee * a).sum(-1)
        c = trM - aMa
        has_axis = (axis != 0).any(-1)[:, None]  # (B, 1)
        theta = torch.where(has_axis, torch.atan2(s, c), torch.zeros_like(s))
        score = torch.where(has_axis, torch.sqrt(s.square() + c.square()) + aMa, trM)
        score = torch.where(valid, score, torch.full_like(score, -torch.inf))
        best = score.argmax(-1)  # first on ties: deterministic
        b = torch.arange(R.shape[0], device=R.device)
        Rc = axis_angle_to_matrix(theta[b, best, None] * axis)  # (B, 3, 3)
        tc = offset - (Rc @ offset.unsqueeze(-1)).squeeze(-1)
        # S = D_best @ C: R_s = R_d Rc, t_s = R_d tc + t_d
        R_s = dR[b, best] @ Rc
        t_s = (dR[b, best] @ tc.unsqueeze(-1)).squeeze(-1) + dt[b, best]
        return R @ R_s, (R @ t_s.unsqueeze(-1)).squeeze(-1) + t
