"""Every setting of the pose node in one declarative table (ROS-free).

The node declares each field as a ROS parameter (type from the default, description, range,
read-only), `config/pose.yaml` lists the same names with the same defaults, and `pose6d bag`
reads that YAML into the same settings, so the node and its offline twin cannot drift apart.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pose6d_ros.core.paths import share_dir
from pose6d_ros.pipeline import COARSE_SOURCES, REFINE_MODES, EstimatorConfig


def _p(default: Any, description: str, *, range: tuple[float, float] | None = None,
       choices: tuple[str, ...] | None = None, read_only: bool = False,
       reload: bool = False) -> Any:
    """A settings field: `reload` marks settings that rebuild the estimator when changed."""
    return field(default=default, metadata={"description": description, "range": range,
                                            "choices": choices, "read_only": read_only,
                                            "reload": reload})


@dataclass
class PoseSettings:
    """The pose node's parameters with their defaults."""

    objects: str = _p("config/objects.yaml", "Objects YAML; a relative path is taken from "
                      "the package's share folder.", reload=True)
    detector_weights: str = _p("models/detector.pt", "Mask R-CNN weights (.pt); relative to "
                               "the share folder.", reload=True)
    coordnet_weights: str = _p("models/coordnet.pt", "CoordNet weights (.pt); relative to "
                               "the share folder; unused with coarse 'templates'.",
                               reload=True)
    coarse: str = _p("both", "Coarse poses from 'coordnet' (CoordNet + PnP), 'templates' "
                     "(template retrieval, no training needed) or 'both' (each instance keeps "
                     "the hypothesis whose silhouette best fits its mask).",
                     choices=COARSE_SOURCES, reload=True)
    templates_cache: str = _p("", "Template bank folder; empty: $POSE6D_CACHE/templates or "
                              "~/.cache/pose6d_ros/templates. Banks missing there are built "
                              "at start-up (pose6d templates build does it beforehand).",
                              reload=True)
    refine: str = _p("contour", "Render-and-compare: 'contour' refines every hypothesis "
                     "against the image (region-based, along its contour) and keeps the one "
                     "that agrees best; 'none' keeps the coarse poses.",
                     choices=REFINE_MODES, reload=True)
    device: str = _p("auto", "auto (CUDA when available, else CPU), cpu, cuda or cuda:N.",
                     reload=True)
    precision: str = _p("auto", "Network arithmetic: auto (bf16 on CUDA, fp32 on the CPU), "
                        "fp32, bf16 or fp16 (CUDA).", reload=True)
    estimator: str = _p("pose6d_ros.pipeline:Estimator", "Estimator class 'module:Class', "
                        "given an EstimatorConfig (tests plug in a stub).", read_only=True)
    detection_score: float = _p(0.5, "Minimum detector score.", range=(0.0, 1.0))
    min_inliers: int = _p(12, "Fewer PnP inliers and the instance is dropped.",
                          range=(4, 100000))
    max_size_mismatch: float = _p(4.0, "A pose whose projected object diameter is over this "
                                  "many times the box's longer side, or under 1/this, is "
                                  "dropped; 0: no check.", range=(0.0, 100.0))
    max_centre_offset: float = _p(1.0, "A pose whose projected object centre is more than "
                                  "this many box sides from the box centre is dropped; 0: no "
                                  "check.", range=(0.0, 100.0))
    min_pose_score: float = _p(0.0, "Instances whose pose quality (the score's verification "
                               "part) is below this are dropped.", range=(0.0, 1.0))
    max_instances: int = _p(16, "Most instances per image, best scores first.",
                            range=(1, 256))
    input_scale: float = _p(1.0, "Resize factor applied to images before estimation "
                            "(intrinsics scaled to match).", range=(0.1, 2.0))
    rectified: bool = _p(False, "Images are rectified: use camera_info P instead of K.")
    use_compressed: bool = _p(False, "Subscribe to sensor_msgs/CompressedImage on 'image'.",
                              read_only=True)
    use_depth: bool = _p(False, "Also subscribe to a registered depth image on 'depth' "
                         "(16UC1 or mono16 in units of depth_scale, 32FC1 in metres) and "
                         "refine the poses with it.", read_only=True)
    depth_scale: float = _p(0.001, "Metres per unit of 16UC1/mono16 depth (0.001: "
                            "millimetres); 32FC1 depth is metres already.",
                            range=(1e-06, 1.0))
    sync_slop: float = _p(0.05, "Largest stamp difference (s) between an image and its "
                          "camera_info (and depth).", range=(0.0, 1.0), read_only=True)
    sync_queue_size: int = _p(10, "Messages kept per input while pairing.", range=(1, 1000),
                              read_only=True)
    tf_prefix: str = _p("", "Prefix of the TF child frames <prefix><object>_<index>.")
    publish_tf: bool = _p(True, "Broadcast one TF frame per instance.")
    publish_markers: bool = _p(True, "Publish mesh markers on 'markers'.")
    publish_per_class_poses: bool = _p(False, "Also publish 'poses/<object>' PoseArrays.",
                                       read_only=True)
    marker_lifetime: float = _p(0.5, "Marker lifetime (s); 0 keeps them forever.",
                                range=(0.0, 3600.0))
    track_gate: float = _p(0.1, "Largest move (m) between frames that keeps an instance's "
                           "index and symmetry choice.", range=(0.0, 100.0))
    track_max_missed: int = _p(5, "Frames an unseen instance keeps its index.",
                               range=(0, 100000))
    detect_every: int = _p(1, "Run the detector and the coarse poses on every N-th frame "
                           "only; on the frames between, refine each tracked instance from "
                           "its previous pose (tracking mode). 1: detect on every frame.",
                           range=(1, 10000))
    track_min_score: float = _p(0.2, "Tracking mode: a tracked instance whose score (on "
                                "tracked frames the verification alone: the share of its "
                                "contour that the image confirms, or its depth agreement) is "
                                "below this is dropped, and the next frame detects again.",
                                range=(0.0, 1.0))
    refine_iterations: int = _p(6, "Tracking mode: contour refinement iterations per tracked "
                                "frame, on the two finest line spacings (2 and 1 px); "
                                "detection frames keep the full schedule (15 iterations from "
                                "8 px). Tracking with depth uses the depth refiner's own "
                                "iterations.", range=(0, 100))
    fusion: bool = _p(False, "Fuse the recent views into one pose per object in "
                      "fixed_frame (camera poses from TF at each image stamp), published on "
                      "'fused/poses', 'fused/detections' and TF beside the per-view outputs.",
                      read_only=True)
    fixed_frame: str = _p("world", "Frame of the fused poses; the camera's pose in it "
                          "(fixed_frame <- the image's frame_id) is looked up in TF at each "
                          "image stamp.", read_only=True)
    fusion_window: int = _p(4, "Most views fused together; the oldest leaves first.",
                            range=(1, 64))
    fusion_window_s: float = _p(0.0, "Views older than this (s) before the newest leave the "
                                "window; 0: no time limit.", range=(0.0, 3600.0))
    min_view_baseline: float = _p(0.05, "A view whose camera centre is within this (m) of a "
                                  "view in the window replaces the nearest such view instead "
                                  "of being added (a camera standing still keeps one view).",
                                  range=(0.0, 10.0))
    diagnostics_period: float = _p(1.0, "Seconds between /diagnostics messages.",
                                   range=(0.1, 60.0), read_only=True)


