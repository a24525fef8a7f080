"""`pose6d demo`: the PnP/BPnP foundation on the bundled objects.

For every object of the objects YAML: mesh vertices seen from a random pose through the
LM-O camera, 1 px noise and 20 % gross outliers; one batched solve for all objects; the
errors with the BOP metrics (symmetry-aware); and BPnP's gradient against finite
differences.
"""

import torch

from pose6d_ros.core.camera import project
from pose6d_ros.core.objects import ObjectRegistry
from pose6d_ros.core.pose import transform_points
from pose6d_ros.core.rotations import random_rotations
from pose6d_ros.core.symmetry import SymmetryPools
from pose6d_ros.eval import metrics
from pose6d_ros.eval.bench_pnp import Problem, finite_difference_error
from pose6d_ros.pnp import PnPOptions, PnPStatus, solve_pnp

LMO_K = torch.tensor([[572.4114, 0.0, 325.2611], [0.0, 573.57043, 242.04899], [0, 0, 1]],
                     dtype=torch.float64)


def run(objects: ObjectRegistry, *, points: int = 500, noise_px: float = 1.0,
        outlier_fraction: float = 0.2, seed: int = 0) -> list[dict]:
    """Solve one synthetic view of every object; one dict of errors per object."""
    g = torch.Generator().manual_seed(seed)
    B = len(objects)
    verts = []
    for obj in objects:
        v = torch.from_numpy(obj.mesh.vertices)
        verts.append(v[torch.randperm(len(v), generator=g)[:points]])
    x3d = torch.stack(verts)  # (B, N, 3) metres
    R = random_rotations(B, generator=g)
    t = torch.stack([torch.linspace(-0.2, 0.2, B, dtype=torch.float64),
                     torch.linspace(-0.1, 0.1, B, dtype=torch.float64),
                     0.5 + torch.rand(B, generator=g, dtype=torch.float64)], dim=-1)
    x2d = project(transform_points(R, t, x3d), LMO_K)
    x2d = x2d + noise_px * torch.randn(x2d.shape, generator=g, dtype=torch.float64)
    outliers = torch.rand(B, points, generator=g) < outlier_fraction
    x2d = torch.where(outliers[..., None],
                      torch.rand(x2d.shape, generator=g, dtype=torch.float64) * 480, x2d)

    res = solve_pnp(x2d, x3d, LMO_K)
    pools = SymmetryPools(objects)
    labels = torch.arange(B)
    pR, pt, pv = pools.R[labels], pools.t[labels], pools.valid[labels]
    re, te = metrics.symmetric_pose_errors(res.R, res.t, R, t, pR, pt, pv)
    add = metrics.add(res.R, res.t, R, t, x3d)
    adds = metrics.adds(res.R, res.t, R, t, x3d)
    mssd = metrics.mssd(res.R, res.t, R, t, x3d, pR, pt, pv)
    mspd = metrics.mspd(res.R, res.t, R, t, x3d, LMO_K, pR, pt, pv)
    inlier_ok = res.inliers & ~outliers
    rows = []
    for i, obj in enumerate(objects):
        err = adds[i] if obj.is_symmetric else add[i]
        rows.append({
            "object": obj.name, "status": PnPStatus(int(res.status[i])).name,
            "inliers": int(res.inliers[i].sum()), "true_inliers": int(inlier_ok[i].sum()),
            "rot_err_deg": float(re[i]), "trans_err_mm": 1e3 * float(te[i]),
            "add_mm": 1e3 * float(err), "add_metric": "ADD-S" if obj.is_symmetric else "ADD",
            "add_ok_0.1d": bool(err < 0.1 * obj.diameter),
            "mssd_mm": 1e3 * float(mssd[i]), "mspd_px": float(mspd[i]),
        })
    return rows


def gradient_check(objects: ObjectRegistry, *, points: int = 200, seed: int = 0) -> float:
    """BPnP's directional derivatives against finite differences on the objects' meshes."""
    g = torch.Generator().manual_seed(seed)
    x3d = torch.stack([torch.from_numpy(o.mesh.vertices)[
        torch.randperm(len(o.mesh.vertices), generator=g)[:points]] for o in objects])
    B = len(objects)
    R = random_rotations(B, generator=g)
    t = torch.tensor([0.0, 0.0, 0.8], dtype=torch.float64).expand(B, 3)
    x2d = project(transform_points(R, t, x3d), LMO_K)
    x2d = x2d + torch.randn(x2d.shape, generator=g, dtype=torch.float64)
    problem = Problem(x2d=x2d, x3d=x3d, K=LMO_K, R=R, t=t)
    return finite_difference_error(
        problem, PnPOptions(ransac=False, max_iterations=100, step_tolerance=1e-15))
