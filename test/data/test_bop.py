import json

import numpy as np
import pytest

from pose6d_ros.data.bop import (
    BopFormatError,
    BopResult,
    load_scene_camera,
    load_scene_gt,
    read_results_csv,
    write_results_csv,
)


def test_scene_files_convert_units(tmp_path):
    (tmp_path / "scene_gt.json").write_text(json.dumps({"3": [{
        "cam_R_m2c": [1, 0, 0, 0, 1, 0, 0, 0, 1], "cam_t_m2c": [10.0, -20.0, 1000.0],
        "obj_id": 5}]}))
    (tmp_path / "scene_camera.json").write_text(json.dumps({"3": {
        "cam_K": [572.4, 0, 325.3, 0, 573.6, 242.0, 0, 0, 1], "depth_scale": 1.0}}))
    gt = load_scene_gt(tmp_path / "scene_gt.json")[3][0]
    assert gt.obj_id == 5 and np.allclose(gt.t, [0.01, -0.02, 1.0])
    assert gt.R.dtype == np.float64 and gt.R.shape == (3, 3)
    assert load_scene_camera(tmp_path / "scene_camera.json")[3][0, 2] == 325.3


def test_bad_scene_file_named(tmp_path):
    p = tmp_path / "scene_gt.json"
    p.write_text(json.dumps({"1": [{"cam_R_m2c": [1, 2], "cam_t_m2c": [0, 0, 1],
                                    "obj_id": 1}]}))
    with pytest.raises(BopFormatError, match=r"scene_gt\.json.*1\[0\]\.cam_R_m2c"):
        load_scene_gt(p)


def test_results_csv_round_trip(tmp_path):
    R = np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1]], dtype=float)
    rows = [BopResult(2, 3, 5, 0.9, R, np.array([0.1, -0.05, 0.8]), 0.25),
            BopResult(2, 3, 10, 0.4, np.eye(3), np.array([0.0, 0.0, 1.2]))]
    path = tmp_path / "results.csv"
    write_results_csv(path, rows)
    lines = path.read_text().splitlines()
    assert lines[0] == "scene_id,im_id,obj_id,score,R,t,time"
    assert "100.000000 -50.000000 800.000000" in lines[1]  # millimetres in the file
    back = read_results_csv(path)
    assert [(r.obj_id, r.score, r.time) for r in back] == [(5, 0.9, 0.25), (10, 0.4, -1.0)]
    assert np.allclose(back[0].R, R) and np.allclose(back[0].t, [0.1, -0.05, 0.8])


def test_results_csv_bad_header(tmp_path):
    p = tmp_path / "r.csv"
    p.write_text("a,b\n")
    with pytest.raises(BopFormatError, match="header"):
        read_results_csv(p)
