"""pose6d_ros: 6D pose of known objects from RGB images, with a ROS 2 node around it."""

__version__ = "0.1.0"
