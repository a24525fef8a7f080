"""`pose6d onboard`: a new object from its mesh to measured poses, resumable step by step.

Steps, each skipped when its output is already there for the same inputs:
1. check the mesh (units, defects, colours);
2. find its symmetries (or keep / drop them) and draw them;
3. write its entry into the objects YAML, and a one-object YAML in the work folder;
4. build its template bank and viewpoint models (training-free poses from here on);
5. optionally generate training data and train the detector (`--train`);
6. render a synthetic validation split of the object and measure poses on it with
   ground-truth boxes;
7. print the figures and the `ros2 launch` line.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from pose6d_ros.core.objects import UNITS, ObjectsConfigError, load_objects, upsert_object_entry
from pose6d_ros.onboard.mesh_check import MeshReport, check_mesh
from pose6d_ros.onboard.report import draw_symmetry_report
from pose6d_ros.onboard.symmetry_search import FoundSymmetries, find_symmetries
from pose6d_ros.templates.bank import BankConfig

SYMMETRY_MODES = ("auto", "none", "keep")


@dataclass
class OnboardOptions:
    """What `pose6d onboard` was asked to do."""

    mesh: Path
    name: str
    objects: Path  # the objects YAML to add the object to
    work: Path  # the object's folder: report, one-object YAML, data, runs, figures
    units: str = "auto"
    symmetries: str = "auto"  # auto: search; none: no symmetry; keep: the YAML's entry
    obj_id: int | None = None
    train: str = "none"  # none, cpu, gpu
    budget_s: float = 7200.0
    val_scenes: int = 6
    val_images_per_scene: int = 8
    device: str = "auto"
    templates_cache: Path | None = None
    bank: BankConfig = field(default_factory=BankConfig)  # template density
    seed: int = 0
    progress: bool = True


@dataclass
class OnboardResult:
    """What onboarding produced."""

    entry: dict[str, Any]
    mesh: MeshReport
    symmetries: FoundSymmetries
    report_png: Path
    object_yaml: Path  # the one-object YAML in the work folder
    figures: dict[str, dict[str, Any]]  # "rgb", "rgbd" (and "detector"): `pose6d eval`
    weights: dict[str, Path]  # "detector" when trained
    params_yaml: Path  # pose_node's parameters for these objects
    seconds: dict[str, float]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _load_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _symmetries(opts: OnboardOptions, mesh, report: MeshReport, mesh_sha: str,
                log: Callable[[str], None]) -> FoundSymmetries:
    if opts.symmetries == "none":
        return FoundSymmetries()
    if opts.symmetries == "keep":
        return _kept_symmetries(opts)
    cache = opts.work / "symmetries.json"
    stamp = {"mesh_sha256": mesh_sha, "units": report.units}
    saved = _load_json(cache)
    if saved is not None and saved.get("stamp") == stamp:
        log(f"symmetries: {cache} (found before)")
        return FoundSymmetries(discrete=[np.asarray(T).reshape(4, 4) for T in saved["discrete"]],
                               continuous=saved["continuous"], residuals=saved["residuals"],
                               notes=saved["notes"])
    found = find_symmetries(mesh, report.diameter)
    cache.write_text(json.dumps({
        "stamp": stamp, "discrete": [T.reshape(-1).tolist() for T in found.discrete],
        "continuous": found.continuous, "residuals": found.residuals, "notes": found.notes},
        indent=1))
    return found


def _kept_symmetries(opts: OnboardOptions) -> FoundSymmetries:
    """The symmetries the YAML's entry of this name has (`--symmetries keep`)."""
    try:
        entries = (yaml.safe_load(opts.objects.read_text()) or {}).get("objects") or []
    except (OSError, yaml.YAMLError) as exc:
        raise ObjectsConfigError(f"{opts.objects}: --symmetries keep: cannot read: {exc}"
                                 ) from exc
    entry = next((e for e in entries if isinstance(e, dict) and e.get("name") == opts.name),
                 None)
    if entry is None:
        raise ObjectsConfigError(f"{opts.objects}: --symmetries keep: no object named "
                                 f"{opts.name!r} yet; run with --symmetries auto first")
    return FoundSymmetries(
        discrete=[np.asarray(T, float).reshape(4, 4) for T in
                  entry.get("symmetries_discrete") or []],
        continuous=[{"axis": list(c["axis"]), "offset": list(c.get("offset", [0, 0, 0]))}
                    for c in entry.get("symmetries_continuous") or []],
        residuals=[float("nan")] * len(entry.get("symmetries_discrete") or []),
        notes=["kept from the objects YAML"])


