"""`pose6d bench synth`: synthetic-data throughput on this machine.

Images per second of `pose6d synth` (render, randomise, write) for 640x480 scenes with a
fixed number of objects, for each worker count; and, in the same run, the renderer alone
with decimated meshes against the full scanned meshes (the baseline).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from pose6d_ros.core.objects import load_objects
from pose6d_ros.data.render import Renderer
from pose6d_ros.data.scenes import SynthConfig, add_object_meshes, sample_layout, sample_view
from pose6d_ros.data.synth import generate


def render_fps(objects_yaml: str | Path, cfg: SynthConfig, *, max_faces: int,
               frames: int = 30, seed: int = 0) -> float:
    """Frames per second of `Renderer.render` (every output) on random scenes."""
    objects = load_objects(objects_yaml)
    renderer = Renderer(cfg.width, cfg.height)
    add_object_meshes(renderer, objects, max_faces)
    rng = np.random.default_rng(seed)
    bounds = [o.bounds for o in objects]
    scenes = []
    for _ in range(frames):
        layout = sample_layout(rng, cfg, bounds, {})
        view = sample_view(rng, cfg, layout)
        scenes.append((view.K, view.instances(layout), view.lighting))
    renderer.render(*scenes[0])  # compile shaders, warm caches
    start = time.perf_counter()
    for K, instances, lighting in scenes:
        renderer.render(K, instances, lighting)
    seconds = time.perf_counter() - start
    renderer.release()
    return frames / seconds


def run(objects_yaml: str | Path, *, objects_per_image: int = 5, workers: tuple[int, ...] = (1, 2),
        scenes: int = 20, images_per_scene: int = 10, frames: int = 30) -> dict[str, Any]:
    """Measure and return the figures (see module docstring)."""
    cfg = SynthConfig(objects_per_scene=(objects_per_image, objects_per_image),
                      distractors_per_scene=(0, 0), images_per_scene=images_per_scene)
    out: dict[str, Any] = {"width": cfg.width, "height": cfg.height,
                           "objects": objects_per_image}
    for w in workers:
        with tempfile.TemporaryDirectory() as tmp:
            summary = generate(objects_yaml, tmp, scenes=scenes, workers=w, cfg=cfg,
                               progress=False)
        out[f"images_per_s_{w}_workers"] = summary.images_per_s
    out["images_per_s"] = max(out[f"images_per_s_{w}_workers"] for w in workers)
    fast = render_fps(objects_yaml, cfg, max_faces=cfg.max_faces, frames=frames)
    full = render_fps(objects_yaml, cfg, max_faces=0, frames=max(5, frames // 3))
    out.update(render_fps=fast, render_fps_full_meshes=full, speedup_render=fast / full)
    return out
