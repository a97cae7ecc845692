"""Mask R-CNN with FaPN against Mask R-CNN with FPN on the synthetic COCO-format shapes, on a CPU budget.

Both models: ResNet-18 from scratch (no ImageNet weights offline), the same data, seed, schedule, number of
iterations and RoI sampling; only the neck differs (``model.neck=fapn`` or ``fpn``). The mask head is
torchvision's (``--mask-head standard``, recipes ``detection/synthetic_mask_rcnn_R_18_{FaPN,FPN}``) or PointRend's
coarse mask head and point head (``--mask-head pointrend``, recipes ``detection/pointrend_rcnn_R_18_{FaPN,FPN}_synthetic``:
the supplementary's Figure 2 system, Mask R-CNN with PointRend as the mask head). Each model trains in its own
process (both at once, one thread each, so they share the machine equally), then is evaluated with pycocotools
on the synthetic validation images: box AP, mask AP and Boundary AP (``fapn.metrics.boundary_iou``: matching on
min(mask IoU, boundary IoU), the measure that sees boundaries). With ``--figures N`` it also draws the Figure 2
layout (image | FPN | FaPN, boundaries outlined) for the first N validation images with ``fapn compare``.

Run (logs outside the repository):

    nohup .venv/bin/python benchmarks/detection.py --iterations 150 --output-dir /tmp/fapn-bench-det \\
        > /tmp/fapn-bench-det.log 2>&1 &
    nohup .venv/bin/python benchmarks/detection.py --mask-head pointrend --iterations 150 --figures 8 \\
        --output-dir /tmp/fapn-bench-pointrend > /tmp/fapn-bench-pointrend.log 2>&1 &
    python benchmarks/detection.py --iterations 2 --num-train 4 --num-val 2 --output-dir /tmp/det_tiny  # smoke test

Figures are recorded in docs/benchmarks.md ("Detection and instance segmentation").
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

RECIPES = {
    "standard": {"fapn": "detection/synthetic_mask_rcnn_R_18_FaPN", "fpn": "detection/synthetic_mask_rcnn_R_18_FPN"},
    "pointrend": {
        "fapn": "detection/pointrend_rcnn_R_18_FaPN_synthetic",
        "fpn": "detection/pointrend_rcnn_R_18_FPN_synthetic",
    },
}
NECKS = ("fpn", "fapn")


def overrides(args: argparse.Namespace) -> list[str]:
    warmup = max(1, args.iterations // 10)
    return [
        f"train.iterations={args.iterations}",
        f"train.batch_size={args.batch_size}",
        f"train.threads={args.threads}",
        f"train.seed={args.seed}",
        "train.checkpoint_period=0",
        f"optim.lr={args.lr}",
        f"optim.warmup_iters={warmup}",
        f"optim.milestones=[{int(args.iterations * 0.8)}, {int(args.iterations * 0.93)}]",
        f"model.options.box_batch_size_per_image={args.box_batch_size}",
        f"data.synthetic.num_train={args.num_train}",
        f"data.synthetic.num_val={args.num_val}",
    ]


def run_one(neck: str, args: argparse.Namespace) -> None:
    import torch

    from fapn.engine.detection import load_detection_config, train

    torch.set_num_threads(args.threads)
    cfg = load_detection_config(RECIPES[args.mask_head][neck], overrides(args))
    output = Path(args.output_dir) / neck
    metrics = train(cfg, output, progress=True, overwrite=True)
    metrics["neck"] = neck
    (output / "benchmark.json").write_text(json.dumps(metrics, indent=2))


def figures(args: argparse.Namespace) -> None:
    """Image | FPN | FaPN with boundaries outlined, for the first ``--figures`` validation images."""
    from fapn.cli.main import main as fapn_main
    from fapn.engine.detection import load_detection_config
    from fapn.engine.detection.data import data_root

    cfg = load_detection_config(RECIPES[args.mask_head]["fapn"], overrides(args))
    images = sorted((data_root(cfg) / "val" / "images").glob("*"))[: args.figures]
    weights = [str(Path(args.output_dir) / neck / "model_final.pt") for neck in NECKS]
    out = str(Path(args.output_dir) / "figures")
    fapn_main(
        ["compare", *map(str, images), "--weights", *weights, "--names", "FPN", "FaPN", "--out", out, "--width", "384"]
    )
    print(f"figures: {out}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mask-head", choices=sorted(RECIPES), default="standard")
    parser.add_argument("--iterations", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--box-batch-size", type=int, default=32, help="RoIs sampled per image for the heads")
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--threads", type=int, default=1, help="threads per model (both run at once)")
    parser.add_argument("--num-train", type=int, default=256)
    parser.add_argument("--num-val", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--figures", type=int, default=0, help="Figure 2-style pictures of this many val images")
    parser.add_argument("--output-dir", default="/tmp/fapn-bench-det")
    parser.add_argument("--neck", choices=NECKS, help="run one model in this process (internal)")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    if args.neck:
        run_one(args.neck, args)
        return 0
    from fapn.engine.detection import build_datasets, load_detection_config

    # generate the data once, before the two processes race for it
    build_datasets(load_detection_config(RECIPES[args.mask_head]["fapn"], overrides(args)))
    began = time.perf_counter()
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    processes = {}
    for neck in NECKS:
        with open(Path(args.output_dir) / f"{neck}.log", "w") as log:  # the child keeps its own descriptor
            command = [sys.executable, __file__, *sys.argv[1:], "--neck", neck]
            processes[neck] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    codes = {neck: p.wait() for neck, p in processes.items()}
    if any(codes.values()):
        print(f"failed: {codes}; see {args.output_dir}/*.log")
        return 1
    print(f"total wall time {time.perf_counter() - began:.0f} s; settings: {vars(args)}")
    print(
        "| neck | iterations | train time (s) | box AP | box AP50 | mask AP | mask AP50 | Boundary AP | Boundary AP50 |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for neck in NECKS:
        m = json.loads((Path(args.output_dir) / neck / "benchmark.json").read_text())
        print(
            f"| {neck} | {m['iterations']} | {m['train_seconds']:.0f} | {m['bbox']['AP']:.1f} | "
            f"{m['bbox']['AP50']:.1f} | {m['segm']['AP']:.1f} | {m['segm']['AP50']:.1f} | "
            f"{m['boundary']['AP']:.1f} | {m['boundary']['AP50']:.1f} |"
        )
    if args.figures:
        figures(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
