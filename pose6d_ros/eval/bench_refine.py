"""The refinement's basin: how far off a start may be and still come back.

Each object is rendered at random poses (0.5-0.9 m, on a noise background); starts are the
true pose turned by a given angle about a random axis and shifted by a share of the distance
(10 % at 30 degrees, in proportion below). `pose6d bench refine` prints, per start angle,
the median rotation / translation error before and after refinement, the share of starts
that end within 5 degrees, and ms per hypothesis, with and without an instance mask.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from pose6d_ros.core.objects import ObjectModel
from pose6d_ros.core.rotations import axis_angle_to_matrix, random_rotations, rotation_angle
from pose6d_ros.refine.region import RefineConfig, RegionRefiner
from pose6d_ros.refine.viewpoint_models import ViewpointConfig, load_or_build_viewpoint_models

K = np.array([[572.4, 0.0, 325.3], [0.0, 573.6, 242.0], [0.0, 0.0, 1.0]])  # LM-O's camera
SIZE = (640, 480)


@dataclass
class BasinRow:
    """One start angle's outcome over every object and start."""

    start_deg: float
    mask: bool
    starts: int
    start_te_mm: float  # median
    median_re_deg: float
    median_te_mm: float
    within_5deg: float  # share of starts
    ms_per_hypothesis: float


def render_scene(obj: ObjectModel, R: np.ndarray, t: np.ndarray, seed: int, *,
                 K: np.ndarray = K, noise: tuple[int, int] = (0, 256)
                 ) -> tuple[np.ndarray, np.ndarray]:
    """`obj` at pose R, t through `K` over uniform noise in [noise[0], noise[1]): `rgb (480,
    640, 3)` uint8 and `mask (480, 640)` bool."""
    from pose6d_ros.data.render import Instance, Lighting, Renderer, simplify_mesh

    renderer = Renderer(*SIZE)
    try:
        renderer.add_mesh("o", simplify_mesh(obj.mesh, 4000))
        out = renderer.render(K, [Instance("o", R, t)], Lighting(), amodal=False)
    finally:
        renderer.release()
    mask = out.instance == 0
    background = np.random.default_rng(seed).integers(*noise, out.rgb.shape)
    return np.where(mask[..., None], out.rgb, background).astype(np.uint8), mask


def basin(objects: Sequence[ObjectModel], angles: Sequence[float], *, starts: int = 4,
          config: RefineConfig | None = None, views: ViewpointConfig | None = None,
          cache_dir: str | None = None, seed: int = 0) -> list[BasinRow]:
    """Refine `starts` perturbed starts per object and angle, without and with the mask."""
    models = load_or_build_viewpoint_models(objects, views or ViewpointConfig(),
                                            cache_dir=cache_dir)
    refiner = RegionRefiner(models, config)
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    scenes = []
    for i, obj in enumerate(objects):
        R = random_rotations(1, generator=g)[0].double()
        t = torch.tensor([rng.uniform(-0.05, 0.05), rng.uniform(-0.05, 0.05),
                          rng.uniform(0.5, 0.9)], dtype=torch.float64)
        rgb, mask = render_scene(obj, R.numpy(), t.numpy(), seed + i)
        image = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
        scenes.append((i, R, t, image, torch.from_numpy(mask).float()[None]))
    rows = []
    for with_mask in (False, True):
        for deg in angles:
            re, te, te0, seconds = [], [], [], 0.0
            for i, R, t, image, mask in scenes:
                axes = torch.randn(starts, 3, generator=g, dtype=torch.float64)
                shifts = torch.randn(starts, 3, generator=g, dtype=torch.float64)
                turn = axes / axes.norm(dim=1, keepdim=True) * np.deg2rad(deg)
                R0 = axis_angle_to_matrix(turn) @ R
                share = 0.1 * deg / 30.0
                t0 = t + shifts / shifts.norm(dim=1, keepdim=True) * share * t.norm()
                kwargs = ({"masks": mask, "mask_index": torch.zeros(starts, dtype=torch.long)}
                          if with_mask else {})
                tic = time.perf_counter()
                out = refiner(image, torch.from_numpy(K), torch.full((starts,), i), R0, t0,
                              **kwargs)
                seconds += time.perf_counter() - tic
                re += np.rad2deg(rotation_angle(out.R, R.expand_as(out.R)).numpy()).tolist()
                te += ((out.t - t).norm(dim=1) * 1e3).tolist()
                te0 += ((t0 - t).norm(dim=1) * 1e3).tolist()
            n = len(re)
            rows.append(BasinRow(start_deg=float(deg), mask=with_mask, starts=n,
                                 start_te_mm=float(np.median(te0)),
                                 median_re_deg=float(np.median(re)),
                                 median_te_mm=float(np.median(te)),
                                 within_5deg=float(np.mean(np.array(re) < 5.0)),
                                 ms_per_hypothesis=1e3 * seconds / n))
    return rows


def format_rows(rows: Sequence[BasinRow]) -> str:
    """The rows as a plain table."""
    lines = [f"{'mask':>5} {'start':>7} {'starts':>6} {'start te':>9} {'median re':>10} "
             f"{'median te':>10} {'< 5 deg':>8} {'ms/hyp':>7}"]
    for r in rows:
        lines.append(f"{'yes' if r.mask else 'no':>5} {r.start_deg:>5.0f} ° {r.starts:>6} "
                     f"{r.start_te_mm:>6.0f} mm {r.median_re_deg:>8.1f} ° "
                     f"{r.median_te_mm:>7.1f} mm {100 * r.within_5deg:>7.0f}% "
                     f"{r.ms_per_hypothesis:>7.1f}")
    return "\n".join(lines)


