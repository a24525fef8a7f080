"""`pose_node` entry point."""

import sys


def main(args: list[str] | None = None) -> int:
    """Start the pose node (not in this release: the estimator it serves comes first)."""
    print("pose_node: the ROS 2 pose node is not part of this release yet; "
          "`pose6d demo` shows what is available.", file=sys.stderr)
    return 1
