import pytest
import torch

from pose6d_ros.core.rotations import rotation_angle
from pose6d_ros.eval.bench_pnp import make_problem
from pose6d_ros.pnp import PnPOptions, PnPStatus, solve_pnp
from pose6d_ros.pnp.solver import init_method

# Both initialisations: OpenCV's SQPnP RANSAC ("auto" on the CPU) and the batched one.
METHOD = pytest.mark.parametrize("method", ["auto", "multistart"])


def test_auto_is_multistart_on_cuda_and_sqpnp_on_the_cpu():
    assert init_method(PnPOptions(), torch.device("cuda")) == "multistart"
    assert init_method(PnPOptions(), torch.device("cpu")) == "sqpnp"
    assert init_method(PnPOptions(method="epnp"), torch.device("cuda")) == "epnp"


@METHOD
def test_exact_on_noise_free_data(device, method):
    p = make_problem(6, 100, noise_px=0.0, device=device)
    res = solve_pnp(p.x2d, p.x3d, p.K, options=PnPOptions(method=method))
    assert res.success.all()
    assert rotation_angle(res.R, p.R).max() < 1e-8
    assert (res.t - p.t).norm(dim=-1).max() < 1e-8


@METHOD
def test_ransac_rejects_outliers_and_refines(device, method):
    p = make_problem(8, 300, noise_px=0.5, device=device, seed=2)
    x2d = p.x2d.clone()
    bad = torch.zeros(8, 300, dtype=torch.bool, device=device)
    bad[:, ::4] = True  # 25 % gross outliers
    x2d[bad] += 60.0
    res = solve_pnp(x2d, p.x3d, p.K, options=PnPOptions(method=method))
    assert res.success.all()
    assert not (res.inliers & bad).any()
    assert res.inliers.sum(-1).min() > 0.9 * 225
    assert torch.rad2deg(rotation_angle(res.R, p.R)).max() < 1.0
    assert (res.t - p.t).norm(dim=-1).max() < 0.01


@METHOD
def test_padding_and_weights(device, method):
    # Instances with different point counts share one padded batch.
    p = make_problem(3, 80, noise_px=0.0, device=device, seed=3)
    mask = torch.ones(3, 80, dtype=torch.bool, device=device)
    mask[0, 20:] = False
    mask[1, 50:] = False
    x2d = p.x2d.clone()
    x2d[~mask] = float("nan")  # padding holds garbage
    w = torch.rand(3, 80, dtype=torch.float64, device=device) + 0.1
    res = solve_pnp(x2d, p.x3d, p.K, weights=w, mask=mask, options=PnPOptions(method=method))
    assert res.success.all()
    assert torch.equal(res.inliers, mask)
    assert rotation_angle(res.R, p.R).max() < 1e-8


@METHOD
def test_failures_flagged_per_instance(device, method):
    p = make_problem(4, 50, noise_px=0.0, device=device, seed=4)
    mask = torch.ones(4, 50, dtype=torch.bool, device=device)
    mask[1, 4:] = False  # too few points
    x3d = p.x3d.clone()
    x3d[2] = 0.0
    x3d[2, :, 0] = torch.linspace(-0.05, 0.05, 50, dtype=torch.float64)  # collinear points
    res = solve_pnp(p.x2d, x3d, p.K, mask=mask, options=PnPOptions(ransac=False, method=method))
    assert res.status[0] == PnPStatus.OK and res.status[3] == PnPStatus.OK
    assert res.status[1] == PnPStatus.TOO_FEW_POINTS
    assert res.status[2] != PnPStatus.OK
    assert torch.isfinite(res.R).all() and torch.isfinite(res.t).all()
    assert not res.inliers[1].any()


@METHOD
def test_empty_batch(method):
    p = make_problem(1, 10)
    res = solve_pnp(p.x2d[:0], p.x3d[:0], p.K, options=PnPOptions(method=method))
    assert res.R.shape == (0, 3, 3) and res.t.shape == (0, 3) and res.status.shape == (0,)


@pytest.mark.parametrize("kwargs, name", [
    ({"x2d": torch.zeros(2, 5, 3)}, "x2d"),
    ({"x3d": torch.zeros(2, 4, 3)}, "x3d"),
    ({"weights": torch.ones(2, 4)}, "weights"),
    ({"K": torch.zeros(3, 3)}, "K"),
])
def test_shape_errors_name_the_argument(kwargs, name):
    args = {"x2d": torch.zeros(2, 5, 2), "x3d": torch.zeros(2, 5, 3),
            "K": torch.tensor([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]])}
    args.update(kwargs)
    extra = {k: args.pop(k) for k in ("weights",) if k in args}
    with pytest.raises(ValueError, match=name):
        solve_pnp(args["x2d"], args["x3d"], args["K"], **extra)


def test_matches_opencv_iterative():
    # With no outliers our refined pose minimises the same objective as OpenCV's.
    from pose6d_ros.eval.bench_pnp import baseline_forward
    p = make_problem(5, 200, noise_px=2.0, seed=5)
    res = solve_pnp(p.x2d, p.x3d, p.K, options=PnPOptions(ransac=False))
    R_cv, t_cv = baseline_forward(p)
    assert rotation_angle(res.R, R_cv).max() < 1e-6
    assert (res.t - t_cv).norm(dim=-1).max() < 1e-6


def test_multistart_handles_flat_point_sets_and_heavy_outliers():
    """Where minimal-set solvers struggle: points on a 3 mm thick slab, 40 % outliers
    spread over the image; the batched initialisation still finds every pose, and the same
    input gives the same result."""
    p = make_problem(8, 300, noise_px=1.0, seed=6)
    x3d = p.x3d.clone()
    x3d[..., 2] *= 0.02
    from pose6d_ros.eval.bench_pnp import project, transform_points

    g = torch.Generator().manual_seed(7)
    x2d = project(transform_points(p.R, p.t, x3d), p.K)
    x2d = x2d + torch.randn(x2d.shape, generator=g, dtype=x2d.dtype)
    x2d[:, :120] = torch.rand(8, 120, 2, generator=g, dtype=x2d.dtype) * torch.tensor(
        [640.0, 480.0], dtype=x2d.dtype)
    options = PnPOptions(method="multistart")
    res = solve_pnp(x2d, x3d, p.K, options=options)
    assert res.success.all()
    assert torch.rad2deg(rotation_angle(res.R, p.R)).max() < 2.0
    assert (res.t - p.t).norm(dim=-1).max() < 0.01
    again = solve_pnp(x2d, x3d, p.K, options=options)
    assert torch.equal(again.R, res.R) and torch.equal(again.inliers, res.inliers)
