"""The node's parameter table, config/pose.yaml, the launch file and the RViz config agree."""

import ast
import xml.etree.ElementTree as ET

import pytest
import yaml

from pose6d_ros.core.paths import share_dir
from pose6d_ros.ros.parameters import (
    PoseSettings,
    estimator_config,
    load_params_yaml,
    param_specs,
    resolve_path,
    settings_from_dict,
)
from test.conftest import REPO


def test_config_yaml_lists_every_parameter_with_its_default_and_type():
    params = yaml.safe_load((REPO / "config" / "pose.yaml").read_text())["/**"]["ros__parameters"]
    specs = param_specs()
    assert list(params) == [s.name for s in specs]
    for s in specs:
        # Exact types: rclpy refuses an integer override of a double parameter.
        assert type(params[s.name]) is s.type, s.name
        assert params[s.name] == s.default, s.name
    assert load_params_yaml(REPO / "config" / "pose.yaml") == PoseSettings()


def test_every_parameter_is_described_and_numbers_have_ranges():
    for s in param_specs():
        assert s.description.endswith(".") and len(s.description) > 10, s.name
        if s.type in (int, float):
            assert s.range is not None and s.range[0] <= s.default <= s.range[1], s.name


def test_settings_are_checked_with_errors_naming_the_parameter():
    assert settings_from_dict({"detection_score": 1}).detection_score == 1.0
    with pytest.raises(ValueError, match=r"'detection_score'.*outside"):
        settings_from_dict({"detection_score": 1.5})
    with pytest.raises(ValueError, match=r"'max_instances'.*expected int"):
        settings_from_dict({"max_instances": 2.5})
    with pytest.raises(ValueError, match=r"'publish_tf'.*expected bool"):
        settings_from_dict({"publish_tf": 1})
    with pytest.raises(ValueError, match=r"unknown parameter.*'score'"):
        settings_from_dict({"score": 0.3})


def test_params_yaml_node_entry_overrides_wildcard(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("/**:\n  ros__parameters: {tf_prefix: a/, max_instances: 4}\n"
                    "pose_node:\n  ros__parameters: {tf_prefix: b/}\n")
    s = load_params_yaml(path)
    assert (s.tf_prefix, s.max_instances) == ("b/", 4)
    path.write_text("other:\n  ros__parameters: {tf_prefix: a/}\n")
    with pytest.raises(ValueError, match=r"p\.yaml: no '/\*\*' or 'pose_node' entry"):
        load_params_yaml(path)
    path.write_text("/**:\n  ros__parameters: {min_inliers: 2}\n")
    with pytest.raises(ValueError, match=r"p\.yaml: parameter 'min_inliers'"):
        load_params_yaml(path)


def test_paths_resolve_from_the_share_folder(tmp_path):
    cfg = estimator_config(PoseSettings())
    assert cfg.objects == str(share_dir() / "config" / "objects.yaml")
    assert cfg.coordnet_weights == str(share_dir() / "models" / "coordnet.pt")
    assert resolve_path(str(tmp_path)) == tmp_path


def _launch_calls(name: str) -> list[ast.Call]:
    tree = ast.parse((REPO / "launch" / "pose.launch.py").read_text())
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and getattr(n.func, "id", None) == name]


def test_launch_file_arguments_are_described_and_used():
    declared = {}
    for call in _launch_calls("DeclareLaunchArgument"):
        kwargs = {k.arg: k.value for k in call.keywords}
        assert isinstance(kwargs.get("description"), ast.Constant | ast.JoinedStr)
        declared[call.args[0].value] = kwargs
    assert {"namespace", "image_topic", "camera_info_topic", "device", "config_file",
            "use_rviz"} <= set(declared)
    used = {c.args[0].value for c in _launch_calls("LaunchConfiguration")}
    assert set(declared) == used  # no argument declared and ignored
    nodes = {next(k.value.value for k in c.keywords if k.arg == "executable")
             for c in _launch_calls("Node")}
    assert nodes == {"pose_node", "rviz2"}


def test_rviz_config_shows_image_tf_markers_and_detections():
    cfg = yaml.safe_load((REPO / "config" / "pose.rviz").read_text())
    displays = {d["Class"]: d for d in cfg["Visualization Manager"]["Displays"]}
    assert displays["rviz_default_plugins/Image"]["Topic"]["Value"] == "debug_image"
    assert displays["rviz_default_plugins/MarkerArray"]["Topic"]["Value"] == "markers"
    assert "rviz_default_plugins/TF" in displays
    assert displays["vision_msgs_rviz_plugins/Detection3DArray"]["Topic"]["Value"] == \
        "detections"


def test_package_xml_has_the_node_dependencies_and_no_visualisation():
    """What the node needs at run time, and not RViz: `rosdep install` on a headless robot
    must not bring Qt."""
    root = ET.parse(REPO / "package.xml").getroot()
    assert root.tag == "package" and root.get("format") == "3"
    assert root.findtext("name") == "pose6d_ros" and root.findtext("license")
    execs = {e.text for e in root.findall("exec_depend")}
    assert {"rclpy", "sensor_msgs", "geometry_msgs", "vision_msgs", "visualization_msgs",
            "tf2_ros", "tf2_msgs", "message_filters", "diagnostic_msgs", "std_msgs",
            "rcl_interfaces", "launch", "launch_ros"} <= execs
    assert not {"rviz2", "vision_msgs_rviz_plugins"} & execs
    assert {"launch_testing", "launch_testing_ros"} <= {e.text
                                                        for e in root.findall("test_depend")}


def test_coarse_parameter_reaches_the_estimator():
    assert estimator_config(PoseSettings()).coarse == "both"
    cfg = estimator_config(settings_from_dict({"coarse": "templates",
                                               "templates_cache": "/tmp/banks"}))
    assert cfg.coarse == "templates" and cfg.coordnet_weights is None
    assert cfg.templates_cache == "/tmp/banks"
    with pytest.raises(ValueError, match=r"'coarse': expected one of \['coordnet', "):
        settings_from_dict({"coarse": "coord"})