def _entry(opts: OnboardOptions, report: MeshReport, found: FoundSymmetries
           ) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": opts.name, "mesh": str(opts.mesh.resolve()),
                             "mesh_units": report.units,
                             "diameter": round(report.diameter, 4)}
    if opts.obj_id is not None:
        entry["id"] = opts.obj_id
    entry.update(found.to_yaml_fields())
    return entry


def _build_assets(object_yaml: Path, opts: OnboardOptions, log: Callable[[str], None]) -> None:
    """The object's template bank and viewpoint models, in the shared cache."""
    from pose6d_ros.pipeline import resolve_device
    from pose6d_ros.refine.viewpoint_models import (
        ViewpointConfig,
        load_or_build_viewpoint_models,
    )
    from pose6d_ros.templates.bank import load_or_build_banks

    objects = load_objects(object_yaml)
    cache = str(opts.templates_cache) if opts.templates_cache else None
    load_or_build_banks(objects, opts.bank, cache_dir=cache,
                        device=resolve_device(opts.device), log=log)
    load_or_build_viewpoint_models(objects, ViewpointConfig(), cache_dir=cache, log=log)


def _validation_split(object_yaml: Path, opts: OnboardOptions) -> Path:
    """A synthetic test split of the object alone (resumable), with sensor-like depth."""
    from pose6d_ros.data.scenes import SynthConfig
    from pose6d_ros.data.synth import generate

    cfg = SynthConfig(images_per_scene=opts.val_images_per_scene, objects_per_scene=(1, 2))
    data = opts.work / "synth_val"
    generate(object_yaml, data, scenes=opts.val_scenes, seed=opts.seed + 1000, split="test",
             cfg=cfg, progress=opts.progress)
    return data


def _evaluate(objects_yaml: Path, data: Path, opts: OnboardOptions, mode: str,
              detector: Path | None, log: Callable[[str], None]) -> dict[str, Any]:
    """Figures of `pose6d eval` on the validation split (cached per inputs): mode "rgb" or
    "rgbd" with ground-truth boxes, "detector" (RGB) with the trained detector's."""
    from pose6d_ros.eval.evaluate import evaluate, write_outputs
    from pose6d_ros.pipeline import Estimator, EstimatorConfig

    out = opts.work / "eval" / mode
    stamp = {"objects_sha256": _sha(objects_yaml),
             "data": sorted(p.name for p in (data / "test").iterdir() if p.is_dir()),
             "detector": _sha(detector) if detector else "", "bank": opts.bank.to_dict()}
    saved = _load_json(out / "onboard_stamp.json")
    figures = _load_json(out / "figures.json")
    if saved == stamp and figures is not None:
        log(f"eval: {out}/figures.json (measured before)")
        return figures
    cfg = EstimatorConfig(objects=str(objects_yaml),
                          detector_weights=str(detector) if detector else None,
                          coordnet_weights=None, coarse="templates", device=opts.device,
                          templates=opts.bank,
                          templates_cache=str(opts.templates_cache)
                          if opts.templates_cache else None)
    estimator = Estimator(cfg)
    report = evaluate(data, estimator, boxes="detector" if detector else "gt", split="test",
                      progress=opts.progress, depth=mode == "rgbd")
    figures = write_outputs(report, estimator.objects, out)
    (out / "onboard_stamp.json").write_text(json.dumps(stamp))
    return figures


