"""`pose6d predict` and `pose6d demo` as a user runs them."""

import json
import shutil

import numpy as np

from pose6d_ros.cli import main
from pose6d_ros.data.bop import read_results_csv


def _weights(tiny_weights) -> list[str]:
    return ["--detector", str(tiny_weights[0]), "--coordnet", str(tiny_weights[1]),
            "--device", "cpu", "--score", "0.0", "--min-inliers", "0"]


def test_bop_scene_in_bop19_csv_out(synth_dir, tiny_weights, tmp_path, capsys):
    scene = sorted((synth_dir / "train").iterdir())[0]
    out = tmp_path / "out"
    rc = main(["predict", "--images", str(scene), "--out", str(out), "--quiet",
               *_weights(tiny_weights)])
    assert rc == 0, capsys.readouterr().err
    results = read_results_csv(out / "results_bop19.csv")
    records = sorted((out / "json").glob("*.json"))
    assert len(records) == 3 and len(sorted((out / "overlays").glob("*.png"))) == 3
    first = json.loads(records[0].read_text())
    assert first["scene_id"] == int(scene.name) and first["im_id"] == 0
    assert len(results) == sum(len(json.loads(r.read_text())["poses"]) for r in records)
    for r in results:  # BOP19: one time per image, shared by its rows
        assert r.time > 0 and r.scene_id == int(scene.name)
        np.testing.assert_allclose(r.R @ r.R.T, np.eye(3), atol=1e-5)


def test_unreadable_image_is_reported_and_the_batch_goes_on(synth_dir, tiny_weights,
                                                             tmp_path, capsys):
    scene = sorted((synth_dir / "train").iterdir())[0]
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(scene / "rgb" / "000001.jpg", images / "000001.jpg")
    (images / "000002.png").write_bytes(b"\x89PNG broken")
    camera = tmp_path / "camera.json"
    K = np.array(json.loads((scene / "scene_camera.json").read_text())["1"]["cam_K"])
    camera.write_text(json.dumps({"fx": K[0], "fy": K[4], "cx": K[2], "cy": K[5]}))
    out = tmp_path / "out"
    rc = main(["predict", "--images", str(images), "--camera", str(camera), "--out", str(out),
               "--quiet", *_weights(tiny_weights)])
    text = capsys.readouterr().out
    assert rc == 1
    assert "000002.png" in text and "cannot read image" in text
    assert (out / "json" / "000000_000001.json").is_file()
    assert (out / "results_bop19.csv").is_file()


def test_missing_camera_and_corrupt_weights_are_clear_errors(synth_dir, tiny_weights,
                                                              tmp_path, capsys):
    scene = sorted((synth_dir / "train").iterdir())[0]
    rc = main(["predict", "--images", str(scene / "rgb" / "000000.jpg"), "--out",
               str(tmp_path), *_weights(tiny_weights)])
    assert rc == 2 and "--camera" in capsys.readouterr().err
    bad = tmp_path / "coordnet.pt"
    bad.write_bytes(b"\0" * 100)
    args = _weights(tiny_weights)
    args[args.index("--coordnet") + 1] = str(bad)
    rc = main(["predict", "--images", str(scene), "--out", str(tmp_path / "o"), *args])
    err = capsys.readouterr().err
    assert rc == 2 and str(bad) in err and "cannot load weights" in err


def test_demo_on_the_bundled_photographs(tiny_weights, tmp_path, capsys):
    out = tmp_path / "demo"
    # (the box-consistency checks off: they drop most of an untrained network's poses)
    rc = main(["demo", "--out", str(out), *_weights(tiny_weights), "--max-size-mismatch", "0",
               "--max-centre-offset", "0"])
    text = capsys.readouterr().out
    assert rc == 0
    assert "5 real LM-O photographs" in text and "ADD(-S) < 0.1d" in text
    assert "detector's boxes" in text and "ground-truth boxes" in text
    for mode in ("detector", "gt"):
        assert len(sorted((out / mode / "overlays").glob("*.png"))) == 5
        figures = json.loads((out / mode / "figures.json").read_text())
        assert figures["instances"] == 37  # every annotated target of the five images
    gt = json.loads((out / "gt" / "figures.json").read_text())
    assert gt["failed"] < 37  # given boxes, untrained weights still give PnP solutions
    rc = main(["demo", "--out", str(out / "only"), "--boxes", "gt", *_weights(tiny_weights)])
    text = capsys.readouterr().out
    assert rc == 0 and "ground-truth boxes" in text and "detector's boxes" not in text
    assert (out / "only" / "figures.json").is_file()