@dataclass(frozen=True)
class ParamSpec:
    """One parameter of the table."""

    name: str
    default: Any
    type: type
    description: str
    range: tuple[float, float] | None
    read_only: bool
    reload: bool
    choices: tuple[str, ...] | None = None


def param_specs() -> list[ParamSpec]:
    """The parameters in declaration order."""
    return [ParamSpec(f.name, f.default, type(f.default), f.metadata["description"],
                      f.metadata["range"], f.metadata["read_only"], f.metadata["reload"],
                      f.metadata["choices"])
            for f in dataclasses.fields(PoseSettings)]


def check_value(spec: ParamSpec, value: Any) -> Any:
    """`value` converted to the parameter's type; ValueError naming the parameter otherwise."""
    if spec.type is bool:
        ok = isinstance(value, bool)
    elif spec.type is float:  # an integer is a valid float (YAML writes 1 for 1.0)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        ok = isinstance(value, spec.type) and not isinstance(value, bool)
    if not ok:
        raise ValueError(f"parameter {spec.name!r}: expected {spec.type.__name__}, got "
                         f"{value!r}")
    if spec.range is not None and not spec.range[0] <= value <= spec.range[1]:
        raise ValueError(f"parameter {spec.name!r}: {value!r} is outside "
                         f"[{spec.range[0]}, {spec.range[1]}]")
    if spec.choices is not None and value not in spec.choices:
        raise ValueError(f"parameter {spec.name!r}: expected one of {list(spec.choices)}, "
                         f"got {value!r}")
    return spec.type(value)


def settings_from_dict(values: dict[str, Any], base: PoseSettings | None = None
                       ) -> PoseSettings:
    """Settings from `{name: value}` over `base` (default: the defaults), each checked."""
    specs = {s.name: s for s in param_specs()}
    unknown = sorted(set(values) - set(specs))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown}; known: {sorted(specs)}")
    checked = {k: check_value(specs[k], v) for k, v in values.items()}
    return dataclasses.replace(base or PoseSettings(), **checked)


def load_params_yaml(path: str | Path, node_name: str = "pose_node") -> PoseSettings:
    """Settings from a ROS 2 parameters file (`/**:` or `<node_name>:` -> `ros__parameters`)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: cannot read parameters: {exc}") from exc
    values: dict[str, Any] = {}
    for key in ("/**", node_name, f"/{node_name}"):  # later (more specific) entries win
        entry = data.get(key) if isinstance(data, dict) else None
        if isinstance(entry, dict):
            values.update(entry.get("ros__parameters") or {})
    if not values:
        raise ValueError(f"{path}: no '/**' or '{node_name}' entry with ros__parameters")
    try:
        return settings_from_dict(values)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def resolve_path(value: str) -> Path:
    """A path parameter as a file path: relative ones from the package's share folder."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else share_dir() / path


def estimator_config(settings: PoseSettings) -> EstimatorConfig:
    """The EstimatorConfig the settings describe (paths resolved)."""
    return EstimatorConfig(objects=str(resolve_path(settings.objects)),
                           detector_weights=str(resolve_path(settings.detector_weights)),
                           coordnet_weights=(None if settings.coarse == "templates" else
                                             str(resolve_path(settings.coordnet_weights))),
                           coarse=settings.coarse,
                           templates_cache=(str(resolve_path(settings.templates_cache))
                                            if settings.templates_cache else None),
                           refine=settings.refine, min_pose_score=settings.min_pose_score,
                           device=settings.device, precision=settings.precision,
                           detection_score=settings.detection_score,
                           min_inliers=settings.min_inliers,
                           max_size_mismatch=settings.max_size_mismatch,
                           max_centre_offset=settings.max_centre_offset,
                           max_instances=settings.max_instances,
                           track_iterations=settings.refine_iterations)
