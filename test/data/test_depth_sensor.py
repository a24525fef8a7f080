"""Sensor-like synthetic depth: table plane, axial noise, dropouts, quantisation, config."""

from dataclasses import replace

import numpy as np
import pytest

from pose6d_ros.data.bop import read_depth, write_depth
from pose6d_ros.data.depth_sensor import sensor_depth, table_depth
from pose6d_ros.data.scenes import LMO_K, SynthConfig, SynthConfigError

H, W = 480, 640
K = np.array(LMO_K)
GREY = np.full((H, W, 3), 128, np.uint8)
# Only the table and the objects' depth: no noise, no dropouts, no quantisation.
EXACT = replace(SynthConfig(), depth_noise=(0.0, 0.0), depth_edge_dropout=0.0,
                depth_grey_dropout=0.0, depth_dropout=0.0, depth_quantisation=0.0)


def look_at(eye, target=(0.0, 0.0, 0.0)) -> np.ndarray:
    """`(4, 4)` world-to-camera transform of a camera at `eye` looking at `target`."""
    eye, target = np.asarray(eye, float), np.asarray(target, float)
    z = (target - eye) / np.linalg.norm(target - eye)
    up = [0.0, 1.0, 0.0] if abs(z[2]) > 0.99 else [0.0, 0.0, 1.0]
    x = np.cross(z, up)
    x /= np.linalg.norm(x)
    R_world_cam = np.stack([x, np.cross(z, x), z], axis=1)
    T = np.eye(4)
    T[:3, :3] = R_world_cam.T
    T[:3, 3] = -R_world_cam.T @ eye
    return T


DOWN_1M = look_at((0.0, 0.0, 1.0))


def flat(z: float) -> np.ndarray:
    return np.full((H, W), z, np.float32)


def sigma(z: float) -> float:
    """The default axial noise at depth `z`."""
    a, b = SynthConfig().depth_noise
    return a + b * (z - 0.4) ** 2


def test_camera_looking_down_reads_the_table():
    out = sensor_depth(np.random.default_rng(0), flat(0), GREY, K, DOWN_1M, EXACT)
    assert out.dtype == np.float32 and out.shape == (H, W)
    np.testing.assert_allclose(out, 1.0, atol=1e-6)
    # Sensor defaults: still the table, within noise, with a few holes.
    out = sensor_depth(np.random.default_rng(0), flat(0), GREY, K, DOWN_1M, SynthConfig())
    assert 0.97 < (out > 0).mean() < 1.0
    assert abs(np.median(out[out > 0]) - 1.0) < 1e-3


def test_oblique_camera_sees_the_table_disk_only():
    T = look_at((0.9, -0.3, 0.25), (0.0, 0.0, 0.02))
    z = table_depth(K, T, H, W, 1.0)
    v, u = np.nonzero(z)
    assert 0.2 < len(u) / z.size < 0.95  # the horizon and the disk's rim cut it
    cam = z[v, u, None] * (np.stack([u, v, np.ones_like(u)], 1) @ np.linalg.inv(K).T)
    world = (cam - T[:3, 3]) @ T[:3, :3]  # (N, 3): R^T (p - t)
    np.testing.assert_allclose(world[:, 2], 0.0, atol=1e-6)
    assert np.linalg.norm(world[:, :2], axis=1).max() <= 1.0 + 1e-6
    assert not z[0].any()  # the top row looks over the table
    # A small disk reads only its own area: pi r^2 on the table, seen from 1 m straight down.
    n = (table_depth(K, DOWN_1M, H, W, 0.1) > 0).sum()
    assert n == pytest.approx(np.pi * 0.1**2 * K[0, 0] * K[1, 1], rel=0.02)


def test_no_table_from_below_or_behind():
    for eye, target in [((0.8, 0.0, -0.1), (0.0, 0.0, 0.0)),  # under the table
                        ((0.0, 0.0, 0.5), (0.0, 0.0, 1.5))]:  # looking up, table behind
        assert not table_depth(K, look_at(eye, target), H, W, 1.0).any()


def test_objects_stand_in_front_of_the_table():
    depth = flat(0)
    depth[100:200, 200:300] = 0.7
    out = sensor_depth(np.random.default_rng(0), depth, GREY, K, DOWN_1M, EXACT)
    assert (out[100:200, 200:300] == np.float32(0.7)).all()
    assert (np.abs(out[300:] - 1.0) < 1e-6).all()


def test_axial_noise_grows_with_depth():
    cfg = replace(SynthConfig(), depth_edge_dropout=0.0, depth_grey_dropout=0.0,
                  depth_dropout=0.0, depth_quantisation=0.0)
    stds = []
    for z in (0.5, 1.5):
        out = sensor_depth(np.random.default_rng(1), flat(z), GREY, K, DOWN_1M, cfg)
        stds.append(out.std())
        assert abs(out.mean() - z) < 1e-4
        assert out.std() == pytest.approx(sigma(z), rel=0.02)
    assert stds[1] > 2 * stds[0]


