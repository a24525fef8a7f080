"""ROS-free core: rotations, poses, cameras, objects and their symmetries."""
