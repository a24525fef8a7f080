"""`pose6d`: the command-line entry, one subcommand per job."""

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml


def _cmd_demo(args: argparse.Namespace) -> int:
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


def _cmd_train_coords(args: argparse.Namespace) -> int:
    from pose6d_ros.core.paths import default_objects_yaml
    from pose6d_ros.train.coords import CoordTrainConfig, CoordTrainer, config_from

    values: dict = {}
    if args.config:
        values = yaml.safe_load(args.config.read_text()) or {}
        unknown = sorted(set(values) - CoordTrainConfig.fields_())
        if unknown:
            print(f"pose6d: error: {args.config}: unknown setting(s) {unknown}", file=sys.stderr)
            return 2
    flags = {k: v for k, v in vars(args).items() if k in CoordTrainConfig.fields_()}
    values.update({k: v for k, v in flags.items() if v is not None})
    values.setdefault("objects", str(default_objects_yaml()))
    for key in ("data", "objects", "out", "init_encoder"):
        if values.get(key) is not None:
            values[key] = str(values[key])
    weights = CoordTrainer(config_from(values), resume=args.resume,
                           progress=not args.quiet).run()
    print(f"train coords: weights {weights}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from pose6d_ros.core.objects import load_objects
    from pose6d_ros.core.paths import default_objects_yaml
    from pose6d_ros.eval.evaluate import evaluate, write_outputs
    from pose6d_ros.nets.coord_poses import CoordPoseEstimator
    from pose6d_ros.nets.coordnet import load_coordnet

    if args.boxes == "detector":
        print("pose6d: error: --boxes detector needs the detector, which is not part of this "
              "release yet; use --boxes gt", file=sys.stderr)
        return 2
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    objects = load_objects(args.objects or default_objects_yaml())
    estimator = CoordPoseEstimator(load_coordnet(args.weights, device), objects, device=device)
    report = evaluate(args.data, estimator, objects, split=args.split,
                      progress=not args.json, max_images=args.max_images)
    figures = write_outputs(report, objects, args.out)
    if args.json:
        print(json.dumps(figures))
        return 0
    print(f"eval {args.data} ({figures['instances']} instances, GT boxes, weights "
          f"{args.weights}):")
    print(f"  ADD(-S) < 0.1d: {100 * figures['add_0.1d']:.1f} %   AR_MSSD "
          f"{figures['ar_mssd']:.3f}   AR_MSPD {figures['ar_mspd']:.3f}   "
          f"PnP failures {figures['failed']}")
    for name, v in figures["per_object"].items():
        print(f"  {name:<12} {v['instances']:>5} instances   ADD(-S) < 0.1d "
              f"{100 * v['add_0.1d']:5.1f} %")
    print(f"  written: {args.out}/results_bop19.csv, figures.json, recall_add.png")
    return 0


def _parse_names(text: str | None) -> dict[int, str]:
    if not text:
        return {}
    try:
        return {int(k): v for k, v in (item.split("=", 1) for item in text.split(","))}
    except ValueError:
        raise SystemExit(f"--names: expected ID=NAME,ID=NAME..., got {text!r}") from None


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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `pose6d`."""
    p = argparse.ArgumentParser(prog="pose6d", description="6D object pose tools.")
    sub = p.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="PnP/BPnP demo on the bundled objects")
    demo.add_argument("--objects", type=Path, help="objects YAML (default: bundled LM-O)")
    demo.add_argument("--points", type=int, default=500)
    demo.add_argument("--noise-px", type=float, default=1.0)
    demo.add_argument("--outliers", type=float, default=0.2, help="fraction of gross outliers")
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

    train = sub.add_parser("train", help="training").add_subparsers(dest="what", required=True)
    tc = train.add_parser("coords", help="train the coordinate network (CoordNet + BPnP)")
    tc.add_argument("--data", type=Path, required=True, help="folder written by pose6d synth")
    tc.add_argument("--objects", type=Path, help="objects YAML (default: bundled LM-O)")
    tc.add_argument("--out", type=Path, required=True, help="run folder")
    tc.add_argument("--config", type=Path, help="YAML of settings (flags override it)")
    tc.add_argument("--epochs", type=int)
    tc.add_argument("--max-steps", type=int)
    tc.add_argument("--batch-size", type=int)
    tc.add_argument("--lr", type=float)
    tc.add_argument("--input-size", type=int)
    tc.add_argument("--encoder", choices=["resnet18", "resnet34", "small"])
    tc.add_argument("--decoder-width", type=int)
    tc.add_argument("--lambda-proj", type=float, help="0 switches the BPnP loss off")
    tc.add_argument("--proj-warmup-steps", type=int)
    tc.add_argument("--workers", type=int, help="data-loading processes")
    tc.add_argument("--device", help="auto (default), cpu, cuda, cuda:N")
    tc.add_argument("--seed", type=int)
    tc.add_argument("--init-encoder", type=Path, help="local torchvision ResNet weights")
    tc.add_argument("--checkpoint-every", type=int)
    tc.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt")
    tc.add_argument("--quiet", action="store_true", help="no progress bar")
    tc.set_defaults(func=_cmd_train_coords)

    ev = sub.add_parser("eval", help="pose accuracy of CoordNet weights on a BOP dataset")
    ev.add_argument("--data", type=Path, required=True,
                    help="BOP dataset folder, split folder or scene folder")
    ev.add_argument("--weights", type=Path, required=True, help="CoordNet weights (.pt)")
    ev.add_argument("--objects", type=Path, help="objects YAML (default: bundled LM-O)")
    ev.add_argument("--boxes", choices=["gt", "detector"], default="gt")
    ev.add_argument("--split", default="test", help="split folder under --data, if any")
    ev.add_argument("--out", type=Path, default=Path("eval_out"))
    ev.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when present")
    ev.add_argument("--max-images", type=int, default=0, help="0: all")
    ev.add_argument("--json", action="store_true", help="print the figures as one JSON line")
    ev.set_defaults(func=_cmd_eval)

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
            SynthConfigError, SynthError, WeightsError) as exc:
        print(f"pose6d: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
