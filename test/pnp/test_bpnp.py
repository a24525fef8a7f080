"""BPnP gradients against central finite differences of the exact solver (float64)."""

import pytest
import torch

from pose6d_ros.eval.bench_pnp import baseline_backward, make_problem
from pose6d_ros.pnp import PnPOptions, bpnp, solve_pnp
from pose6d_ros.pnp.bpnp import BACKWARD_STATS

EXACT = PnPOptions(ransac=False, max_iterations=100, step_tolerance=1e-15)


def _directional_errors(x2d, x3d, K, w, mask, seed):
    """Relative errors of <grad, V> vs (L(x + hV) - L(x - hV)) / 2h for x2d, x3d, w."""
    g = torch.Generator().manual_seed(seed)
    base = solve_pnp(x2d, x3d, K, weights=w, mask=mask, options=EXACT)
    assert base.success.all()
    init = (base.R, base.t)
    GR = torch.randn(base.R.shape, generator=g, dtype=torch.float64)
    Gt = torch.randn(base.t.shape, generator=g, dtype=torch.float64)
    leaves = [v.clone().requires_grad_() for v in (x2d, x3d, w)]
    res = bpnp(*leaves[:2], K, weights=leaves[2], mask=mask, init=init, options=EXACT)
    grads = torch.autograd.grad((res.R * GR).sum() + (res.t * Gt).sum(), leaves)
    errors = {}
    for i, (name, h) in enumerate((("x2d", 1e-5), ("x3d", 1e-8), ("weights", 1e-6))):
        V = torch.randn(grads[i].shape, generator=g, dtype=torch.float64)
        vals = []
        for sign in (1, -1):
            args = [x2d, x3d, w]
            args[i] = args[i] + sign * h * V
            r = solve_pnp(args[0], args[1], K, weights=args[2], mask=mask, init=init,
                          options=EXACT)
            vals.append(float((r.R * GR).sum() + (r.t * Gt).sum()))
        fd = (vals[0] - vals[1]) / (2 * h)
        errors[name] = abs(float((grads[i] * V).sum()) - fd) / abs(fd)
    return errors, grads


@pytest.mark.parametrize("case", ["near", "far", "noisy", "outliers"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gradients_match_finite_differences(case, seed):
    p = make_problem(4, 60, noise_px=3.0 if case == "noisy" else 0.5, seed=seed)
    t = p.t.clone()
    if case == "near":
        t[:, 2] = 0.35
    if case == "far":
        t[:, 2] = 1.5
    x2d = p.x2d if case in ("noisy", "outliers") else \
        make_problem(4, 60, noise_px=0.5, seed=seed).x2d + 0 * t[:, None, :2]
    if case in ("near", "far"):
        from pose6d_ros.core.camera import project
        from pose6d_ros.core.pose import transform_points
        x2d = project(transform_points(p.R, t, p.x3d), p.K) + 0.5 * torch.randn(
            p.x2d.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    mask = torch.ones(4, 60, dtype=torch.bool)
    if case == "outliers":
        x2d = x2d.clone()
        x2d[:, :10] += 100.0
        mask[:, :10] = False
    w = torch.rand(4, 60, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    w = w + 0.5
    errors, grads = _directional_errors(x2d, p.x3d, p.K, w, mask, seed)
    assert max(errors.values()) <= 1e-4, errors
    if case == "outliers":
        assert all((g[~mask] == 0).all() for g in grads)


def test_float32_inputs_get_float32_gradients():
    p = make_problem(2, 40, seed=7)
    x2d = p.x2d.float().requires_grad_()
    x3d = p.x3d.float().requires_grad_()
    res = bpnp(x2d, x3d, p.K.float())
    assert res.R.dtype == torch.float32
    (res.R.sum() + res.t.sum()).backward()
    assert x2d.grad.dtype == torch.float32 and torch.isfinite(x2d.grad).all()


def test_failed_and_singular_instances_get_zero_gradient_never_nan():
    p = make_problem(3, 40, noise_px=0.5, seed=8)
    x3d = p.x3d.clone()
    x3d[1] = 0.0  # all points identical: singular
    mask = torch.ones(3, 40, dtype=torch.bool)
    mask[2, 3:] = False  # too few points
    x2d = p.x2d.clone().requires_grad_()
    x3d = x3d.requires_grad_()
    before = BACKWARD_STATS.singular
    res = bpnp(x2d, x3d, p.K, mask=mask, options=PnPOptions(ransac=False))
    (res.R.sum() + res.t.sum()).backward()
    assert res.success[0] and not res.success[1:].any()
    assert torch.isfinite(x2d.grad).all() and torch.isfinite(x3d.grad).all()
    assert (x2d.grad[1:] == 0).all() and (x2d.grad[0] != 0).any()
    assert BACKWARD_STATS.singular >= before


def test_singular_hessian_counts_a_warning():
    # A converged pose whose Hessian is singular: two distinct 3D points only, init given.
    p = make_problem(2, 30, noise_px=0.0, seed=9)
    x3d = p.x3d.clone()
    x3d[1, :15] = x3d[1, 0]
    x3d[1, 15:] = x3d[1, 1]
    from pose6d_ros.core.camera import project
    from pose6d_ros.core.pose import transform_points
    x2d = project(transform_points(p.R, p.t, x3d), p.K).requires_grad_()
    opts = PnPOptions(ransac=False, degenerate_eigenvalue=-1.0)  # let it through the forward
    before = BACKWARD_STATS.singular
    with pytest.warns(RuntimeWarning, match="singular"):
        res = bpnp(x2d, x3d, p.K, init=(p.R, p.t), options=opts)
        (res.R.sum() + res.t.sum()).backward()
    assert BACKWARD_STATS.singular == before + 1
    assert torch.isfinite(x2d.grad).all() and (x2d.grad[1] == 0).all()


def test_agrees_with_per_instance_autograd_baseline():
    p = make_problem(3, 50, noise_px=1.0, seed=10)
    res = solve_pnp(p.x2d, p.x3d, p.K, options=EXACT)
    GR, Gt = torch.randn(3, 3, 3, dtype=torch.float64), torch.randn(3, 3, dtype=torch.float64)
    x2d, x3d = p.x2d.clone().requires_grad_(), p.x3d.clone().requires_grad_()
    out = bpnp(x2d, x3d, p.K, init=(res.R, res.t), options=EXACT)
    ours = torch.autograd.grad((out.R * GR).sum() + (out.t * Gt).sum(), (x2d, x3d))
    base = baseline_backward(p, res.R, res.t, GR, Gt)
    for a, b in zip(ours, base, strict=True):
        assert torch.allclose(a, b, rtol=1e-7, atol=1e-10)
