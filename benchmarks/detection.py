"""Mask R-CNN with FaPN against Mask R-CNN with FPN on the synthetic COCO-format shapes, on a CPU budget.

Both models: ResNet-18 from scratch (no ImageNet weights offline), torchvision's Mask R-CNN heads, the same
data, seed, schedule and number of iterations; only the neck differs (``model.neck=fapn`` or ``fpn``). Each
model trains in its own process (both at once, one thread each, so they share the machine equally), then is
evaluated with pycocotools on the synthetic validation images. Prints box and mask AP and the wall time.

Run (logs outside the repository):

    nohup .venv/bin/python benchmarks/detection.py --iterations 150 --output-dir /tmp/fapn-bench-det \
        > /tmp/fapn-bench-det.log 2>&1 &

Figures are recorded in docs/benchmarks.md ("Detection and instance segmentation").
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

CONFIGS = {"fapn": "detection/synthetic_mask_rcnn_R_18_FaPN", "fpn": "detection/synthetic_mask_rcnn_R_18_FPN"}


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
    cfg = load_detection_config(CONFIGS[neck], overrides(args))
    output = Path(args.output_dir) / neck
    metrics = train(cfg, output, progress=True)
    metrics["neck"] = neck
    (output / "benchmark.json").write_text(json.dumps(metrics, indent=2))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--box-batch-size", type=int, default=32, help="RoIs sampled per image for the heads")
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--threads", type=int, default=1, help="threads per model (both run at once)")
    parser.add_argument("--num-train", type=int, default=256)
    parser.add_argument("--num-val", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", default="/tmp/fapn-bench-det")
    parser.add_argument("--neck", choices=sorted(CONFIGS), help="run one model in this process (internal)")
    args = parser.parse_args()
    if args.neck:
        run_one(args.neck, args)
        return 0
    # generate the data once, before the two processes race for it
    from fapn.engine.detection import build_datasets, load_detection_config

    build_datasets(load_detection_config(CONFIGS["fapn"], overrides(args)))
    began = time.perf_counter()
    argv = [a for a in sys.argv[1:]]
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    processes = {}
    for neck in CONFIGS:
        log = open(Path(args.output_dir) / f"{neck}.log", "w")  # noqa: SIM115
        processes[neck] = subprocess.Popen(
            [sys.executable, __file__, *argv, "--neck", neck], stdout=log, stderr=subprocess.STDOUT
        )
    codes = {neck: p.wait() for neck, p in processes.items()}
    if any(codes.values()):
        print(f"failed: {codes}; see {args.output_dir}/*.log")
        return 1
    print(f"total wall time {time.perf_counter() - began:.0f} s; settings: {vars(args)}")
    print("| neck | iterations | train time (s) | box AP | box AP50 | mask AP | mask AP50 |")
    print("|---|---|---|---|---|---|---|")
    for neck in CONFIGS:
        m = json.loads((Path(args.output_dir) / neck / "benchmark.json").read_text())
        print(
            f"| {neck} | {m['iterations']} | {m['train_seconds']:.0f} | {m['bbox']['AP']:.1f} | "
            f"{m['bbox']['AP50']:.1f} | {m['segm']['AP']:.1f} | {m['segm']['AP50']:.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
