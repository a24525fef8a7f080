"""`pose6d synth`: BOP-format output, consistent, deterministic, resumable, clear errors."""

import json
import shutil

import numpy as np
import pytest
import yaml

from pose6d_ros.cli import main
from pose6d_ros.data.bop import (
    MM,
    load_depth_scales,
    load_scene_camera,
    load_scene_gt,
    load_scene_gt_info,
    read_depth,
    read_image,
    read_mask,
    read_xyz,
)
from pose6d_ros.data.depth_sensor import table_depth
from pose6d_ros.data.scenes import SynthConfig, SynthConfigError
from pose6d_ros.data.synth import SynthError, generate
from test.conftest import REPO, TINY

OBJECTS = REPO / "config" / "objects.yaml"


def scenes(root):
    return sorted(p for p in (root / "train").iterdir() if p.is_dir())


def test_layout_is_bop(synth_dir):
    assert [p.name for p in scenes(synth_dir)] == ["000000", "000001"]
    for scene in scenes(synth_dir):
        for sub in ("rgb", "depth", "mask", "mask_visib", "xyz"):
            assert (scene / sub).is_dir()
        gt = json.loads((scene / "scene_gt.json").read_text())
        assert sorted(gt) == ["0", "1", "2"]
        entry = gt["0"][0]
        assert set(entry) == {"cam_R_m2c", "cam_t_m2c", "obj_id"}
        info = json.loads((scene / "scene_gt_info.json").read_text())["0"][0]
        assert set(info) == {"bbox_obj", "bbox_visib", "px_count_all", "px_count_valid",
                             "px_count_visib", "visib_fract"}
        cam = json.loads((scene / "scene_camera.json").read_text())["0"]
        assert {"cam_K", "depth_scale", "cam_R_w2c", "cam_t_w2c"} <= set(cam)
    manifest = yaml.safe_load((synth_dir / "train" / "dataset.yaml").read_text())
    assert manifest["seed"] == 3 and manifest["config"]["width"] == 320


def test_scene_gt_masks_and_coordinates_agree(synth_dir):
    checked = 0
    for scene in scenes(synth_dir):
        gts = load_scene_gt(scene / "scene_gt.json")
        infos = load_scene_gt_info(scene / "scene_gt_info.json")
        cams = load_scene_camera(scene / "scene_camera.json")
        for im_id, entries in gts.items():
            K = cams[im_id]
            rgb = read_image(scene / "rgb" / f"{im_id:06d}.jpg")
            assert rgb.shape == (240, 320, 3)
            for k, gt in enumerate(entries):
                name = f"{im_id:06d}_{k:06d}"
                full = read_mask(scene / "mask" / f"{name}.png")
                visib = read_mask(scene / "mask_visib" / f"{name}.png")
                (x0, y0, x1, y1), xyz = read_xyz(scene / "xyz" / f"{name}.npz")
                info = infos[im_id][k]
                assert not (visib & ~full).any()
                assert info["px_count_all"] == full.sum()
                assert info["px_count_visib"] == visib.sum()
                if full.sum():
                    assert info["visib_fract"] == pytest.approx(visib.sum() / full.sum())
                # The coordinate map covers exactly the full mask.
                cover = np.zeros_like(full)
                cover[y0:y1, x0:x1] = np.any(xyz != 0, axis=-1)
                assert (cover == full).all()
                if not visib.any():
                    continue
                bx, by, bw, bh = info["bbox_visib"]
                v, u = np.nonzero(visib)
                assert (bx, by, bw, bh) == (u.min(), v.min(), np.ptp(u) + 1, np.ptp(v) + 1)
                # Each coordinate, posed by scene_gt and projected by scene_camera, lands on
                # the centre of its own pixel (depth: the depth tests below).
                v, u = np.nonzero(full)
                p = xyz[v - y0, u - x0].astype(np.float64) @ gt.R.T + gt.t
                uv = p @ K.T
                uv = uv[:, :2] / uv[:, 2:]
                assert np.abs(uv - np.stack([u, v], 1)).max() < 5e-3
                ox, oy, ow, oh = info["bbox_obj"]
                assert ox <= bx and oy <= by and ox + ow >= bx + bw and oy + oh >= by + bh
                checked += 1
    assert checked >= 10


def visible_depths(scene):
    """Per image and labelled instance: the camera z of its visible pixels by the ground
    truth and by the depth PNG, `(N,)` and `(N,)` metres."""
    gts = load_scene_gt(scene / "scene_gt.json")
    scales = load_depth_scales(scene / "scene_camera.json")
    for im_id, entries in gts.items():
        depth = read_depth(scene / "depth" / f"{im_id:06d}.png", scales[im_id])
        for k, gt in enumerate(entries):
            name = f"{im_id:06d}_{k:06d}"
            v, u = np.nonzero(read_mask(scene / "mask_visib" / f"{name}.png"))
            (x0, y0, _, _), xyz = read_xyz(scene / "xyz" / f"{name}.npz")
            p = xyz[v - y0, u - x0].astype(np.float64) @ gt.R.T + gt.t
            yield p[:, 2], depth[v, u].astype(np.float64)


