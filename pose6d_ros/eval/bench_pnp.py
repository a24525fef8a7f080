"""`pose6d bench pnp`: batched PnP + BPnP backward against a per-instance baseline.

The baseline is what a straightforward port does: OpenCV's iterative solvePnP per instance,
then per instance the Jacobians of the stationarity condition by autograd
(torch.autograd.functional.jacobian), as the public BPnP computes its gradients. Both run
in the same process on the same data; the printed figures are ratios, plus the error of
our gradient against central finite differences of the solver.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import Tensor

from pose6d_ros.core.camera import project
from pose6d_ros.core.pose import transform_points
from pose6d_ros.core.rotations import axis_angle_to_matrix, random_rotations
from pose6d_ros.pnp import PnPOptions, bpnp, solve_pnp


@dataclass(frozen=True)
class Problem:
    """A batch of synthetic correspondences with the poses that made them."""

    x2d: Tensor  # (B, N, 2)
    x3d: Tensor  # (B, N, 3)
    K: Tensor  # (3, 3)
    R: Tensor  # (B, 3, 3)
    t: Tensor  # (B, 3)


def make_problem(instances: int, points: int, *, noise_px: float = 1.0, seed: int = 0,
                 device: str = "cpu") -> Problem:
    """Object points in a 15 cm box at 0.4-1.5 m, projected with noise, float64."""
    g = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    K = torch.tensor([[572.4, 0, 325.3], [0, 573.6, 242.0], [0, 0, 1]], dtype=f64)
    R = random_rotations(instances, generator=g)
    t = torch.stack([
        (torch.rand(instances, generator=g, dtype=f64) - 0.5) * 0.3,
        (torch.rand(instances, generator=g, dtype=f64) - 0.5) * 0.2,
        0.4 + 1.1 * torch.rand(instances, generator=g, dtype=f64)], dim=-1)
    x3d = (torch.rand(instances, points, 3, generator=g, dtype=f64) - 0.5) * 0.15
    x2d = project(transform_points(R, t, x3d), K)
    x2d = x2d + noise_px * torch.randn(x2d.shape, generator=g, dtype=f64)
    return Problem(*(v.to(device) for v in (x2d, x3d, K, R, t)))


def _timed(fn: Callable[[], object], repeats: int) -> float:
    """Median seconds of `repeats` calls after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _objective_gradient(y: Tensor, R0: Tensor, x2d: Tensor, x3d: Tensor, w: Tensor,
                        K: Tensor) -> Tensor:
    """Gradient `(6,)` of one instance's weighted reprojection error, by autograd."""
    R = axis_angle_to_matrix(y[:3]) @ R0
    uv = project(x3d @ R.T + y[3:], K)
    f = (w * (uv - x2d).square().sum(-1)).sum()
    return torch.autograd.grad(f, y, create_graph=True)[0]


def baseline_forward(p: Problem) -> tuple[Tensor, Tensor]:
    """Per-instance OpenCV iterative PnP."""
    Rs, ts = [], []
    K = p.K.cpu().numpy()
    for x2d, x3d in zip(p.x2d.cpu().numpy(), p.x3d.cpu().numpy(), strict=True):
        _, rvec, tvec = cv2.solvePnP(x3d, x2d, K, None, flags=cv2.SOLVEPNP_ITERATIVE)
        Rs.append(cv2.Rodrigues(rvec)[0])
        ts.append(tvec.ravel())
    return torch.from_numpy(np.stack(Rs)), torch.from_numpy(np.stack(ts))


def baseline_backward(p: Problem, R: Tensor, t: Tensor, grad_R: Tensor, grad_t: Tensor
                      ) -> tuple[Tensor, Tensor]:
    """Per-instance implicit gradients w.r.t. x2d `(B, N, 2)` and x3d `(B, N, 3)` from
    autograd Jacobians."""
    out2d, out3d = [], []
    w = torch.ones(p.x2d.shape[1], dtype=torch.float64)
    for b in range(p.x2d.shape[0]):
        y0 = torch.cat([torch.zeros(3, dtype=torch.float64), t[b]]).requires_grad_()

        def g_y(y: Tensor, b: int = b) -> Tensor:
            return _objective_gradient(y, R[b], p.x2d[b], p.x3d[b], w, p.K)

        def g_x(x2d: Tensor, x3d: Tensor, b: int = b, y0: Tensor = y0) -> Tensor:
            return _objective_gradient(y0, R[b], x2d, x3d, w, p.K)

        H = torch.autograd.functional.jacobian(g_y, y0)
        dg_dx2d, dg_dx3d = torch.autograd.functional.jacobian(g_x, (p.x2d[b], p.x3d[b]))
        A = grad_R[b] @ R[b].T
        v = torch.stack([A[2, 1] - A[1, 2], A[0, 2] - A[2, 0], A[1, 0] - A[0, 1]])
        u = torch.linalg.solve(H, torch.cat([v, grad_t[b]]))
        out2d.append(-torch.einsum("i,inc->nc", u, dg_dx2d))
        out3d.append(-torch.einsum("i,inc->nc", u, dg_dx3d))
    return torch.stack(out2d), torch.stack(out3d)


