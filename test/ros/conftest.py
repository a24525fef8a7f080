"""Fixtures of the ROS tests: the rosbags message classes (no rclpy needed)."""

import pytest

from pose6d_ros.ros import messages as m


@pytest.fixture(scope="module")
def store():
    return m.rosbags_typestore("humble")


@pytest.fixture(scope="module")
def types(store):
    return m.rosbags_types(store)
