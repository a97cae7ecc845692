"""``fapn explain``: pictures of what each Feature Alignment Module learned on an image."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from fapn.cli.common import HelpFormatter, add_device_argument, add_threads_argument, run_without_grad

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "explain",
        help="draw each FAM's learned offsets and the features before/after alignment",
        description=(
            "For a FaPN checkpoint and an image, draw for every Feature Alignment Module: its offsets as "
            "the mean displacement per pixel (mask-weighted mean over the 8 groups x 9 taps) in flow colours "
            "with a colour wheel (hue = direction, saturation = length up to the printed maximum), the same "
            "displacements as arrows on a grid over the image (scaled so that the longest is 0.8 grid steps "
            "long, unless --arrow-scale is given: after short training the offsets are fractions of a pixel), "
            "the mean modulation mask, and the features "
            "(shared PCA colours) of the lateral input, the upsampled coarse map before alignment and after it. "
            "Writes one PNG per picture and a summary figure NAME_explain.png."
        ),
        formatter_class=HelpFormatter,
    )
    parser.add_argument("image", metavar="IMAGE", nargs="+", help="image files (or folders / globs)")
    parser.add_argument(
        "--weights",
        required=True,
        help="checkpoint (.pt), hub folder or hf://OWNER/NAME of a model with FAM (neck fpn+fam, fpn+fam+fsm or fapn)",
    )
    parser.add_argument("--out", required=True, help="output folder")
    add_device_argument(parser)
    add_threads_argument(parser)
    parser.add_argument("--width", type=int, default=480, help="width of each picture in the figures")
    parser.add_argument("--step", type=int, default=16, help="arrow grid spacing (picture pixels)")
    parser.add_argument(
        "--arrow-scale",
        type=float,
        default=None,
        help="arrow length factor (1 = true length; default: the longest arrow of each FAM 0.8 * --step long)",
    )
    parser.add_argument("--no-mask-weighting", action="store_true", help="plain mean of the offsets")
    parser.set_defaults(func=run)


def explain_image(segmenter: Any, path: Any, out: Any, args: argparse.Namespace) -> list[str]:
    """Write the pictures of one image; returns the FAMs' one-line summaries."""
    import numpy as np

    from fapn.inference import load_image, save_rgb_png
    from fapn.inference.alignment import record_alignment
    from fapn.visualize import add_legend, image_grid, mean_displacement, present_classes, resize_rgb
    from fapn.visualize.alignment import alignment_pictures

    image = load_image(path)
    batch = segmenter.preprocess([image])
    logits, records = record_alignment(segmenter.model, batch)
    label = logits[0].argmax(0).cpu().numpy()
    shown = resize_rgb(image, width=args.width)
    cells = [shown, resize_rgb(segmenter.overlay(image, label), width=args.width)]
    titles = ["image", "prediction"]
    lines = []
    laterals: list[tuple[np.ndarray, str]] = []
    stem = path.stem
    for record in records:
        displacement = record.displacement
        if args.no_mask_weighting:
            fam = segmenter.model.neck.merges[record.index]
            displacement = mean_displacement(record.offset[None], None, fam.offset_groups, fam.deform.taps)[0]
        drawn = alignment_pictures(
            shown,
            displacement,
            record.mask,
            features=(record.selected, record.upsampled, record.aligned),
            step=args.step,
            scale=args.arrow_scale,
        )
        tag = f"fam_s{record.stride:g}"
        pictures = {"offsets": drawn.offsets, "arrows": drawn.arrows, "mask": drawn.mask, **drawn.features}
        for name, picture in pictures.items():
            save_rgb_png(picture, out / f"{stem}_{tag}_{name}.png")
        stride = record.stride
        cells += [drawn.offsets, drawn.arrows, drawn.mask, drawn.features["before"], drawn.features["after"]]
        laterals.append((drawn.features["lateral"], f"stride {stride:g}: lateral feature"))
        titles += [
            *drawn.titles(stride).values(),
            f"stride {stride:g}: before alignment",
            f"stride {stride:g}: after alignment",
        ]
        lines.append(record.summary())
    if records:  # first row: image, prediction and the lateral features, then one row of five per FAM
        first = laterals[:3] + [(np.full_like(shown, 255), "")] * (3 - len(laterals[:3]))
        cells[2:2] = [cell for cell, _ in first]
        titles[2:2] = [title for _, title in first]
    grid = image_grid(cells, titles, columns=5 if records else 2)
    classes = present_classes(label, num_classes=len(segmenter.class_names), ignore_index=None)
    save_rgb_png(add_legend(grid, segmenter.class_names, segmenter.palette, classes), out / f"{stem}_explain.png")
    displacements: dict[str, Any] = {f"stride{r.stride:g}": r.displacement.cpu().numpy() for r in records}
    np.savez_compressed(out / f"{stem}_displacements.npz", **displacements)
    return lines


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tqdm import tqdm

    from fapn.cli.common import setup_runtime
    from fapn.inference import Segmenter, collect_images

    device = setup_runtime(args)
    files = collect_images(args.image)
    segmenter = Segmenter.from_checkpoint(args.weights, device=device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in tqdm(files, desc="explain", unit="img", file=sys.stderr):
        lines = explain_image(segmenter, path, out, args)
        print(f"{path}:")
        for line in lines:
            print(f"  {line}")
    print(f"wrote pictures to {out} (NAME_explain.png: the summary figure)")
    return 0


def run(args: argparse.Namespace) -> int:
    return run_without_grad(_run, args)