def test_image_size_against_the_camera_size_is_checked(synth_dir, tiny_weights, tmp_path,
                                                         capsys):
    """Intrinsics for another resolution: refused per image with the sizes and the camera
    file named; scaled with --scale-intrinsics when the aspect ratio matches."""
    from pose6d_ros.data.bop import read_image

    scene = sorted((synth_dir / "train").iterdir())[0]
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(scene / "rgb" / "000001.jpg", images / "000001.jpg")
    h, w = read_image(images / "000001.jpg").shape[:2]
    K = np.array(json.loads((scene / "scene_camera.json").read_text())["1"]["cam_K"])
    base = ["predict", "--images", str(images), "--quiet", "--coarse", "coordnet",
            "--refine", "none", *_weights(tiny_weights)]
    for size, flags, rc_want, text in (
            ((2 * w, 2 * h), [], 1, f"image is {w}x{h}, but the intrinsics"),
            ((2 * w, 2 * h), ["--scale-intrinsics"], 0, "1/1 images"),
            ((2 * w, 3 * h), ["--scale-intrinsics"], 1, "another aspect ratio")):
        camera = tmp_path / "camera.json"
        camera.write_text(json.dumps({"fx": 2 * K[0], "fy": 2 * K[4], "cx": 2 * K[2],
                                      "cy": 2 * K[5], "width": size[0], "height": size[1]}))
        out = tmp_path / f"out{len(flags)}{size[1]}"
        rc = main([*base, "--camera", str(camera), "--out", str(out), *flags])
        printed = capsys.readouterr().out
        assert rc == rc_want and text in printed, printed
        if rc == 1:
            assert str(camera) in printed
    record = json.loads((tmp_path / f"out1{2 * h}" / "json" / "000000_000001.json").read_text())
    np.testing.assert_allclose(record["K"][0][0], K[0], rtol=1e-6)  # scaled back to w x h


def test_depth_from_a_scene_or_a_folder_reaches_the_estimator(synth_dir, tiny_weights,
                                                              tmp_path, capsys):
    """`--depth SCENE` pairs each image with the scene's depth/; `--depth DIR` with the file
    of the same name, and a depth image of another size fails that image alone, named."""
    import cv2

    scene = sorted((synth_dir / "train").iterdir())[0]
    out = tmp_path / "scene"
    rc = main(["predict", "--images", str(scene), "--depth", str(scene), "--out", str(out),
               "--quiet", "--no-overlays", *_weights(tiny_weights)])
    assert rc == 0, capsys.readouterr()
    records = [json.loads(p.read_text()) for p in sorted((out / "json").glob("*.json"))]
    assert [r["depth"] for r in records] == [str(scene / "depth" / f"{i:06d}.png")
                                             for i in range(3)]
    depth_dir = tmp_path / "depth"
    depth_dir.mkdir()
    mm = np.full((240, 320), 800, np.uint16)
    cv2.imwrite(str(depth_dir / "000000.png"), mm)
    cv2.imwrite(str(depth_dir / "000001.png"), mm[:100])
    out = tmp_path / "folder"
    camera = _camera(scene, tmp_path)
    rc = main(["predict", "--images", str(scene / "rgb"), "--camera", str(camera), "--depth",
               str(depth_dir), "--out", str(out), "--quiet", "--no-overlays",
               *_weights(tiny_weights)])
    text = capsys.readouterr().out
    assert rc == 1
    assert "000001.png" in text and "register the depth" in text  # another size
    assert "000002.png" in text and "cannot read" in text  # no such file
    assert (out / "json" / "000000_000000.json").is_file()


def _camera(scene, tmp_path):
    camera = tmp_path / "camera.json"
    K = np.array(json.loads((scene / "scene_camera.json").read_text())["0"]["cam_K"])
    camera.write_text(json.dumps({"fx": K[0], "fy": K[4], "cx": K[2], "cy": K[5]}))
    return camera