def test_readings_drop_at_depth_edges():
    depth = flat(0.8)
    depth[:, W // 2:] = 1.0  # a 20 cm step between columns 319 and 320
    cfg = replace(SynthConfig(), depth_dropout=0.0)
    holes = sensor_depth(np.random.default_rng(2), depth, GREY, K, DOWN_1M, cfg) == 0
    at_edge = holes[:, W // 2 - 1:W // 2 + 1].mean()
    assert at_edge == pytest.approx(cfg.depth_edge_dropout, abs=0.1)
    assert not holes[:, :W // 2 - 1].any() and not holes[:, W // 2 + 1:].any()
    # Holes come in blocks, not as isolated pixels along the edge.
    left = holes[:, W // 2 - 1]
    assert (left[0::2] == left[1::2]).all()


def test_readings_drop_on_dark_and_saturated_pixels_not_on_grey():
    rgb = GREY.copy()
    rgb[:160] = 0
    rgb[320:] = 255
    cfg = SynthConfig()
    holes = sensor_depth(np.random.default_rng(3), flat(1.0), rgb, K, DOWN_1M, cfg) == 0
    expected = 1 - (1 - cfg.depth_grey_dropout) * (1 - cfg.depth_dropout)
    assert holes[:150].mean() == pytest.approx(expected, abs=0.02)  # away from the edges
    assert holes[330:].mean() == pytest.approx(expected, abs=0.02)
    assert holes[170:310].mean() == pytest.approx(cfg.depth_dropout, abs=0.003)


def test_depth_comes_in_disparity_steps():
    q = 0.0025
    cfg = replace(EXACT, depth_quantisation=q)
    depth = np.linspace(0.3, 2.5, H * W, dtype=np.float32).reshape(H, W)
    out = sensor_depth(np.random.default_rng(0), depth, GREY, K, DOWN_1M, cfg).astype(float)
    n = 1 / (q * out)
    np.testing.assert_allclose(n, np.rint(n), atol=1e-3)  # on the levels 1 / (q n)
    err = np.abs(out - depth)
    assert (err <= 0.5 * q * depth.astype(float) ** 2 * 1.01 + 1e-7).all()
    near, far = err[depth < 0.5].max(), err[depth > 2.0].max()
    assert near < 0.4e-3 and far > 4e-3  # steps of q z^2: 0.6 mm at 0.5 m, 10 mm at 2 m


def test_png_keeps_a_tenth_of_a_millimetre(tmp_path):
    out = sensor_depth(np.random.default_rng(4), flat(0.9), GREY, K, DOWN_1M, SynthConfig())
    write_depth(tmp_path / "d.png", out, 0.1)
    back = read_depth(tmp_path / "d.png", 0.1)
    assert ((back == 0) == (out == 0)).all()
    assert np.abs(back - out).max() <= 0.5e-4 + 1e-7


def test_seed_fixes_the_reading():
    depth = flat(0)
    depth[50:150, 50:150] = 0.6
    runs = [sensor_depth(np.random.default_rng(s), depth, GREY, K, DOWN_1M, SynthConfig())
            for s in (7, 7, 8)]
    assert np.array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


def test_switched_off_leaves_the_depth_and_the_generator_alone():
    depth = flat(0)
    depth[50:150, 50:150] = 0.6
    rng = np.random.default_rng(5)
    out = sensor_depth(rng, depth, GREY, K, DOWN_1M, replace(SynthConfig(), depth_sensor=False))
    assert out.dtype == np.float32 and np.array_equal(out, depth) and out is not depth
    assert rng.random() == np.random.default_rng(5).random()


def test_wrong_shapes_are_errors():
    with pytest.raises(ValueError, match="rgb"):
        sensor_depth(np.random.default_rng(0), flat(1), GREY[:10], K, DOWN_1M, SynthConfig())
    with pytest.raises(ValueError, match="depth"):
        sensor_depth(np.random.default_rng(0), GREY, GREY, K, DOWN_1M, SynthConfig())


@pytest.mark.parametrize("field, value", [
    ("depth_sensor", "yes"),
    ("depth_table_extent", -1.0),
    ("depth_noise", [0.001]),
    ("depth_noise", [-0.001, 0.002]),
    ("depth_edge_jump", 0.0),
    ("depth_edge_dropout", 1.5),
    ("depth_grey_range", [200, 100]),
    ("depth_grey_range", [0, 300]),
    ("depth_grey_dropout", "often"),
    ("depth_dropout", -0.1),
    ("depth_quantisation", None),
    ("depth_range", [0.5, 0.2]),
    ("depth_range", [0.2]),
])
def test_config_names_the_bad_depth_field(field, value):
    with pytest.raises(SynthConfigError, match=field):
        SynthConfig.from_dict({field: value}, source="synth.yaml")


def test_a_camera_just_above_the_table_reads_nothing_nearer_than_its_range():
    T = look_at([0.3, 0.0, 0.01], target=(0.0, 0.0, 0.005))  # 1 cm above the table
    cfg = replace(EXACT, depth_range=(0.2, 8.0))
    z = sensor_depth(np.random.default_rng(0), np.zeros((H, W), np.float32), GREY, K, T, cfg)
    table = table_depth(K, T, H, W, cfg.depth_table_extent)
    assert (table[(table > 0)] < 0.2).any()  # the plane itself does come that close
    assert z[z > 0].min() >= 0.2 and z.max() <= 8.0