def world_to_camera(scene, im_id):
    """`(4, 4)` world-to-camera transform of an image, from scene_camera.json."""
    cam = json.loads((scene / "scene_camera.json").read_text())[str(im_id)]
    T = np.eye(4)
    T[:3, :3] = np.reshape(cam["cam_R_w2c"], (3, 3))
    T[:3, 3] = np.asarray(cam["cam_t_w2c"]) * MM
    return T


def sensor_tolerance(z):
    """Five sigma of the default axial noise, half a disparity step and the PNG's unit at
    depth `z` (metres, any shape)."""
    cfg = SynthConfig()
    a, b = cfg.depth_noise
    return 5 * (a + b * (z - 0.4) ** 2) + 0.5 * cfg.depth_quantisation * z**2 + 1e-4


def test_sensor_depth_reads_objects_within_noise_with_few_holes(synth_dir):
    readings = pixels = 0
    for scene in scenes(synth_dir):
        for z, d in visible_depths(scene):
            seen = d > 0
            assert (np.abs(d - z)[seen] <= sensor_tolerance(z[seen])).all()
            readings, pixels = readings + seen.sum(), pixels + len(z)
    assert pixels > 1000 and 0.5 < readings / pixels < 0.99


def test_sensor_depth_reads_the_table_around_objects(synth_dir):
    on_table = table_pixels = 0
    for scene in scenes(synth_dir):
        cams = load_scene_camera(scene / "scene_camera.json")
        scales = load_depth_scales(scene / "scene_camera.json")
        for im_id, entries in load_scene_gt(scene / "scene_gt.json").items():
            depth = read_depth(scene / "depth" / f"{im_id:06d}.png", scales[im_id])
            table = table_depth(cams[im_id], world_to_camera(scene, im_id), *depth.shape, 1.0)
            free = table > 0
            for k in range(len(entries)):
                free &= ~read_mask(scene / "mask" / f"{im_id:06d}_{k:06d}.png")
            d, z = depth[free], table[free]
            on_table += (np.abs(d - z) <= sensor_tolerance(z)).sum()
            table_pixels += free.sum()
    # Distractors, which have no masks, and dropouts hide some of the table.
    assert table_pixels > 10000 and on_table / table_pixels > 0.6


def test_depth_sensor_off_writes_the_exact_object_depth(synth_dir, tiny_config, tmp_path):
    cfg = SynthConfig.from_dict({**SynthConfig.from_yaml(tiny_config).to_dict(),
                                 "depth_sensor": False})
    generate(OBJECTS, tmp_path, scenes=1, seed=3, cfg=cfg, progress=False)
    clean, sensor = tmp_path / "train" / "000000", scenes(synth_dir)[0]
    for z, d in visible_depths(clean):
        assert (np.abs(d - z) < 0.1 * MM).all()
    # Sensor depth draws from its own stream: the same images and poses either way.
    assert (clean / "scene_gt.json").read_text() == (sensor / "scene_gt.json").read_text()
    for f in sorted((clean / "rgb").iterdir()):
        assert f.read_bytes() == (sensor / "rgb" / f.name).read_bytes()
    for f in sorted((clean / "depth").iterdir()):
        assert f.read_bytes() != (sensor / "depth" / f.name).read_bytes()


def test_same_seed_same_dataset_with_any_number_of_workers(synth_dir, tiny_config, tmp_path):
    summary = generate(OBJECTS, tmp_path, scenes=2, workers=1, seed=3,
                       cfg=SynthConfig.from_yaml(tiny_config), progress=False)
    assert summary.scenes_written == 2 and summary.images == 6
    for a, b in zip(scenes(synth_dir), scenes(tmp_path), strict=True):
        assert (a / "scene_gt.json").read_text() == (b / "scene_gt.json").read_text()
        for f in [*sorted((a / "rgb").iterdir()), *sorted((a / "depth").iterdir())]:
            assert f.read_bytes() == (b / f.parent.name / f.name).read_bytes()


def test_resume_after_interruption(tiny_config, tmp_path):
    cfg = SynthConfig.from_yaml(tiny_config)
    generate(OBJECTS, tmp_path, scenes=2, seed=5, cfg=cfg, progress=False)
    before = (tmp_path / "train" / "000001" / "scene_gt.json").read_text()
    # An interrupted run leaves a partial hidden folder and misses the scene.
    shutil.rmtree(tmp_path / "train" / "000001")
    (tmp_path / "train" / ".000001.partial" / "rgb").mkdir(parents=True)
    summary = generate(OBJECTS, tmp_path, scenes=3, seed=5, cfg=cfg, progress=False)
    assert (summary.scenes_written, summary.scenes_skipped) == (2, 1)
    assert (tmp_path / "train" / "000001" / "scene_gt.json").read_text() == before
    assert not list((tmp_path / "train").glob(".*"))
    with pytest.raises(SynthError, match="seed"):
        generate(OBJECTS, tmp_path, scenes=3, seed=6, cfg=cfg, progress=False)