@dataclass
class TrackRow:
    """One tracking schedule's outcome over every object's moving sequence."""

    schedule: str  # "full" (the detection schedule) or the tracking iterations
    iterations: int  # per frame
    frames: int  # tracked frames, all objects
    median_re_deg: float
    median_te_mm: float
    within_5deg_5mm: float  # share of tracked frames
    final_re_deg: float  # median over objects, last frame
    final_te_mm: float
    median_score: float  # the tracked poses' verification score
    empty_score: float  # median score of the same poses on the image without the object
    ms_per_frame: float  # per object


def track_sequences(objects: Sequence[ObjectModel], schedules: Sequence[int | None], *,
                    frames: int = 10, deg_per_frame: float = 2.0, mm_per_frame: float = 5.0,
                    config: RefineConfig | None = None, views: ViewpointConfig | None = None,
                    cache_dir: str | None = None, seed: int = 0) -> list[TrackRow]:
    """Each object turns by `deg_per_frame` about a random axis and moves `mm_per_frame` in a
    random direction per frame over `frames` renders; from its true first pose (a perfect
    detection) each later frame is refined from the previous frame's result, with the
    tracking schedule of each of `schedules` (None: the full detection schedule)."""
    base = config or RefineConfig()
    models = load_or_build_viewpoint_models(objects, views or ViewpointConfig(),
                                            cache_dir=cache_dir)
    refiners = {s: RegionRefiner(models, base if s is None else base.tracking(s))
                for s in schedules}
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    Kt = torch.from_numpy(K)
    sequences = []
    for i, obj in enumerate(objects):
        R = random_rotations(1, generator=g)[0].double()
        t = torch.tensor([rng.uniform(-0.05, 0.05), rng.uniform(-0.05, 0.05),
                          rng.uniform(0.5, 0.9)], dtype=torch.float64)
        axis = torch.randn(3, generator=g, dtype=torch.float64)
        move = torch.randn(3, generator=g, dtype=torch.float64)
        axis, move = axis / axis.norm(), move / move.norm() * mm_per_frame * 1e-3
        poses, images = [], []
        for k in range(frames):
            Rk = axis_angle_to_matrix((axis * np.deg2rad(deg_per_frame * k))[None])[0] @ R
            tk = t + k * move
            rgb, _ = render_scene(obj, Rk.numpy(), tk.numpy(), seed + i)
            poses.append((Rk, tk))
            images.append(torch.from_numpy(rgb).permute(2, 0, 1).float() / 255)
        empty = torch.from_numpy(np.random.default_rng(seed + i).integers(
            0, 256, (SIZE[1], SIZE[0], 3))).permute(2, 0, 1).float() / 255
        sequences.append((i, poses, images, empty))
    rows = []
    for s, refiner in refiners.items():
        re, te, scores, empties, final_re, final_te, seconds = [], [], [], [], [], [], 0.0
        for i, poses, images, empty in sequences:
            R, t = poses[0][0][None], poses[0][1][None]
            label = torch.tensor([i])
            for k in range(1, frames):
                tic = time.perf_counter()
                out = refiner(images[k], Kt, label, R, t)
                seconds += time.perf_counter() - tic
                R, t = out.R, out.t
                re.append(float(np.rad2deg(rotation_angle(R, poses[k][0][None]).item())))
                te.append(float((t[0] - poses[k][1]).norm()) * 1e3)
                scores.append(float(out.contour[0]))
            final_re.append(re[-1])
            final_te.append(te[-1])
            empties.append(float(refiner.agreement(empty, Kt, label, R, t)[0]))
        re_a, te_a = np.array(re), np.array(te)
        cfg = refiner.config
        rows.append(TrackRow(
            schedule="full" if s is None else str(s), iterations=sum(cfg.iterations),
            frames=len(re), median_re_deg=float(np.median(re_a)),
            median_te_mm=float(np.median(te_a)),
            within_5deg_5mm=float(np.mean((re_a < 5.0) & (te_a < 5.0))),
            final_re_deg=float(np.median(final_re)), final_te_mm=float(np.median(final_te)),
            median_score=float(np.median(scores)), empty_score=float(np.median(empties)),
            ms_per_frame=1e3 * seconds / len(re)))
    return rows


def format_track_rows(rows: Sequence[TrackRow]) -> str:
    """The tracking rows as a plain table."""
    lines = [f"{'schedule':>8} {'iters':>5} {'frames':>6} {'median re':>10} {'median te':>10} "
             f"{'<5deg,5mm':>9} {'last re':>8} {'last te':>8} {'score':>6} {'empty':>6} "
             f"{'ms/obj':>7}"]
    for r in rows:
        lines.append(f"{r.schedule:>8} {r.iterations:>5} {r.frames:>6} "
                     f"{r.median_re_deg:>8.1f} ° {r.median_te_mm:>7.1f} mm "
                     f"{100 * r.within_5deg_5mm:>8.0f}% {r.final_re_deg:>6.1f} ° "
                     f"{r.final_te_mm:>5.1f} mm {r.median_score:>6.2f} {r.empty_score:>6.2f} "
                     f"{r.ms_per_frame:>7.1f}")
    return "\n".join(lines)
