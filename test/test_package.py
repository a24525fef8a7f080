"""The package as ROS and pip see it, and the house rules."""

import importlib.util
import re
import subprocess
import xml.etree.ElementTree as ET

import pytest

from test.conftest import REPO


def test_package_xml_declares_dependencies():
    root = ET.parse(REPO / "package.xml").getroot()
    assert root.get("format") == "3" and root.findtext("name") == "pose6d_ros"
    execs = {e.text for e in root.findall("exec_depend")}
    assert {"rclpy", "sensor_msgs", "geometry_msgs", "vision_msgs", "visualization_msgs",
            "tf2_ros", "message_filters", "python3-opencv", "python3-numpy", "python3-yaml",
            "python3-trimesh-pip"} <= execs
    # Nothing declared that the code does not use (rosdep would install it for nothing).
    assert not {"cv_bridge", "tf_transformations"} & execs
    assert "launch_testing" in {e.text for e in root.findall("test_depend")}
    assert root.find("export/build_type").text == "ament_python"


def test_setup_entry_points_and_data():
    text = (REPO / "setup.py").read_text()
    assert "pose6d = pose6d_ros.cli:main" in text
    assert "pose_node = pose6d_ros.ros.node:main" in text
    assert (REPO / "resource" / "pose6d_ros").is_file()


def test_ros_imports_only_in_ros_package():
    pattern = re.compile(r"^\s*(import|from)\s+(rclpy|tf2_ros|cv_bridge|message_filters|"
                         r"(sensor|geometry|vision|visualization)_msgs)\b", re.M)
    offenders = [str(p.relative_to(REPO)) for p in (REPO / "pose6d_ros").rglob("*.py")
                 if pattern.search(p.read_text()) and "ros" not in p.relative_to(
                     REPO / "pose6d_ros").parts[:1]]
    assert offenders == []


@pytest.mark.skipif(importlib.util.find_spec("ruff") is None, reason="ruff not installed")
def test_ruff_clean():
    import sys
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", str(REPO)],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
