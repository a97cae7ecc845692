"""``fapn predict``: label maps, colour masks and overlays for images, from a checkpoint."""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["register", "run", "parse_size"]

OUTPUT_KINDS = ("label", "color", "overlay")


def parse_size(text: str) -> tuple[int, int]:
    """``"512x1024"`` (height x width) or ``"512"`` (square) as ``(height, width)``."""
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH such as 512x1024, got {text!r}") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH with positive sides such as 512x1024, got {text!r}")
    return parts[0], parts[1]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="segment images with a trained checkpoint",
        description=(
            "Segment images with a checkpoint written by 'fapn train'. For every input image writes NAME_label.png "
            "(class indices), NAME_color.png (the dataset's palette) and NAME_overlay.png (colours over the "
            "image) into --out. Class names, palette and normalisation come from the checkpoint."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
    parser.add_argument("--weights", required=True, help="checkpoint (.pt) written by 'fapn train'")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--batch-size", type=int, default=1, help="images per forward pass (same-size images)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")
    parser.add_argument(
        "--window",
        type=parse_size,
        default=None,
        metavar="HxW",
        help="sliding-window inference for images larger than HxW (default: whole image at any size)",
    )
    parser.add_argument("--window-stride", type=parse_size, default=None, metavar="HxW", help="step between windows")
    parser.add_argument(
        "--save", nargs="+", choices=OUTPUT_KINDS, default=list(OUTPUT_KINDS), help="which outputs to write"
    )
    parser.add_argument("--alpha", type=float, default=0.5, help="opacity of the colours in the overlay")
    parser.add_argument("--recursive", action="store_true", help="look into sub-folders of input folders")
    parser.add_argument("--deform-backend", default=None, help="deformable-conv backend (default: automatic)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tqdm import tqdm

    from fapn.inference import Segmenter, collect_images, load_image, save_label_png, save_rgb_png

    if args.batch_size < 1:
        print(f"error: --batch-size must be at least 1, got {args.batch_size}", file=sys.stderr)
        return 2
    try:
        files = collect_images(args.inputs, recursive=args.recursive)
        segmenter = Segmenter.from_checkpoint(
            args.weights,
            device=args.device,
            window=args.window,
            window_stride=args.window_stride,
            deform_backend=args.deform_backend,
        )
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names: dict[str, int] = {}

    def output_stem(path: Path) -> str:
        count = names.get(path.stem, 0)
        names[path.stem] = count + 1
        return path.stem if count == 0 else f"{path.stem}_{count}"

    def flush(batch: list[tuple[Path, Any]]) -> None:
        labels = segmenter.predict_batch([image for _, image in batch])
        for (path, image), label in zip(batch, labels):
            stem = output_stem(path)
            if "label" in args.save:
                save_label_png(label, out / f"{stem}_label.png")
            if "color" in args.save:
                save_rgb_png(segmenter.colorize(label), out / f"{stem}_color.png")
            if "overlay" in args.save:
                save_rgb_png(segmenter.overlay(image, label, args.alpha), out / f"{stem}_overlay.png")
        progress.update(len(batch))

    batch: list[tuple[Path, Any]] = []
    with tqdm(total=len(files), desc="predict", unit="img", file=sys.stderr) as progress:
        try:
            for path in files:
                try:
                    image = load_image(path)
                except OSError as err:
                    raise ValueError(f"cannot read {path} as an image: {err}") from None
                if batch and (len(batch) == args.batch_size or batch[0][1].shape != image.shape):
                    flush(batch)
                    batch = []
                batch.append((path, image))
            if batch:
                flush(batch)
        except ValueError as err:
            names = ", ".join(str(p) for p, _ in batch) or str(path)
            print(f"error: {names}: {err}", file=sys.stderr)
            return 2
    print(f"wrote {len(files)} predictions ({', '.join(args.save)}) to {out} with {segmenter}")
    return 0
