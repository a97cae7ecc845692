"""``fapn predict``: label maps, colour masks and overlays for images, from a checkpoint."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from fapn.cli.common import HelpFormatter, add_device_argument, add_precision_argument, add_threads_argument, parse_size

__all__ = ["register", "run"]

OUTPUT_KINDS = ("label", "color", "overlay")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="segment images with a trained checkpoint",
        description=(
            "Segment images with a checkpoint written by 'fapn train'. For every input image writes NAME_label.png "
            "(class indices), NAME_color.png (the dataset's palette) and NAME_overlay.png (colours over the "
            "image) into --out, each image's files before the next image is read; legend.png in --out is the key "
            "to the colours (the colour images stay pixel-aligned with the input). Class names, palette and "
            "normalisation come from the checkpoint. An image that cannot be read or predicted is reported and "
            "skipped; the command then ends with a summary and exit code 1."
        ),
        formatter_class=HelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
    parser.add_argument(
        "--weights", required=True, help="checkpoint (.pt) written by 'fapn train', a hub folder or hf://OWNER/NAME"
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--batch-size", type=int, default=1, help="images per forward pass (same-size images)")
    add_device_argument(parser)
    add_threads_argument(parser)
    parser.add_argument(
        "--window",
        type=parse_size,
        default=None,
        metavar="HxW",
        help="sliding-window inference for images larger than HxW (default: whole image at any size)",
    )
    parser.add_argument(
        "--window-stride",
        type=parse_size,
        default=None,
        metavar="HxW",
        help="step between windows (default: two thirds of --window)",
    )
    parser.add_argument(
        "--save", nargs="+", choices=OUTPUT_KINDS, default=list(OUTPUT_KINDS), help="which outputs to write"
    )
    parser.add_argument("--alpha", type=float, default=0.5, help="opacity of the colours in the overlay")
    parser.add_argument("--recursive", action="store_true", help="look into sub-folders of input folders")
    parser.add_argument("--deform-backend", default=None, help="deformable-conv backend (default: automatic)")
    add_precision_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tqdm import tqdm

    from fapn.cli.common import setup_runtime, warn
    from fapn.inference import Segmenter, collect_images, load_image, save_label_png, save_rgb_png
    from fapn.visualize import legend

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    device = setup_runtime(args)
    files = collect_images(args.inputs, recursive=args.recursive)
    segmenter = Segmenter.from_checkpoint(
        args.weights,
        device=device,
        window=args.window,
        window_stride=args.window_stride,
        deform_backend=args.deform_backend,
        precision=args.precision,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if "color" in args.save or "overlay" in args.save:
        save_rgb_png(legend(segmenter.class_names, segmenter.palette, width=480), out / "legend.png")
    stems: dict[str, int] = {}
    failed: list[tuple[Path, str]] = []
    written = 0

    def output_stem(path: Path) -> str:
        count = stems.get(path.stem, 0)
        stems[path.stem] = count + 1
        return path.stem if count == 0 else f"{path.stem}_{count}"

    def skip(path: Path, reason: str) -> None:
        failed.append((path, reason))
        tqdm.write(f"fapn: warning: skipped {path}: {reason}", file=sys.stderr)

    def flush(batch: list[tuple[Path, Any]]) -> None:
        nonlocal written
        try:
            labels = segmenter.predict_batch([image for _, image in batch])
        except ValueError as err:  # e.g. an image the model cannot take: find which, go on with the others
            if len(batch) > 1:
                for item in batch:
                    flush([item])
                return
            skip(batch[0][0], str(err))
            progress.update(1)
            return
        for (path, image), label in zip(batch, labels):
            stem = output_stem(path)
            if "label" in args.save:
                save_label_png(label, out / f"{stem}_label.png")
            if "color" in args.save:
                save_rgb_png(segmenter.colorize(label), out / f"{stem}_color.png")
            if "overlay" in args.save:
                save_rgb_png(segmenter.overlay(image, label, args.alpha), out / f"{stem}_overlay.png")
            written += 1
        progress.update(len(batch))

    batch: list[tuple[Path, Any]] = []
    with tqdm(total=len(files), desc="predict", unit="img", file=sys.stderr) as progress:
        for path in files:
            try:
                image = load_image(path)
            except (ValueError, OSError) as err:
                skip(path, str(err).removeprefix(f"cannot read {path} as an image: "))
                progress.update(1)
                continue
            if batch and batch[0][1].shape != image.shape:
                flush(batch)
                batch = []
            batch.append((path, image))
            if len(batch) == args.batch_size:  # written before the next image is read
                flush(batch)
                batch = []
        if batch:
            flush(batch)
    kinds = ", ".join(args.save)
    print(f"wrote {written} of {len(files)} predictions ({kinds}) to {out} with {segmenter}")
    if failed:
        warn(f"{len(failed)} of {len(files)} images skipped: {', '.join(str(p) for p, _ in failed)}")
        return 1
    return 0