def onboard(opts: OnboardOptions, log: Callable[[str], None] = print) -> OnboardResult:
    """Run every step of onboarding `opts.mesh` as `opts.name` (see the module docstring)."""
    if opts.symmetries not in SYMMETRY_MODES:
        raise ValueError(f"--symmetries: expected one of {SYMMETRY_MODES}")
    if opts.train not in ("none", "cpu", "gpu"):
        raise ValueError("--train: expected none, cpu or gpu")
    seconds: dict[str, float] = {}
    opts.work.mkdir(parents=True, exist_ok=True)
    clock = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[step] = now - clock
        clock = now

    mesh, report = check_mesh(opts.mesh, opts.units)
    for line in report.lines():
        log(line)
    lap("mesh")
    found = _symmetries(opts, mesh, report, _sha(opts.mesh), log)
    log(f"symmetries ({opts.symmetries}):")
    for line in found.describe():
        log(f"  {line}")
    for note in found.notes:
        log(f"  note: {note}")
    mesh_m = mesh.copy()
    mesh_m.apply_scale(UNITS[report.units])
    report_png = draw_symmetry_report(mesh_m, found.scaled(UNITS[report.units]),
                                      opts.work / "symmetries.png")
    log(f"  picture: {report_png} (override: edit the YAML entry, then run again with "
        "--symmetries keep)")
    lap("symmetries")

    entry = upsert_object_entry(opts.objects, _entry(opts, report, found))
    object_yaml = opts.work / "object.yaml"
    upsert_object_entry(object_yaml, {**entry, "mesh": str(opts.mesh.resolve())})
    log(f"objects: {opts.name} (id {entry['id']}) written to {opts.objects}; "
        f"alone in {object_yaml}")
    lap("yaml")

    _build_assets(object_yaml, opts, log)
    lap("templates")

    weights: dict[str, Path] = {}
    if opts.train != "none":
        from pose6d_ros.onboard.training import train_object

        weights = train_object(opts.objects, opts, log)
        lap("train")

    params = write_node_params(opts.work / "pose.yaml", opts.objects, weights)
    data = _validation_split(object_yaml, opts)
    lap("validation data")
    figures = {}
    for mode in ("rgb", "rgbd"):
        figures[mode] = _evaluate(object_yaml, data, opts, mode, None, log)
        lap(f"eval {mode}")
    if "detector" in weights:  # the detector knows every object of the YAML it was trained on
        figures["detector"] = _evaluate(opts.objects, data, opts, "detector",
                                        weights["detector"], log)
        lap("eval detector")
    result = OnboardResult(entry=entry, mesh=report, symmetries=found, report_png=report_png,
                           object_yaml=object_yaml, figures=figures, weights=weights,
                           params_yaml=params, seconds=seconds)
    (opts.work / "onboard.json").write_text(json.dumps({
        "options": {k: str(v) for k, v in asdict(opts).items()}, "entry": entry,
        "seconds": seconds,
        "figures": {mode: {k: f[k] for k in ("instances", "add_0.1d", "ar", "median_re_deg",
                                             "median_te_mm", "depth_images")}
                    for mode, f in figures.items()}}, indent=1))
    return result


def write_node_params(path: Path, objects: Path, weights: dict[str, Path]) -> Path:
    """pose_node's parameters file: the bundled one with the objects, template poses (the
    shipped CoordNet has no head for a new object) and the trained detector, if any."""
    from pose6d_ros.core.paths import share_dir

    values = {"objects": objects.resolve(), "coarse": "templates"}
    if "detector" in weights:
        values["detector_weights"] = weights["detector"].resolve()
    lines = (share_dir() / "config" / "pose.yaml").read_text().splitlines()
    for i, line in enumerate(lines):
        key = line.strip().split(":", 1)[0]
        if key in values and line.startswith("    ") and not line.strip().startswith("#"):
            lines[i] = f'    {key}: "{values.pop(key)}"'
    if values:
        raise ValueError(f"config/pose.yaml: no parameter {sorted(values)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def launch_line(params: Path) -> str:
    """The `ros2 launch` command that runs the node with a parameters file."""
    return f"ros2 launch pose6d_ros pose.launch.py config_file:={params.resolve()}"
