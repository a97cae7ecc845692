"""``fapn demo``: FPN vs FaPN on built-in synthetic street scenes, trained and evaluated in minutes on a CPU."""

from __future__ import annotations

import argparse

from fapn.cli.common import add_threads_argument

__all__ = ["register", "run"]

EPILOG = """\
what it does:
  trains the FPN baseline and the real-time FaPN (ResNet-18, from scratch) on procedurally generated street
  scenes with thin poles, small signs and distant cars, evaluates both (mIoU and boundary mIoU), prints a
  table and writes OUTPUT/report.md with comparison pictures (image | ground truth | FPN | FaPN, titled,
  with a legend of the classes) and one checkpoint per model (OUTPUT/fpn/last.pt, OUTPUT/fapn/last.pt).
  --iterations 50 for a quick look, more iterations for a clearer difference. torch uses one thread per
  core by default; on a machine busy with other work --threads 1 is often several times faster.

the two models on a web page (upload your own images, see the offsets): fapn app  (pip install "fapn[app]")

from the demo to your own data:
  fapn configs                                            # the shipped recipes
  fapn train semseg/camvid_r18_fapn --set data.root=PATH/camvid-half   # CamVid (SegNet layout)
  fapn train semseg/cityscapes_r18_fapn --set data.root=PATH/cityscapes
  your own images: data.dataset=folder with ROOT/images/{train,val}/*.jpg, ROOT/masks/{train,val}/*.png
  (pixel = class index) and ROOT/classes.yaml ({classes: [...], palette: [[r,g,b],...], ignore_index: 255}):
  fapn train semseg/camvid_r18_fapn --set data.dataset=folder --set data.root=ROOT --output-dir runs/mine
  fapn eval semseg/camvid_r18_fapn --weights runs/mine/best.pt --set data.dataset=folder --set data.root=ROOT
  fapn predict --weights runs/mine/best.pt --out predictions/ image.jpg   # inference on new images
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="train and compare FPN and FaPN on synthetic street scenes (minutes, CPU)",
        description=(
            "Train the FPN baseline and FaPN briefly on built-in synthetic street scenes, evaluate both and "
            "write a report folder with a table and comparison pictures."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--output", default="fapn_demo", help="report folder (default: fapn_demo)")
    parser.add_argument("--iterations", type=int, default=200, help="training iterations per model (default: 200)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per iteration (default: 8)")
    parser.add_argument(
        "--image-size",
        nargs="+",
        default=["96x128"],
        metavar="HxW",
        help="synthetic image size (default: 96x128; the older form 'H W' is accepted too)",
    )
    parser.add_argument("--train-images", type=int, default=400, help="synthetic training images (default: 400)")
    parser.add_argument("--val-images", type=int, default=40, help="synthetic validation images (default: 40)")
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="auto (a CUDA GPU when torch sees one, else the CPU), cpu or cuda (default: auto)",
    )
    add_threads_argument(parser)
    parser.add_argument(
        "--seed", type=int, default=0, help="seeds the scenes and both models' initialisation (default: 0)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fapn.cli.common import setup_runtime, size_from_values, warn
    from fapn.engine.demo import DemoSettings, run_demo
    from fapn.runtime import cuda_build_without_gpu

    for name in ("iterations", "batch_size", "train_images", "val_images", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    setup_runtime(args)  # a --device torch does not have: one line before anything trains
    note = cuda_build_without_gpu()
    if note is not None:
        warn(note)
    settings = DemoSettings(
        output_dir=args.output,
        iterations=args.iterations,
        batch_size=args.batch_size,
        image_size=list(size_from_values(args.image_size, "--image-size")),
        train_images=args.train_images,
        val_images=args.val_images,
        threads=args.threads,
        device=args.device,
        seed=args.seed,
        progress=not args.no_progress,
    )
    results = run_demo(settings)
    print()
    print(f"{'model':<6} {'mIoU':>7} {'boundary mIoU':>14} {'pixel acc':>10}")
    for neck, label in (("fpn", "FPN"), ("fapn", "FaPN")):
        r = results[neck]
        print(f"{label:<6} {r['mIoU']:7.2f} {r['boundary']['mIoU']:14.2f} {r['pixel_accuracy']:10.2f}")
    print(f"report: {results['report']} ({results['seconds'] / 60:.1f} min)")
    where = "" if args.output == "fapn_demo" else f" --demo {args.output}"
    print(f'both models on a web page, for your own images: fapn app{where}  (pip install "fapn[app]")')
    return 0
