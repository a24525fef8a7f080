"""`pose6d onboard --train cpu|gpu`: synthetic training data of the objects YAML, then the
detector trained on it within the time budget.

About a quarter of the budget goes to data (the first scene is timed, then the number of
scenes is chosen to fit), the rest to training: a short calibration run measures the time of
a step and of a checkpoint, and `max_steps` is set so that the cosine schedule ends within
the budget, with `time_limit_s` as a safety net. The detector is fine-tuned from the shipped
one when the YAML starts with the bundled objects (widened to the new ones), else trained
from ImageNet MobileNetV2 features.

The plan (scenes, steps, initialisation) is kept in `WORK/train_plan.json`: running onboard
again generates the missing scenes and resumes the same run (`last.pt`) instead of planning
anew.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from pose6d_ros.core.objects import ObjectModel, load_objects

if TYPE_CHECKING:
    from pose6d_ros.data.scenes import SynthConfig
    from pose6d_ros.onboard.run import OnboardOptions
    from pose6d_ros.train.detector import DetectorTrainConfig

PLAN = "train_plan.json"
DATA_SHARE = 0.25  # of the budget spent generating training data
MIN_SCENES, MAX_SCENES = 2, 1000
VAL_SCENES = 2  # validation split, rendered with the training data
VAL_IMAGES = 16  # validated at every checkpoint
CALIBRATION_STEPS = 6  # the first one is not timed (first allocations and data)
MIN_STEPS = 2
CHECKPOINTS = 8  # per run: validation curve points and resume granularity
# Steps are planned for this share of the training time; the rest absorbs slower steps.
PLANNED_SHARE = 0.9
SLACK_S = 60.0  # least time the safety net allows beyond the planned run


def training_device(train: str) -> str:
    """The torch device of `--train cpu|gpu`."""
    if train == "cpu":
        return "cpu"
    if train != "gpu":
        raise ValueError(f"--train: expected cpu or gpu, got {train!r}")
    if not torch.cuda.is_available():
        raise ValueError("--train gpu: no CUDA device here (torch.cuda.is_available() is "
                         "False); use --train cpu")
    return "cuda"


def object_keys(objects: Sequence[ObjectModel]) -> list[list[Any]]:
    """`[name, id, sha256 of the mesh file]` of each object, in order."""
    return [[o.name, int(o.id), hashlib.sha256(o.mesh_path.read_bytes()).hexdigest()]
            for o in objects]


def shipped_detector_for(keys: list[list[Any]]) -> Path | None:
    """The shipped detector when the objects (`object_keys`) start with the C objects it
    knows, the first C of the bundled objects YAML (same names, ids and mesh bytes, in
    order), else None."""
    from pose6d_ros.core.paths import default_objects_yaml, default_weights
    from pose6d_ros.nets.detector import load_detector_checkpoint

    weights = default_weights("detector")
    if not weights.is_file():
        return None
    # The bundled YAML may have had objects onboarded into it: only its first C count.
    classes = int(load_detector_checkpoint(weights)["config"]["num_classes"])
    bundled = load_objects(default_objects_yaml())[:classes]
    if len(keys) < classes or len(bundled) < classes:
        return None
    if [k[:2] for k in keys[:classes]] != [[o.name, int(o.id)] for o in bundled]:
        return None  # names and ids differ: no need to hash the meshes
    return weights if keys[:classes] == object_keys(bundled) else None


def train_object(objects_yaml: Path, opts: OnboardOptions, log: Callable[[str], None], *,
                 synth: SynthConfig | None = None, train: dict[str, Any] | None = None
                 ) -> dict[str, Path]:
    """Generate data and train the detector on every object of `objects_yaml` within
    `opts.budget_s` (resumable); returns {"detector": the weights' path}.

    `synth` (the scenes' settings) and `train` (DetectorTrainConfig settings) apply when the
    run is planned; a planned run keeps its own.
    """
    from pose6d_ros.data.scenes import SynthConfig

    device = training_device(opts.train)
    objects_yaml = Path(objects_yaml).resolve()
    keys = object_keys(load_objects(objects_yaml))
    path = opts.work / PLAN
    stamp = {"objects": keys, "seed": opts.seed}
    plan = _load_plan(path, stamp)
    if plan is None:
        init = shipped_detector_for(keys)
        plan = {"stamp": stamp, "synth": (synth or SynthConfig()).to_dict(),
                "train": dict(train or {}), "init": str(init) if init else None}
    else:
        log(f"plan: {path} (planned before; remove it to plan anew)")
    data = opts.work / "synth_train"
    _make_data(objects_yaml, data, plan, path, opts, log)
    cfg = _run_config(objects_yaml, data, plan, device, opts)
    if "max_steps" not in plan:
        plan.update(_plan_steps(_calibrate(cfg, opts, log), opts.budget_s))
        _save_plan(path, plan)
        log(f"calibration: {plan['step_s']:.2f} s per step on {device}, "
            f"{plan['checkpoint_s']:.1f} s per checkpoint: {plan['max_steps']} steps planned "
            f"(time limit {plan['time_limit_s']:.0f} s); {path}")
    cfg = replace(cfg, max_steps=plan["max_steps"], epochs=plan["max_steps"],
                  checkpoint_every=plan["checkpoint_every"],
                  time_limit_s=plan["time_limit_s"])
    return {"detector": _train(cfg, plan, opts, log)}


def _load_plan(path: Path, stamp: dict[str, Any]) -> dict[str, Any] | None:
    """The plan saved at `path` (None: none yet); one made for other objects is an error."""
    if not path.is_file():
        return None
    try:
        plan = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the training plan: {exc}") from exc
    if plan.get("stamp") != stamp:
        raise ValueError(
            f"{path}: planned for other objects, meshes or seed than now; to train anew, "
            f"remove it with {path.parent / 'synth_train'} and {path.parent / 'runs'}")
    return plan


def _save_plan(path: Path, plan: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(plan, indent=1))
    tmp.replace(path)


def _make_data(objects_yaml: Path, data: Path, plan: dict[str, Any], path: Path,
               opts: OnboardOptions, log: Callable[[str], None]) -> None:
    """The training and validation splits under `data` (complete scenes are kept); the
    first time, the number of training scenes is chosen from a timed scene and saved."""
    from pose6d_ros.data.scenes import SynthConfig
    from pose6d_ros.data.synth import generate

    cfg = SynthConfig.from_dict(plan["synth"], source=f"{path}: synth")

    def make(scenes: int, split: str) -> float:
        done = generate(objects_yaml, data, scenes=scenes, split=split, seed=opts.seed,
                        cfg=cfg, progress=opts.progress)
        return done.seconds / max(1, done.scenes_written)

    if "scenes" not in plan:
        split = data / "train"
        complete = sum(1 for p in split.iterdir() if p.name.isdigit()) if split.is_dir() else 0
        plan["scene_s"] = make(complete + 1, "train")  # writes at least one scene
        fit = int(DATA_SHARE * opts.budget_s / plan["scene_s"]) - VAL_SCENES
        plan["scenes"] = min(MAX_SCENES, max(MIN_SCENES, fit))
        _save_plan(path, plan)
    log(f"data: {plan['scenes']} training and {VAL_SCENES} validation scenes of "
        f"{cfg.images_per_scene} images ({plan['scene_s']:.1f} s each) in {data}")
    make(plan["scenes"], "train")
    make(VAL_SCENES, "val")


def _run_config(objects_yaml: Path, data: Path, plan: dict[str, Any], device: str,
                opts: OnboardOptions) -> DetectorTrainConfig:
    """The detector run's settings, but for its length (see `_plan_steps`)."""
    from pose6d_ros.train.detector import DetectorTrainConfig

    # On the CPU, loading is a sliver of a step, and loader processes would take its cores.
    values = {"workers": 0 if device == "cpu" else 2, "val_images": VAL_IMAGES,
              **plan["train"]}
    return DetectorTrainConfig(data=str(data), objects=str(objects_yaml),
                               out=str(opts.work / "runs" / "detector"), device=device,
                               seed=opts.seed, init_weights=plan["init"], **values)


def _calibrate(cfg: DetectorTrainConfig, opts: OnboardOptions, log: Callable[[str], None]
               ) -> dict[str, float]:
    """Seconds of a training step, of a checkpoint (save, validation, plots) and of a
    trainer's set-up, from a few steps of the run's settings in a throw-away folder."""
    from pose6d_ros.train.detector import DetectorTrainer
    from pose6d_ros.train.logs import read_log

    out = opts.work / "runs" / "calibration"
    shutil.rmtree(out, ignore_errors=True)
    log(f"calibration: {CALIBRATION_STEPS} steps in {out}")
    cfg = replace(cfg, out=str(out), max_steps=CALIBRATION_STEPS, epochs=CALIBRATION_STEPS,
                  checkpoint_every=CALIBRATION_STEPS, log_every=1, time_limit_s=0.0)
    start = time.perf_counter()
    trainer = DetectorTrainer(cfg, progress=False, log=lambda _: None)
    built = time.perf_counter()
    trainer.run()
    ran = time.perf_counter()
    seconds = read_log(out / "log.csv")["seconds"]  # since run() began, at each step
    shutil.rmtree(out)
    return {"step_s": (seconds[-1] - seconds[0]) / (len(seconds) - 1),
            "checkpoint_s": ran - built - seconds[-1], "setup_s": built - start,
            "calibration_s": ran - start}


def _plan_steps(measured: dict[str, float], budget_s: float) -> dict[str, Any]:
    """`max_steps`, `checkpoint_every` and `time_limit_s` of a run that fits the training
    share of `budget_s` (after calibration), with the `measured` times."""
    step_s, checkpoint_s = measured["step_s"], measured["checkpoint_s"]
    run_s = (1 - DATA_SHARE) * budget_s - measured["calibration_s"] - measured["setup_s"]
    usable = PLANNED_SHARE * run_s - CHECKPOINTS * checkpoint_s
    max_steps = max(MIN_STEPS, int(usable / step_s))
    planned = max_steps * step_s + CHECKPOINTS * checkpoint_s
    return {**measured, "max_steps": max_steps,
            "checkpoint_every": max(1, math.ceil(max_steps / CHECKPOINTS)),
            "time_limit_s": max(run_s, planned + SLACK_S)}


def _train(cfg: DetectorTrainConfig, plan: dict[str, Any], opts: OnboardOptions,
           log: Callable[[str], None]) -> Path:
    """Run (or resume, or skip when done) the planned detector run; the weights' path."""
    from pose6d_ros.nets.detector import load_detector_checkpoint
    from pose6d_ros.train.detector import DetectorTrainer

    out = Path(cfg.out)
    last, final = out / "last.pt", out / "detector.pt"
    done = int(load_detector_checkpoint(last)["step"]) if last.is_file() else 0
    if done >= cfg.max_steps and final.is_file():
        log(f"detector: {final} (trained before, {done} steps)")
        return final
    init = plan["init"] or "ImageNet MobileNetV2 features"
    start = f"resumed at step {done}" if done else f"from {init}"
    log(f"detector: training on {cfg.device}, {start}, to {cfg.max_steps} steps "
        f"(~{plan['step_s'] * (cfg.max_steps - done) / 60:.0f} min) in {out}")
    trainer = DetectorTrainer(cfg, resume=last.is_file(), progress=opts.progress, log=log)
    weights = trainer.run()
    if trainer.step < cfg.max_steps:
        log(f"detector: time limit reached at step {trainer.step} of {cfg.max_steps}; "
            f"weights {weights} (run onboard again to go on)")
    else:
        log(f"detector: {trainer.step} steps done; weights {weights}")
    return weights
