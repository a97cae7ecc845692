"""``fapn compare``: image | ground truth | each model's prediction, one figure per image."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from fapn.cli.common import HelpFormatter, add_device_argument, add_precision_argument, add_threads_argument

__all__ = ["register", "run", "find_ground_truth", "ground_truth_class_warning", "distinct_names"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="side-by-side figure: image | ground truth | each model (like the supplementary's Figure 1)",
        description=(
            "For every input image write NAME_compare.png: the image, its ground truth (when --gt gives it) "
            "and each checkpoint's prediction in the dataset's palette, with the pixel accuracy against the "
            "ground truth in the titles and a legend of the classes shown below (when the checkpoints' class sets "
            "differ: a warning, and each panel in its own model's colours with its own legend; a warning too when "
            "the ground truth holds classes a model cannot predict). Columns are titled by --names, else by the "
            "models' necks, with as much of the checkpoint paths as tells equal titles apart. Instance segmentation "
            "checkpoints (Mask R-CNN, PointRend) draw each model's masks with their boundaries outlined instead "
            "(the supplementary's Figure 2: FPN left, FaPN right). Example: fapn compare --weights fpn.pt fapn.pt "
            "--names FPN FaPN --gt data/camvid/valannot data/camvid/val/0001TP_008550.png --out figures/"
        ),
        formatter_class=HelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
    parser.add_argument(
        "--weights", nargs="+", required=True, help="checkpoints (.pt, hub folders or hf://OWNER/NAME), in column order"
    )
    parser.add_argument("--names", nargs="+", default=None, help="column titles (default: the models' necks)")
    parser.add_argument("--gt", default=None, help="ground-truth label PNG folder (same file stem) or one file")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--overlay", action="store_true", help="draw the labels over the image instead of alone")
    parser.add_argument("--width", type=int, default=480, help="width of each panel")
    parser.add_argument("--columns", type=int, default=None, help="panels per row (default: all in one row)")
    parser.add_argument(
        "--score-threshold", type=float, default=0.5, help="instance models: lowest detection score drawn"
    )
    figure3 = parser.add_argument_group(
        "Figure 3 (small objects; detection, instance and panoptic checkpoints)",
        "--figure3 takes six detection checkpoints, a Faster R-CNN, a Mask R-CNN and a Panoptic FPN each with the FPN "
        "and the FaPN neck (in any order: the checkpoints say which is which), and writes figure3.png: one group per "
        "image, columns boxes | instance masks | panoptic, FPN on top and FaPN below, objects under 32^2 pixels "
        "framed in yellow. With --instances the frames are the ground truth's small objects and the images are the "
        "--pick ones with the most of them (ties by name); without, the frames are each model's own small "
        "detections and the first --pick images are drawn.",
    )
    figure3.add_argument("--figure3", action="store_true", help="draw the supplementary's Figure 3 layout")
    figure3.add_argument(
        "--instances", default=None, metavar="JSON", help="COCO instances ground truth of the images (by file name)"
    )
    figure3.add_argument("--pick", type=int, default=3, metavar="N", help="groups (images) in the figure")
    add_device_argument(parser)
    add_threads_argument(parser)
    add_precision_argument(parser)
    parser.set_defaults(func=run)


def find_ground_truth(gt: str | None, image_path: Any) -> Any:
    """The label file for ``image_path``: ``gt`` itself if a file, else ``gt/<stem>.<png|...>`` or
    ``gt/<stem>_*.png`` (Cityscapes-style suffixes), else ``None``."""
    from pathlib import Path

    if gt is None:
        return None
    root = Path(gt)
    if root.is_file():
        return root
    for candidate in [root / f"{image_path.stem}.png", *sorted(root.glob(f"{image_path.stem}*.png"))]:
        if candidate.is_file():
            return candidate
    return None


def distinct_names(labels: list[str], paths: list[str]) -> list[str]:
    """Column titles: ``labels``, where two are equal followed by as much of each checkpoint's path (without
    ``.pt``) as tells them apart.

    Example:
        >>> distinct_names(["fpn", "fapn", "fapn"], ["a/fpn.pt", "camvid8/last.pt", "camvid11/last.pt"])
        ['fpn', 'fapn [camvid8/last]', 'fapn [camvid11/last]']
    """
    from pathlib import PurePath

    names = list(labels)
    for label in set(labels):
        same = [i for i, other in enumerate(labels) if other == label]
        if len(same) < 2:
            continue
        parts = [PurePath(paths[i]).with_suffix("").parts for i in same]
        for depth in range(1, max(len(p) for p in parts) + 1):
            tails = ["/".join(p[-depth:]) for p in parts]
            if len(set(tails)) == len(tails):
                break
        for i, tail in zip(same, tails):
            names[i] = f"{label} [{tail}]"
    return names


def ground_truth_class_warning(
    gt: Any, gt_path: Any, names: list[str], class_counts: list[int], ignore_index: int = 255
) -> str | None:
    """A warning when the ground truth holds classes that a model cannot predict (an 8-class model compared on
    11-class labels: those pixels count as wrong), else ``None``.

    Example:
        >>> ground_truth_class_warning([[0, 10], [255, 3]], "gt.png", ["FPN"], [8]).split(":")[0]
        'ground truth gt.png holds class 10, but FPN predicts 8 classes'
        >>> ground_truth_class_warning([[0, 7]], "gt.png", ["FPN"], [8]) is None
        True
    """
    import numpy as np

    labelled = np.asarray(gt)[np.asarray(gt) != ignore_index]
    if labelled.size == 0:
        return None
    top = int(labelled.max())
    fewer = [f"{name} predicts {count}" for name, count in zip(names, class_counts) if top >= count]
    if not fewer:
        return None
    return (
        f"ground truth {gt_path} holds class {top}, but {', '.join(fewer)} classes: was a model trained on another "
        "class set (such as 8 classes instead of 11)? The pixels of the classes it lacks count as wrong in its "
        "pixel accuracy"
    )


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import numpy as np
    from tqdm import tqdm

    from fapn.cli.common import setup_runtime, warn
    from fapn.data.base import read_label
    from fapn.inference import Segmenter, collect_images, load_image, save_rgb_png
    from fapn.inference.loading import model_label
    from fapn.visualize import add_legend, colorize, image_grid, labelled_figure, overlay, present_classes, resize_rgb

    if args.names is not None and len(args.names) != len(args.weights):
        raise ValueError(f"{len(args.weights)} checkpoints but {len(args.names)} --names")
    if args.gt is not None and not Path(args.gt).exists():
        raise FileNotFoundError(f"--gt {args.gt} does not exist (expected a folder of label PNGs or one file)")
    device = setup_runtime(args)
    files = collect_images(args.inputs)
    if args.figure3:
        return _run_figure3(args, files, device)
    if any(_is_instance_checkpoint(w) for w in args.weights):
        return _run_instances(args, files, device)
    segmenters = [Segmenter.from_checkpoint(w, device=device, precision=args.precision) for w in args.weights]
    names = args.names or distinct_names(
        [model_label(s.model, fallback=Path(w).stem) for s, w in zip(segmenters, args.weights)], args.weights
    )
    reference = segmenters[0]
    counts = [s.num_classes for s in segmenters]
    one_class_set = len({(s.num_classes, tuple(s.class_names)) for s in segmenters}) == 1
    if not one_class_set:
        warn(
            "the checkpoints predict different class sets ("
            + ", ".join(f"{name}: {count} classes" for name, count in zip(names, counts))
            + "); each panel has the colours and legend of its own model"
        )
    # the ground truth in the colours of the largest class set (the first model's when they are equally large)
    gt_model = max(segmenters, key=lambda s: s.num_classes)
    class_warning_given = False
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def draw(image: np.ndarray, label: np.ndarray, model: Segmenter) -> np.ndarray:
        if args.overlay:
            return overlay(image, label, model.palette, 0.6, model.ignore_index)
        return colorize(label, model.palette, model.ignore_index)

    for path in tqdm(files, desc="compare", unit="img", file=sys.stderr):
        image = load_image(path)
        panels, titles, labels, owners = [image], [path.name], [], []
        gt_path = find_ground_truth(args.gt, path)
        gt = None
        if gt_path is not None:
            gt = read_label(gt_path)
            if gt.shape != image.shape[:2]:
                raise ValueError(f"ground truth {gt_path} is {gt.shape}, image {path} is {image.shape[:2]}")
            if not class_warning_given:  # once per run: the same labels give the same warning for every image
                message = ground_truth_class_warning(gt, gt_path, names, counts, reference.ignore_index)
                if message is not None:
                    tqdm.write(f"fapn: warning: {message}", file=sys.stderr)
                    class_warning_given = True
            panels.append(draw(image, gt, gt_model))
            titles.append("ground truth")
            labels.append(gt)
            owners.append(gt_model)
        line = [str(path)]
        for name, segmenter in zip(names, segmenters):
            label = segmenter.predict(image)
            title = name
            if gt is not None:
                valid = gt != reference.ignore_index
                accuracy = float((label[valid] == gt[valid]).mean()) if valid.any() else float("nan")
                title += f" (pixel acc {100 * accuracy:.1f}%)"
                line.append(f"{name}: pixel accuracy {100 * accuracy:.2f}%")
            panels.append(draw(image, label, segmenter))
            titles.append(title)
            labels.append(label)
            owners.append(segmenter)
        panels = [resize_rgb(p, width=args.width, nearest=i > 0) for i, p in enumerate(panels)]
        if one_class_set:
            figure = labelled_figure(
                panels,
                titles,
                reference.class_names,
                reference.palette,
                labels,
                reference.ignore_index,
                columns=args.columns,
            )
        else:  # a key under each label panel, in its model's colours and names
            keyed = [panels[0]] + [
                add_legend(
                    panel,
                    model.class_names,
                    model.palette,
                    present_classes(label, num_classes=model.num_classes, ignore_index=model.ignore_index),
                )
                for panel, label, model in zip(panels[1:], labels, owners)
            ]
            height = max(p.shape[0] for p in keyed)  # legends of different lengths: pad below, panels stay level
            keyed = [np.pad(p, ((0, height - p.shape[0]), (0, 0), (0, 0)), constant_values=255) for p in keyed]
            figure = image_grid(keyed, titles, columns=args.columns)
        save_rgb_png(figure, out / f"{path.stem}_compare.png")
        if len(line) > 1:
            tqdm.write("  ".join(line), file=sys.stdout)
    print(f"wrote {len(files)} figures to {out}")
    return 0


def _is_instance_checkpoint(path: str) -> bool:
    """Whether a checkpoint holds a detector (a registry name of task ``detection``) rather than a segmenter."""
    from fapn.checkpoint import load_checkpoint
    from fapn.models import list_models

    name = (load_checkpoint(path).get("model_config") or {}).get("name")
    return name in list_models(task="detection")


def _run_instances(args: argparse.Namespace, files: list[Any], device: Any) -> int:
    """Instance models (Mask R-CNN, PointRend): image | each model's masks with outlined boundaries, one row per
    image (the supplementary's Figure 2 compares FPN and FaPN this way)."""
    from pathlib import Path

    import numpy as np
    import torch
    from tqdm import tqdm

    from fapn.checkpoint import build_model_from_checkpoint, load_checkpoint
    from fapn.inference import load_image, save_rgb_png
    from fapn.visualize import image_grid, resize_rgb
    from fapn.visualize.instances import draw_instances

    if not all(_is_instance_checkpoint(w) for w in args.weights):
        raise ValueError("cannot compare instance and semantic segmentation checkpoints in one figure")
    if args.gt is not None:
        raise ValueError("--gt is for semantic label maps; instance models are compared without ground truth")
    models = [build_model_from_checkpoint(load_checkpoint(w)).eval().to(device) for w in args.weights]
    names = args.names or [Path(w).stem for w in args.weights]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in tqdm(files, desc="compare", unit="img", file=sys.stderr):
        image = load_image(path)
        tensor = torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div(255).to(device)
        panels, titles = [image], [path.name]
        for name, model in zip(names, models):
            with torch.no_grad():
                output = model([tensor])[0]
            masks = output["masks"][:, 0].cpu().numpy() >= 0.5
            scores = output["scores"].cpu().numpy()
            panels.append(draw_instances(image, masks, scores, args.score_threshold))
            titles.append(f"{name} ({int((scores >= args.score_threshold).sum())} instances)")
        panels = [resize_rgb(p, width=args.width) for p in panels]
        save_rgb_png(image_grid(panels, titles, columns=args.columns), out / f"{path.stem}_compare.png")
    print(f"wrote {len(files)} figures to {out}")
    return 0


FIGURE3_TASKS = {
    "fasterrcnn": "detection",
    "maskrcnn": "instance",
    "pointrend_maskrcnn": "instance",
    "panoptic_fpn": "panoptic",
}
FIGURE3_COLUMNS = {"detection": "boxes", "instance": "instance masks", "panoptic": "panoptic"}
FIGURE3_ROWS = {"fpn": "FPN", "fapn": "FaPN"}
SMALL_AREA = 32**2


def figure3_checkpoints(weights: list[str]) -> dict[tuple[str, str], str]:
    """``{(task, neck): path}`` of the six Figure 3 checkpoints: a detection, an instance and a panoptic model each
    with the FPN and the FaPN neck, read from the checkpoints' ``model_config``; a one-line error names what is
    missing, doubled or not a detector."""
    from fapn.checkpoint import load_checkpoint

    found: dict[tuple[str, str], str] = {}
    for path in weights:
        config = load_checkpoint(path).get("model_config") or {}
        task, neck = FIGURE3_TASKS.get(str(config.get("detector"))), config.get("neck")
        if task is None or neck not in FIGURE3_ROWS:
            raise ValueError(
                f"{path} is not a Faster R-CNN, Mask R-CNN or Panoptic FPN with an FPN or FaPN neck "
                f"(detector {config.get('detector')!r}, neck {neck!r}): --figure3 takes the six detection checkpoints"
            )
        if (task, neck) in found:
            raise ValueError(f"two {task} checkpoints with the {neck} neck: {found[task, neck]} and {path}")
        found[task, neck] = path
    missing = [f"{t}/{n}" for t in FIGURE3_COLUMNS for n in FIGURE3_ROWS if (t, n) not in found]
    if missing:
        raise ValueError(f"--figure3 needs six checkpoints; missing: {', '.join(missing)}")
    return found


def figure3_images(files: list[Any], instances: str | None, count: int) -> list[tuple[Any, Any]]:
    """The images of Figure 3 and the ``XYXY`` boxes of their small ground-truth objects: with a COCO instances
    file, the ``count`` images with the most objects under 32^2 pixels (ties: by file name), else the first
    ``count`` images (boxes ``None``)."""
    import contextlib
    import io

    import numpy as np

    if count < 1:
        raise ValueError(f"--pick must be at least 1, got {count}")
    if instances is None:
        return [(path, None) for path in files[:count]]
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(instances)
    by_name = {image["file_name"].rsplit("/", 1)[-1]: image["id"] for image in coco.dataset["images"]}
    ranked = []
    for path in files:
        if path.name not in by_name:
            raise ValueError(f"{path.name} is not an image of {instances}")
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=[by_name[path.name]], iscrowd=False))
        boxes = [
            [a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
            for a in annotations
            if a["area"] < SMALL_AREA
        ]
        ranked.append((-len(boxes), path.name, path, np.asarray(boxes, dtype=np.float64).reshape(-1, 4)))
    ranked.sort(key=lambda entry: entry[:2])
    return [(path, boxes) for _, _, path, boxes in ranked[:count]]


def _run_figure3(args: argparse.Namespace, files: list[Any], device: Any) -> int:
    """The supplementary's Figure 3 (see the ``--figure3`` help): six checkpoints, one 2x3 group per image."""
    from pathlib import Path

    import numpy as np
    import torch
    from tqdm import tqdm

    from fapn.checkpoint import build_model_from_checkpoint, load_checkpoint
    from fapn.data.base import default_palette
    from fapn.inference import load_image, save_rgb_png
    from fapn.visualize.instances import draw_instances
    from fapn.visualize.small_objects import (
        SMALL_OUTLINE_COLOR,
        draw_boxes,
        draw_panoptic,
        figure3_group,
        stack_groups,
    )

    if args.names is not None or args.gt is not None:
        raise ValueError("--figure3 names its rows by the checkpoints' necks and takes ground truth from --instances")
    paths = figure3_checkpoints(list(args.weights))
    checkpoints = {key: load_checkpoint(path) for key, path in paths.items()}
    models = {key: build_model_from_checkpoint(c).eval().to(device) for key, c in checkpoints.items()}
    meta = checkpoints["panoptic", "fapn"].get("dataset") or {}
    things = list(meta.get("class_names") or ["__background__"])[1:]
    stuff = list(meta.get("stuff_names") or ["__things__"])[1:]
    palette = [list(c) for c in default_palette(len(things) + len(stuff))]
    thing_palette = [[0, 0, 0], *palette[: len(things)]]
    stuff_palette = [[0, 0, 0], *palette[len(things) :]]
    picked = figure3_images(files, args.instances, args.pick)
    groups, headers = [], []
    for path, gt_small in tqdm(picked, desc="figure3", unit="img", file=sys.stderr):
        image = load_image(path)
        tensor = torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div(255).to(device)
        rows, notes, frames = [], [], []
        for neck in FIGURE3_ROWS:
            row, row_notes = [], []
            for task in FIGURE3_COLUMNS:
                with torch.no_grad():
                    output = models[task, neck]([tensor])[0]
                keep = (output["scores"] >= args.score_threshold).cpu().numpy()
                boxes = output["boxes"].cpu().numpy()[keep]
                labels = output["labels"].cpu().numpy()[keep]
                if task == "detection":
                    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
                    row.append(draw_boxes(image, boxes, labels.tolist(), thing_palette))
                elif task == "instance":
                    masks = output["masks"][:, 0].cpu().numpy()[keep] >= 0.5
                    areas = masks.sum(axis=(1, 2))
                    colors = [thing_palette[int(label)] for label in labels]
                    row.append(draw_instances(image, masks, colors=colors))
                else:
                    segments = output["segments_info"]
                    areas = np.array([s["area"] for s in segments if s["isthing"]])
                    panoptic = output["panoptic_seg"].cpu().numpy()
                    row.append(draw_panoptic(image, panoptic, segments, thing_palette, stuff_palette))
                small = int((areas < SMALL_AREA).sum())
                row_notes.append(f"{len(areas)} objects, {small} small")
                if gt_small is None and task == "detection":
                    frames.append(boxes[areas < SMALL_AREA])
            rows.append(row)
            notes.append(row_notes)
        names = [FIGURE3_ROWS[n] for n in FIGURE3_ROWS]
        frame_boxes = gt_small if gt_small is not None else np.concatenate(frames).reshape(-1, 4)
        groups.append(figure3_group(rows, names, list(FIGURE3_COLUMNS.values()), frame_boxes, args.width, notes))
        framed = "ground-truth" if gt_small is not None else "detected (either model)"
        headers.append(f"{path.name}: {len(frame_boxes)} {framed} objects under 32^2 px framed in yellow")
    legend_names = [*things, *stuff, "small object (< 32^2 px)"]
    legend_palette = [*palette, list(SMALL_OUTLINE_COLOR)]
    figure = stack_groups(groups, headers, legend_names, legend_palette)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_rgb_png(figure, out / "figure3.png")
    print(f"wrote {out / 'figure3.png'} ({len(groups)} groups: {', '.join(p.name for p, _ in picked)})")
    return 0
