"""`pose6d synth`: BOP-format synthetic training scenes rendered from the objects' meshes.

Output, per scene `OUT/<split>/<scene_id:06d>/`: `rgb/IMID.jpg`, `depth/IMID.png` (as an
RGB-D camera reads it unless `depth_sensor` is off, see `depth_sensor.py`),
`mask/IMID_GTIDX.png` (full), `mask_visib/IMID_GTIDX.png`, `xyz/IMID_GTIDX.npz` (amodal
object coordinates), `scene_gt.json`, `scene_gt_info.json`, `scene_camera.json`.
`OUT/<split>/dataset.yaml` records the objects, seed and config. A scene is written to a
hidden folder and renamed when complete, so an interrupted run resumes where it stopped.
Scene `s` of a split draws its randomness from (seed, split, s) alone: the output does not
depend on the number of workers, and splits never repeat each other's scenes. Sensor depth
draws from a stream of its own, so switching it leaves the colour images and poses as they are.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from pose6d_ros.core.objects import ObjectRegistry, load_objects
from pose6d_ros.data import appearance
from pose6d_ros.data.bop import (
    GroundTruth,
    camera_entry,
    gt_entry,
    write_depth,
    write_json,
    write_mask,
    write_rgb,
    write_xyz,
)
from pose6d_ros.data.depth_sensor import sensor_depth
from pose6d_ros.data.render import Renderer, RenderOutput
from pose6d_ros.data.scenes import (
    SynthConfig,
    add_object_meshes,
    distractor_meshes,
    sample_layout,
    sample_view,
)

DEPTH_SCALE = 0.1  # depth PNG unit = 0.1 mm: up to 6.5 m
MANIFEST = "dataset.yaml"
DEPTH_STREAM = 1  # last seed word of a scene's sensor-depth generator


class SynthError(RuntimeError):
    """The output folder cannot be used as asked."""


@dataclass
class SceneStats:
    """What one scene added."""

    images: int = 0
    instances: int = 0
    visible: int = 0  # instances with visib_fract >= 0.1
    visib_sum: float = 0.0


@dataclass
class SynthSummary:
    """What a `generate` call did."""

    out: Path
    scenes_written: int = 0
    scenes_skipped: int = 0
    images: int = 0
    instances: int = 0
    visible: int = 0
    visib_sum: float = 0.0
    seconds: float = 0.0

    @property
    def images_per_s(self) -> float:
        """Images written per second of wall time."""
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def lines(self) -> list[str]:
        """A human summary."""
        mean_visib = self.visib_sum / self.instances if self.instances else 0.0
        return [
            f"synth: {self.out}",
            f"  scenes: {self.scenes_written} written, {self.scenes_skipped} already there",
            f"  images: {self.images} in {self.seconds:.1f} s ({self.images_per_s:.1f} images/s)",
            f"  instances: {self.instances} ({self.visible} with >= 10% visible, "
            f"mean visible fraction {mean_visib:.2f})",
        ]


class SceneWriter:
    """Renders and writes scenes; one per process (it owns a GL context)."""

    def __init__(self, objects: ObjectRegistry, cfg: SynthConfig, seed: int,
                 backgrounds: str | Path | None = None, split: str = "train") -> None:
        self.objects, self.cfg, self.seed = objects, cfg, seed
        self.split_key = zlib.crc32(split.encode())
        self.renderer = Renderer(cfg.width, cfg.height)
        add_object_meshes(self.renderer, objects, cfg.max_faces)
        # Distractor shapes are fixed by the seed, shared by all scenes.
        distractors = distractor_meshes(np.random.default_rng([seed, 2**31 - 1]))
        for key, mesh in distractors.items():
            self.renderer.add_mesh(key, mesh)
        self.bounds = [obj.bounds for obj in objects]
        self.distractor_bounds = {k: np.asarray(m.bounds) for k, m in distractors.items()}
        self.photos = appearance.PhotoBackgrounds(backgrounds) if backgrounds else None

    def write_scene(self, split_dir: Path, scene_id: int) -> SceneStats:
        """Render scene `scene_id` into `split_dir/<scene_id:06d>` (atomically)."""
        cfg = self.cfg
        rng = np.random.default_rng([self.seed, self.split_key, scene_id])
        depth_rng = np.random.default_rng([self.seed, self.split_key, scene_id, DEPTH_STREAM])
        final = split_dir / f"{scene_id:06d}"
        tmp = split_dir / f".{scene_id:06d}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        for sub in ("rgb", "depth", "mask", "mask_visib", "xyz"):
            (tmp / sub).mkdir(parents=True)
        layout = sample_layout(rng, cfg, self.bounds, self.distractor_bounds)
        labelled = [i for i, p in enumerate(layout) if p.label >= 0]
        scene_gt, scene_info, scene_cam = {}, {}, {}
        stats = SceneStats()
        for im_id in range(cfg.images_per_scene):
            view = sample_view(rng, cfg, layout)
            instances = view.instances(layout)
            out = self.renderer.render(view.K, instances, view.lighting)
            rgb = self._finish_image(rng, out)
            quality = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))
            write_rgb(tmp / "rgb" / f"{im_id:06d}.jpg", rgb, quality)
            depth = sensor_depth(depth_rng, out.depth, rgb, view.K, view.T_cam_world, cfg)
            write_depth(tmp / "depth" / f"{im_id:06d}.png", depth, DEPTH_SCALE)
            gts, infos = [], []
            for gt_idx, i in enumerate(labelled):
                name = f"{im_id:06d}_{gt_idx:06d}"
                inst = instances[i]
                full, visib = out.mask_full(i), out.mask_visib(i)
                write_mask(tmp / "mask" / f"{name}.png", full)
                write_mask(tmp / "mask_visib" / f"{name}.png", visib)
                write_xyz(tmp / "xyz" / f"{name}.npz", out.amodal[i].box, out.amodal[i].xyz)
                obj = self.objects[layout[i].label]
                gts.append(gt_entry(GroundTruth(obj.id, inst.R, inst.t)))
                infos.append(_gt_info(full, visib, out.amodal[i].vertex_box))
                stats.instances += 1
                stats.visib_sum += infos[-1]["visib_fract"]
                stats.visible += infos[-1]["visib_fract"] >= 0.1
            scene_gt[im_id], scene_info[im_id] = gts, infos
            scene_cam[im_id] = camera_entry(view.K, DEPTH_SCALE, view.T_cam_world)
            stats.images += 1
        write_json(tmp / "scene_gt.json", scene_gt)
        write_json(tmp / "scene_camera.json", scene_cam)
        write_json(tmp / "scene_gt_info.json", scene_info)
        os.replace(tmp, final)
        return stats

    def _finish_image(self, rng: np.random.Generator, out: RenderOutput) -> np.ndarray:
        """Background behind the render, then blur, noise and colour jitter."""
        cfg = self.cfg
        bg = None
        if self.photos is not None and rng.random() < cfg.photo_background_prob:
            bg = self.photos.sample(rng, cfg.height, cfg.width)
        if bg is None:
            bg = appearance.procedural_background(rng, cfg.height, cfg.width)
        img = appearance.composite(out.rgb, out.instance >= 0, bg)
        img = appearance.blur(rng, img, max_sigma=cfg.blur_sigma)
        img = appearance.jitter_colors(rng, img, brightness=cfg.color_jitter,
                                       contrast=cfg.color_jitter, saturation=cfg.color_jitter)
        return appearance.add_noise(rng, img, max_std=cfg.noise_std)


def _xywh(mask: np.ndarray) -> list[int]:
    """BOP box (x, y, w, h) of a mask's pixels; [-1, -1, -1, -1] when empty."""
    cols, rows = np.flatnonzero(mask.any(0)), np.flatnonzero(mask.any(1))
    if len(cols) == 0:
        return [-1, -1, -1, -1]
    return [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1),
            int(rows[-1] - rows[0] + 1)]


