"""Start pose_node on a camera (and RViz2 with `use_rviz:=true`).

    ros2 launch pose6d_ros pose.launch.py image_topic:=/camera/color/image_raw \
        camera_info_topic:=/camera/color/camera_info use_rviz:=true

With registered depth (a RealSense with align_depth.enable:=true): add `use_depth:=true
depth_topic:=/camera/aligned_depth_to_color/image_raw`. Multi-view fusion of a moving camera
whose pose is in TF: add `fusion:=true fixed_frame:=map`.
"""

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.launch_context import LaunchContext
from launch.launch_description import LaunchDescription
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    """pose_node with remapped inputs, parameters from `config_file`; RViz2 optional."""
    share = FindPackageShare("pose6d_ros")
    arguments = [
        DeclareLaunchArgument("namespace", default_value="",
                              description="Namespace of pose_node, its topics and RViz2."),
        DeclareLaunchArgument("image_topic", default_value="image",
                              description="sensor_msgs/Image topic (CompressedImage with "
                                          "use_compressed: true in the config file)."),
        DeclareLaunchArgument("camera_info_topic", default_value="camera_info",
                              description="sensor_msgs/CameraInfo topic of the same camera."),
        DeclareLaunchArgument("depth_topic", default_value="depth",
                              description="sensor_msgs/Image depth registered to the image "
                                          "(16UC1, mono16 or 32FC1), read with use_depth, "
                                          "e.g. /camera/aligned_depth_to_color/image_raw."),
        DeclareLaunchArgument("use_depth", default_value="",
                              description="true: also subscribe to depth_topic and refine "
                                          "the poses with it; overrides the config file's "
                                          "use_depth when given (empty: keep the config "
                                          "file's)."),
        DeclareLaunchArgument("fusion", default_value="",
                              description="true: also fuse the recent views into one pose "
                                          "per object in fixed_frame (camera poses from TF); "
                                          "overrides the config file's fusion when given "
                                          "(empty: keep the config file's)."),
        DeclareLaunchArgument("fixed_frame", default_value="",
                              description="Frame of the fused poses (e.g. map, world); "
                                          "overrides the config file's fixed_frame when "
                                          "given (empty: keep the config file's)."),
        DeclareLaunchArgument("device", default_value="",
                              description="auto (CUDA when available, else CPU), cpu, cuda, "
                                          "cuda:N; overrides the config file's device when "
                                          "given (empty: keep the config file's)."),
        DeclareLaunchArgument("config_file",
                              default_value=PathJoinSubstitution([share, "config", "pose.yaml"]),
                              description="Parameters file of pose_node (see config/pose.yaml)."),
        DeclareLaunchArgument("use_rviz", default_value="false",
                              description="Start RViz2 with config/pose.rviz (needs rviz2 and "
                              "vision_msgs_rviz_plugins, which the package does not depend "
                              "on: a headless robot runs without them)."),
        DeclareLaunchArgument("rviz_fixed_frame", default_value="camera_optical_frame",
                              description="RViz2 fixed frame: the camera's frame_id."),
    ]
    namespace = LaunchConfiguration("namespace")
    rviz = Node(
        package="rviz2", executable="rviz2", name="rviz2", namespace=namespace, output="log",
        arguments=["-d", PathJoinSubstitution([share, "config", "pose.rviz"]),
                   "-f", LaunchConfiguration("rviz_fixed_frame")],
        condition=IfCondition(LaunchConfiguration("use_rviz")))
    return LaunchDescription([*arguments, OpaqueFunction(function=_pose_node), rviz])


def _pose_node(context: LaunchContext) -> list[Node]:
    """pose_node; `device`, `use_depth`, `fusion` and `fixed_frame` are passed only when
    given, so the config file's otherwise hold."""
    device = LaunchConfiguration("device").perform(context)
    use_depth = LaunchConfiguration("use_depth").perform(context)
    fusion = LaunchConfiguration("fusion").perform(context)
    fixed_frame = LaunchConfiguration("fixed_frame").perform(context)
    # value_type=str: launch would otherwise read `device:=0` as an integer, which the
    # node's string parameter refuses at start-up.
    overrides = [{"device": ParameterValue(device, value_type=str)}] if device else []
    if use_depth:  # `true`/`false` as YAML reads them; anything else fails at launch
        # A substitution, not the performed string: launch converts text to bool only for
        # substitutions and refuses a plain 'false' where a bool is asked for (Jazzy).
        overrides.append({"use_depth": ParameterValue(LaunchConfiguration("use_depth"),
                                                      value_type=bool)})
    if fusion:
        overrides.append({"fusion": ParameterValue(LaunchConfiguration("fusion"),
                                                   value_type=bool)})
    if fixed_frame:
        overrides.append({"fixed_frame": ParameterValue(fixed_frame, value_type=str)})
    return [Node(
        package="pose6d_ros", executable="pose_node", name="pose_node",
        namespace=LaunchConfiguration("namespace"), output="screen",
        parameters=[LaunchConfiguration("config_file"), *overrides],
        remappings=[("image", LaunchConfiguration("image_topic")),
                    ("camera_info", LaunchConfiguration("camera_info_topic")),
                    ("depth", LaunchConfiguration("depth_topic"))])]
