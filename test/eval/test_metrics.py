"""Batched metrics against per-pose references written from the BOP toolkit's definitions."""

import math

import numpy as np
import torch

from pose6d_ros.core.rotations import axis_angle_to_matrix, random_rotations
from pose6d_ros.core.symmetry import SymmetryPools
from pose6d_ros.eval import metrics


def _ref_add(Re, te, Rg, tg, pts):
    return np.linalg.norm((pts @ Re.T + te) - (pts @ Rg.T + tg), axis=1).mean()


def _ref_adi(Re, te, Rg, tg, pts):
    e, g = pts @ Re.T + te, pts @ Rg.T + tg
    return np.linalg.norm(e[:, None] - g[None], axis=2).min(1).mean()


def _ref_mssd(Re, te, Rg, tg, pts, syms):
    e = pts @ Re.T + te
    return min(np.linalg.norm(e - (pts @ (Rg @ R).T + (Rg @ t + tg)), axis=1).max()
               for R, t in syms)


def _ref_mspd(Re, te, Rg, tg, pts, K, syms):
    def proj(P):
        uvw = P @ K.T
        return uvw[:, :2] / uvw[:, 2:]
    e = proj(pts @ Re.T + te)
    return min(np.linalg.norm(e - proj(pts @ (Rg @ R).T + (Rg @ t + tg)), axis=1).max()
               for R, t in syms)


def _ref_re(Re, Rg):
    c = np.clip(0.5 * (np.trace(Re @ np.linalg.inv(Rg)) - 1.0), -1, 1)
    return math.degrees(math.acos(c))


def test_against_reference(objects):
    g = torch.Generator().manual_seed(0)
    B = len(objects)
    pts = torch.from_numpy(np.stack([
        o.mesh.vertices[np.linspace(0, len(o.mesh.vertices) - 1, 150).astype(int)]
        for o in objects]))
    Rg = random_rotations(B, generator=g)
    tg = torch.tensor([0.0, 0.0, 0.8], dtype=torch.float64).expand(B, 3)
    Re = axis_angle_to_matrix(0.05 * torch.randn(B, 3, generator=g, dtype=torch.float64)) @ Rg
    te = tg + 0.01 * torch.randn(B, 3, generator=g, dtype=torch.float64)
    K = torch.tensor([[572.4, 0, 325.3], [0, 573.6, 242.0], [0, 0, 1]], dtype=torch.float64)
    pools = SymmetryPools(objects)
    lab = torch.arange(B)
    pR, pt, pv = pools.R[lab], pools.t[lab], pools.valid[lab]
    got = {
        "add": metrics.add(Re, te, Rg, tg, pts), "adi": metrics.adds(Re, te, Rg, tg, pts),
        "mssd": metrics.mssd(Re, te, Rg, tg, pts, pR, pt, pv),
        "mspd": metrics.mspd(Re, te, Rg, tg, pts, K, pR, pt, pv),
        "re": metrics.rotation_error_deg(Re, Rg), "te": metrics.translation_error(te, tg),
    }
    for i in range(B):
        a = [v[i].numpy() for v in (Re, te, Rg, tg, pts)]
        syms = [(pR[i, j].numpy(), pt[i, j].numpy()) for j in range(int(pv[i].sum()))]
        assert math.isclose(got["add"][i], _ref_add(*a), rel_tol=1e-9)
        assert math.isclose(got["adi"][i], _ref_adi(*a), rel_tol=1e-9)
        assert math.isclose(got["mssd"][i], _ref_mssd(*a, syms), rel_tol=1e-9)
        assert math.isclose(got["mspd"][i], _ref_mspd(*a, K.numpy(), syms), rel_tol=1e-9)
        assert math.isclose(got["re"][i], _ref_re(a[0], a[2]), rel_tol=1e-6)
        assert math.isclose(got["te"][i], np.linalg.norm(a[1] - a[3]), rel_tol=1e-12)


def test_symmetric_errors_forgive_the_symmetry(objects):
    pools = SymmetryPools(objects)
    glue = objects.index_of_name("glue")
    Rg = random_rotations(3, generator=torch.Generator().manual_seed(1))
    tg = torch.tensor([0.1, 0.0, 0.9], dtype=torch.float64).expand(3, 3)
    S_R, S_t = pools.discrete_R[glue, 1], pools.discrete_t[glue, 1]
    Re, te = Rg @ S_R, (Rg @ S_t) + tg  # the flipped, equivalent pose
    lab = torch.full((3,), glue)
    pts = torch.from_numpy(objects[glue].mesh.vertices[::20])
    args = (pools.R[lab], pools.t[lab], pools.valid[lab])
    assert metrics.mssd(Re, te, Rg, tg, pts, *args).max() < 1e-12
    re, tt = metrics.symmetric_pose_errors(Re, te, Rg, tg, *args)
    assert re.max() < 1e-5 and tt.max() < 1e-12
    assert metrics.rotation_error_deg(Re, Rg).min() > 170  # plain error does not forgive


def test_recall_and_average_recall():
    errors = torch.tensor([0.001, 0.02, 0.2, float("nan")], dtype=torch.float64)
    diam = torch.full((4,), 0.1, dtype=torch.float64)
    # thresholds 0.005 .. 0.05: first always below, second below the last 7, others never.
    assert math.isclose(metrics.average_recall_mssd(errors, diam), (10 + 7) / 40)
    assert math.isclose(metrics.average_recall_mspd(torch.tensor([1.0, 60.0]), 640), 0.5)
