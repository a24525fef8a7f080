"""ROS 2 adapters: the only package that imports rclpy and message packages."""