def _gt_info(full: np.ndarray, visib: np.ndarray, box: tuple[int, int, int, int] | None
             ) -> dict[str, Any]:
    """A `scene_gt_info.json` entry; bbox_obj is the projected mesh's box, not clipped."""
    n_all, n_visib = int(full.sum()), int(visib.sum())
    bbox_obj = [box[0], box[1], box[2] - box[0], box[3] - box[1]] if box else _xywh(full)
    return {"bbox_obj": bbox_obj, "bbox_visib": _xywh(visib), "px_count_all": n_all,
            "px_count_valid": n_all, "px_count_visib": n_visib,
            "visib_fract": float(n_visib / n_all) if n_all else 0.0}


_WORKER: dict[str, SceneWriter] = {}


def _init_worker(objects_yaml: str, cfg: SynthConfig, seed: int, backgrounds: str | None,
                 split: str, gl_threads: int) -> None:
    # Mesa's llvmpipe starts a rasteriser thread per core in every context; with several
    # workers they would fight over the cores. Read when the context is created.
    os.environ.setdefault("LP_NUM_THREADS", str(gl_threads))
    _WORKER["writer"] = SceneWriter(load_objects(objects_yaml), cfg, seed, backgrounds, split)


def _work(job: tuple[str, int]) -> tuple[int, SceneStats]:
    split_dir, scene_id = job
    return scene_id, _WORKER["writer"].write_scene(Path(split_dir), scene_id)