def test_cli_errors_name_the_file(tmp_path, capsys):
    bad = tmp_path / "objects.yaml"
    bad.write_text("objects:\n  - name: thing\n    id: 1\n    mesh: missing.ply\n"
                   "    mesh_units: parsec\n")
    assert main(["synth", "--objects", str(bad), "--out", str(tmp_path / "o"),
                 "--scenes", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "mesh_units" in err

    broken = tmp_path / "broken.ply"
    broken.write_text("ply\nformat ascii 1.0\nelement vertex 3\nend_header\n1 2\n")
    bad.write_text(f"objects:\n  - name: thing\n    id: 1\n    mesh: {broken.name}\n"
                   "    mesh_units: mm\n")
    assert main(["synth", "--objects", str(bad), "--out", str(tmp_path / "o"),
                 "--scenes", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert str(broken) in err and "thing" in err

    cfg = tmp_path / "synth.yaml"
    cfg.write_text(yaml.safe_dump({**TINY, "distance": [1.0, 0.5]}))
    assert main(["synth", "--out", str(tmp_path / "o"), "--scenes", "1",
                 "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert str(cfg) in err and "distance" in err


def test_config_rejects_unknown_fields(tmp_path):
    path = tmp_path / "synth.yaml"
    path.write_text("widht: 320\n")
    with pytest.raises(SynthConfigError, match="widht"):
        SynthConfig.from_yaml(path)


def test_bench_synth_prints_images_per_second(capsys):
    assert main(["bench", "synth", "--scenes", "1", "--images-per-scene", "2", "--workers", "1",
                 "--frames", "3", "--json"]) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert r["images_per_s"] > 0 and r["render_fps"] > 0 and r["speedup_render"] > 0


def test_shipped_config_holds_the_defaults():
    assert SynthConfig.from_yaml(REPO / "config" / "synth.yaml") == SynthConfig()


def test_photo_backgrounds(tmp_path, tiny_config):
    import cv2

    from pose6d_ros.data.appearance import PhotoBackgrounds

    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "a.png"), np.full((300, 400, 3), (0, 200, 0), np.uint8))
    (photos / "notes.txt").write_text("not an image")
    cv2.imwrite(str(photos / "a_nm.png"), np.full((300, 400, 3), (255, 128, 128), np.uint8))
    assert [p.name for p in PhotoBackgrounds(photos).paths] == ["a.png"]
    crop = PhotoBackgrounds(photos).sample(np.random.default_rng(0), 120, 160)
    assert crop.shape == (120, 160, 3) and (crop == [0, 200, 0]).all()
    cfg = SynthConfig.from_dict({**SynthConfig.from_yaml(tiny_config).to_dict(),
                                 "photo_background_prob": 1.0, "images_per_scene": 1,
                                 "noise_std": 0.0, "color_jitter": 0.0, "blur_sigma": 0.0})
    generate(OBJECTS, tmp_path / "out", scenes=1, cfg=cfg, backgrounds=photos, progress=False)
    rgb = read_image(tmp_path / "out" / "train" / "000000" / "rgb" / "000000.jpg")
    assert np.median(rgb.reshape(-1, 3), axis=0)[1] > 150  # mostly the green photo
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        PhotoBackgrounds(tmp_path / "empty")


def test_procedural_backgrounds_of_any_size():
    from pose6d_ros.data.appearance import procedural_background

    for size in [(8, 8), (32, 32), (480, 640)]:
        for seed in range(5):
            img = procedural_background(np.random.default_rng(seed), *size)
            assert img.shape == (*size, 3) and img.dtype == np.uint8


def test_backgrounds_command_links_usable_pictures(tmp_path, capsys):
    import cv2

    from pose6d_ros.cli import main

    src = tmp_path / "pkg" / "textures"
    src.mkdir(parents=True)
    noise = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    cv2.imwrite(str(src / "wall.png"), noise)
    cv2.imwrite(str(src / "wall_nm.png"), noise)  # a normal map
    cv2.imwrite(str(src / "icon.png"), noise[:64, :64])  # too small
    cv2.imwrite(str(src / "flat.png"), np.full((240, 320, 3), 90, np.uint8))
    (src / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "bg"
    assert main(["backgrounds", str(tmp_path / "pkg"), "--out", str(out)]) == 0
    assert "1 pictures linked" in capsys.readouterr().out
    assert [p.name for p in out.iterdir()] == ["textures_wall.png"]  # last path parts
    assert (out / "textures_wall.png").resolve() == (src / "wall.png").resolve()
    assert main(["backgrounds", str(tmp_path / "pkg"), "--out", str(out)]) == 0  # again: kept
    assert main(["backgrounds", str(tmp_path / "none"), "--out", str(out)]) == 2
    assert "none is not a folder" in capsys.readouterr().err
