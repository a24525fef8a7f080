"""ament_python package definition; also installs with pip outside ROS (Python 3.10-3.12)."""

from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "pose6d_ros"
HERE = Path(__file__).parent


def tree(folder: str) -> list[tuple[str, list[str]]]:
    """Data-file entries that install every file under `folder` into share/<package>/."""
    entries: dict[str, list[str]] = {}
    for path in sorted((HERE / folder).rglob("*")):
        if path.is_file():
            rel = path.relative_to(HERE)
            entries.setdefault(f"share/{PACKAGE}/{rel.parent}", []).append(str(rel))
    return sorted(entries.items())


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    package_data={PACKAGE: ["py.typed"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        *tree("launch"),
        *tree("config"),
        *tree("models"),
    ],
    python_requires=">=3.10",
    install_requires=[
        "setuptools",
        "numpy>=1.24",
        "opencv-python-headless>=4.8",
        "pyyaml>=6",
        "trimesh>=4",
        "roma>=1.5",
        "tqdm>=4.60",
        "moderngl>=5.8",
        "fast-simplification>=0.1.7",
        "pillow>=9",
        "scipy>=1.10",
        "matplotlib>=3.5",
        "torch>=2.1",
        "torchvision>=0.16",
        "rosbags>=0.10.9",
    ],
    # launch_testing's pytest plugin (Humble, Jazzy) fails to register under pytest >= 9.1.
    extras_require={"test": ["pytest>=7,<9.1", "ruff>=0.5"]},
    zip_safe=False,
    # colcon's scripts (lib/pose6d_ros/pose_node) run the `python3` first on PATH, not the
    # interpreter that ran colcon: activate the environment holding torch (a venv made with
    # --system-site-packages, or any venv with ROS's PYTHONPATH) after sourcing ROS.
    options={"build_scripts": {"executable": "/usr/bin/env python3"}},
    maintainer="pose6d_ros maintainers",
    maintainer_email="maintainers@pose6d-ros.dev",
    description="6D object pose estimation node for ROS 2 (Pix2Pose + BPnP).",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "pose6d = pose6d_ros.cli:main",
            "pose_node = pose6d_ros.ros.node:main",
        ],
    },
)