def finite_difference_error(p: Problem, options: PnPOptions, *, directions: int = 3,
                            step: float = 1e-6, seed: int = 0) -> float:
    """Largest relative error of BPnP's directional derivatives (x2d, x3d) against central
    finite differences of the solver, over random loss weights and directions."""
    g = torch.Generator().manual_seed(seed)
    base = solve_pnp(p.x2d, p.x3d, p.K, options=options)
    init = (base.R, base.t)
    worst = 0.0
    for _ in range(directions):
        GR = torch.randn(base.R.shape, generator=g, dtype=torch.float64)
        Gt = torch.randn(base.t.shape, generator=g, dtype=torch.float64)
        x2d = p.x2d.clone().requires_grad_()
        x3d = p.x3d.clone().requires_grad_()
        res = bpnp(x2d, x3d, p.K, init=init, options=options)
        loss = (res.R * GR).sum() + (res.t * Gt).sum()
        g2d, g3d = torch.autograd.grad(loss, (x2d, x3d))
        for grad, which, h in ((g2d, 0, step), (g3d, 1, step * 1e-3)):
            V = torch.randn(grad.shape, generator=g, dtype=torch.float64)
            vals = []
            for sign in (1.0, -1.0):
                args = [p.x2d, p.x3d]
                args[which] = args[which] + sign * h * V
                r = solve_pnp(*args, p.K, init=init, options=options)
                vals.append(float((r.R * GR).sum() + (r.t * Gt).sum()))
            fd = (vals[0] - vals[1]) / (2 * h)
            worst = max(worst, abs(float((grad * V).sum()) - fd) / max(abs(fd), 1e-12))
    return worst


def run(instances: int = 32, points: int = 500, repeats: int = 5, device: str = "cpu"
        ) -> dict[str, float | int | str]:
    """Measure both paths on one problem; returns the figures `pose6d bench pnp` prints."""
    p = make_problem(instances, points, device=device)
    plain = PnPOptions(ransac=False)
    exact = PnPOptions(ransac=False, max_iterations=100, step_tolerance=1e-15)
    res = solve_pnp(p.x2d, p.x3d, p.K, options=plain)
    GR = torch.randn(res.R.shape, dtype=torch.float64, device=device)
    Gt = torch.randn(res.t.shape, dtype=torch.float64, device=device)

    x2d = p.x2d.clone().requires_grad_()
    x3d = p.x3d.clone().requires_grad_()
    r = bpnp(x2d, x3d, p.K, init=(res.R, res.t), options=PnPOptions(max_iterations=0))
    loss = (r.R * GR).sum() + (r.t * Gt).sum()

    def ours_backward() -> tuple[Tensor, ...]:
        return torch.autograd.grad(loss, (x2d, x3d), retain_graph=True)

    cpu = Problem(*(v.cpu() for v in (p.x2d, p.x3d, p.K, p.R, p.t)))
    t_fwd = _timed(lambda: solve_pnp(p.x2d, p.x3d, p.K, options=plain), repeats)
    t_fwd_base = _timed(lambda: baseline_forward(cpu), repeats)
    t_bwd = _timed(ours_backward, repeats)
    args = (cpu, res.R.cpu(), res.t.cpu(), GR.cpu(), Gt.cpu())
    t_bwd_base = _timed(lambda: baseline_backward(*args), max(1, repeats // 2))
    ours = torch.cat([g.cpu().flatten() for g in ours_backward()])
    base = torch.cat([g.flatten() for g in baseline_backward(*args)])
    agree = (ours - base).norm() / base.norm()
    return {
        "device": device, "instances": instances, "points": points,
        "forward_ms": 1e3 * t_fwd, "baseline_forward_ms": 1e3 * t_fwd_base,
        "backward_ms": 1e3 * t_bwd, "baseline_backward_ms": 1e3 * t_bwd_base,
        "speedup_forward": t_fwd_base / t_fwd, "speedup_backward": t_bwd_base / t_bwd,
        "grad_rel_err": finite_difference_error(cpu, exact),
        "baseline_agreement": float(agree),
    }
