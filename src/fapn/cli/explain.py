"""``fapn explain``: pictures of what each Feature Alignment Module learned on an image."""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "explain",
        help="draw each FAM's learned offsets and the features before/after alignment",
        description=(
            "For a FaPN checkpoint and an image, draw for every Feature Alignment Module: its offsets as "
            "the mean displacement per pixel (mask-weighted mean over the 8 groups x 9 taps) in flow colours "
            "with a colour wheel (hue = direction, saturation = length up to the printed maximum), the same "
            "displacements as arrows on a grid over the image, the mean modulation mask, and the features "
            "(shared PCA colours) of the lateral input, the upsampled coarse map before alignment and after it. "
            "Writes one PNG per picture and a summary figure NAME_explain.png."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("image", metavar="IMAGE", nargs="+", help="image files (or folders / globs)")
    parser.add_argument("--weights", required=True, help="checkpoint (.pt) of a FaPN variant")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--width", type=int, default=480, help="width of each picture in the figures")
    parser.add_argument("--step", type=int, default=16, help="arrow grid spacing (picture pixels)")
    parser.add_argument("--arrow-scale", type=float, default=1.0, help="arrow length factor (1 = true length)")
    parser.add_argument("--no-mask-weighting", action="store_true", help="plain mean of the offsets")
    parser.set_defaults(func=run)


def explain_image(segmenter: Any, path: Any, out: Any, args: argparse.Namespace) -> list[str]:
    """Write the pictures of one image; returns the FAMs' one-line summaries."""
    import numpy as np
    import torch

    from fapn.inference import load_image, save_rgb_png
    from fapn.inference.alignment import record_alignment
    from fapn.visualize import (
        color_wheel, draw_arrows, features_to_rgb, flow_to_color, heatmap, image_grid, mean_displacement, resize_rgb,
    )

    image = load_image(path)
    batch = segmenter.preprocess([image])
    logits, records = record_alignment(segmenter.model, batch)
    label = logits[0].argmax(0).cpu().numpy()
    shown = resize_rgb(image, width=args.width)
    size = (shown.shape[1], shown.shape[0])
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
        length = torch.linalg.vector_norm(displacement, dim=0)
        max_len = float(length.max())
        flow = resize_rgb(flow_to_color(displacement, max_len), *size, nearest=True).copy()
        wheel = color_wheel(min(72, size[1] // 3))
        flow[-wheel.shape[0] - 4 : -4, -wheel.shape[1] - 4 : -4] = wheel
        arrows = draw_arrows(shown, displacement, step=args.step, scale=args.arrow_scale)
        mean_mask = record.mask.mean(0)
        mask = resize_rgb(heatmap(mean_mask), *size, nearest=True)
        lateral, before, after = (
            resize_rgb(f, *size, nearest=True) for f in features_to_rgb(record.selected, record.upsampled, record.aligned)
        )
        tag = f"fam_s{record.stride:g}"
        pictures = {"offsets": flow, "arrows": arrows, "mask": mask, "lateral": lateral, "before": before, "after": after}
        for name, picture in pictures.items():
            save_rgb_png(picture, out / f"{stem}_{tag}_{name}.png")
        stride = record.stride
        cells += [flow, arrows, mask, before, after]
        laterals.append((lateral, f"stride {stride:g}: lateral feature"))
        scale_note = "true length" if args.arrow_scale == 1 else f"x{args.arrow_scale:g}"
        titles += [
            f"stride {stride:g}: offsets (rim {max_len * stride:.2g} px)",
            f"stride {stride:g}: arrows ({scale_note})",
            f"s{stride:g} mask {float(mean_mask.min()):.2f}..{float(mean_mask.max()):.2f}",
            f"stride {stride:g}: before alignment",
            f"stride {stride:g}: after alignment",
        ]
        lines.append(record.summary())
    if records:  # first row: image, prediction and the lateral features, then one row of five per FAM
        first = laterals[:3] + [(np.full_like(shown, 255), "")] * (3 - len(laterals[:3]))
        cells[2:2] = [cell for cell, _ in first]
        titles[2:2] = [title for _, title in first]
    grid = image_grid(cells, titles, columns=5 if records else 2)
    save_rgb_png(grid, out / f"{stem}_explain.png")
    np.savez_compressed(
        out / f"{stem}_displacements.npz", **{f"stride{r.stride:g}": r.displacement.cpu().numpy() for r in records}
    )
    return lines


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tqdm import tqdm

    from fapn.inference import Segmenter, collect_images

    try:
        files = collect_images(args.image)
        segmenter = Segmenter.from_checkpoint(args.weights, device=args.device)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in tqdm(files, desc="explain", unit="img", file=sys.stderr):
        try:
            lines = explain_image(segmenter, path, out, args)
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(f"{path}:")
        for line in lines:
            print(f"  {line}")
    print(f"wrote pictures to {out} (NAME_explain.png: the summary figure)")
    return 0


def run(args: argparse.Namespace) -> int:
    import torch

    # no_grad as a context (not torch.set_grad_enabled): the caller's grad mode survives an in-process call
    with torch.no_grad():
        return _run(args)