def _check_manifest(split_dir: Path, manifest: dict[str, Any]) -> None:
    """Refuse to mix scenes generated with other settings into one split."""
    path = split_dir / MANIFEST
    if not path.exists():
        split_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(manifest, sort_keys=False))
        return
    old = yaml.safe_load(path.read_text()) or {}
    for key in ("objects", "seed", "config"):
        if old.get(key) != manifest[key]:
            raise SynthError(f"{path}: {split_dir} was generated with another {key!r}; resume "
                             "with the same options, or write to a new --out or --split")


def generate(objects_yaml: str | Path, out: str | Path, *, scenes: int, workers: int = 1,
             seed: int = 0, split: str = "train", cfg: SynthConfig | None = None,
             backgrounds: str | Path | None = None, progress: bool = True) -> SynthSummary:
    """Write scenes 0..scenes-1 of `split` under `out`, skipping complete ones."""
    cfg = cfg or SynthConfig()
    cfg.check()
    objects_yaml = Path(objects_yaml).resolve()
    objects = load_objects(objects_yaml)
    for obj in objects:  # mesh errors surface here, naming the file, not in a worker
        _ = obj.mesh
    if backgrounds is not None:
        appearance.PhotoBackgrounds(backgrounds)
    out = Path(out)
    manifest = {"objects": str(objects_yaml), "seed": int(seed), "config": cfg.to_dict(),
                "objects_by_id": {int(o.id): o.name for o in objects}}
    split_dir = out / split
    _check_manifest(split_dir, manifest)
    for stale in split_dir.glob(".*.partial"):
        shutil.rmtree(stale, ignore_errors=True)
    todo = [s for s in range(scenes) if not (split_dir / f"{s:06d}").is_dir()]
    summary = SynthSummary(out=out, scenes_skipped=scenes - len(todo))
    start = time.perf_counter()
    bg = str(backgrounds) if backgrounds is not None else None
    jobs = [(str(split_dir), s) for s in todo]
    bar = _progress(len(todo) * cfg.images_per_scene, progress)
    if workers <= 1 or len(todo) <= 1:
        writer = SceneWriter(objects, cfg, seed, bg, split)
        results = ((s, writer.write_scene(split_dir, s)) for s in todo)
        _collect(summary, results, bar)
        writer.renderer.release()
    else:
        # GL contexts do not survive fork: workers start fresh and build their own.
        ctx = multiprocessing.get_context("spawn")
        n = min(workers, len(todo))
        gl_threads = max(1, (os.cpu_count() or 1) // n)
        with ctx.Pool(n, initializer=_init_worker,
                      initargs=(str(objects_yaml), cfg, seed, bg, split, gl_threads)) as pool:
            _collect(summary, pool.imap_unordered(_work, jobs), bar)
    bar.close()
    summary.seconds = time.perf_counter() - start
    return summary


def _collect(summary: SynthSummary, results, bar) -> None:
    for _, stats in results:
        summary.scenes_written += 1
        summary.images += stats.images
        summary.instances += stats.instances
        summary.visible += stats.visible
        summary.visib_sum += stats.visib_sum
        bar.update(stats.images)


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="img", desc="synth", disable=not enabled)
