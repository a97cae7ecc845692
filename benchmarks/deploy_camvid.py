"""What the fast inference paths cost in accuracy, and what INT8 gains in speed: trained FPN and FaPN on CamVid.

For each checkpoint (an FPN and a FaPN trained on CamVid, e.g. with the commands below), on the CamVid val split:

* mIoU and boundary mIoU in PyTorch float32 NCHW (the reference), float32 channels last (the default layout:
  same labels expected), bfloat16 (``--precision bf16``), onnxruntime float32 and onnxruntime INT8 (the export
  of ``fapn export --quantize int8``, calibrated on ``--calibration-images`` CamVid train frames);
* the change of each against the float32 reference, and the share of pixels whose label changed;
* onnxruntime latency, float32 against INT8, at ``--latency-size`` (batch 1, interleaved, median), with the
  FaPN / FPN ratio in each.

Writes one JSON (``--out``) and prints a Markdown table. Targets set for INT8 deployment: mIoU change at
most 0.5 in INT8, INT8 at least 1.8x faster than float32 for both models, FaPN / FPN at most 1.25 in INT8.

Train the two checkpoints (1000 iterations of the study recipe, ResNet-18 from scratch, about 30 min each on one
free core):

    fapn train semseg/camvid_r18_study --set model.neck=fpn --set train.iterations=1000 \\
        --set data.root=$FAPN_DATA/camvid-half --output-dir runs/deploy/fpn --threads 1
    (the same with model.neck=fapn and runs/deploy/fapn)
    python benchmarks/deploy_camvid.py --weights runs/deploy/fpn/last.pt runs/deploy/fapn/last.pt \\
        --data $FAPN_DATA/camvid-half --out benchmarks/results/deploy/camvid_precision.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from fapn.checkpoint import build_model_from_checkpoint, load_checkpoint
from fapn.data.build import build_dataset
from fapn.data.transforms import eval_transforms
from fapn.engine.semseg.eval import evaluate
from fapn.export import calibration_batches, export_onnx, quantize_onnx_int8
from fapn.inference.benchmark import cpu_description, machine_load, prepare_onnxruntime, time_interleaved
from fapn.inference.io import collect_images
from fapn.runtime import prepare_inference


class OnnxModel(nn.Module):
    """An onnxruntime session behind ``nn.Module``'s call, so the engine's ``evaluate`` scores it like any model."""

    def __init__(self, path: Path, threads: int) -> None:
        super().__init__()
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, x: Tensor) -> Tensor:
        return torch.from_numpy(self.session.run(None, {self.input_name: x.float().contiguous().numpy()})[0])


def score(model: nn.Module, dataset: Any) -> tuple[dict[str, Any], list[np.ndarray]]:
    """The scores of ``model`` on ``dataset`` and its label maps (to count changed pixels)."""
    labels: list[np.ndarray] = []

    class Recording(nn.Module):  # keeps each image's argmax on the way through
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, x: Tensor) -> Tensor:
            out = self.inner(x)
            labels.append(out.float().argmax(1).numpy())
            return out

    scores = evaluate(Recording(), dataset, "cpu", progress=False)
    return scores, labels


def onnx_latency(paths: dict[str, Path], size: tuple[int, ...], threads: int, repeats: int) -> dict[str, float]:
    """Median milliseconds per call of each ONNX file in onnxruntime, the files taking turns."""
    runners = {name: prepare_onnxruntime(path, (1, 3, *size), threads=threads)[0] for name, path in paths.items()}
    times, _errors = time_interleaved(runners, warmup=1, repeats=repeats)
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", nargs="+", required=True, help="checkpoints (an FPN and a FaPN)")
    parser.add_argument("--data", default=None, help="CamVid root (default: $FAPN_DATA/camvid-half)")
    parser.add_argument("--calibration-images", type=int, default=64, help="train frames to calibrate INT8 on")
    parser.add_argument("--latency-size", default="768x1536", help="HxW for the onnxruntime latency")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per latency")
    parser.add_argument("--out", default=None, help="JSON file for the results")
    args = parser.parse_args(argv)
    root = Path(args.data or Path(os.environ.get("FAPN_DATA", "../shared/data")) / "camvid-half")
    if not (root / "val").is_dir():
        print(f"deploy_camvid.py: no CamVid val split under {root}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    latency_size = tuple(int(v) for v in args.latency_size.lower().split("x"))
    result: dict[str, Any] = {"cpu": cpu_description(), "command": " ".join(["python", *sys.argv]),
                              "data": str(root), "models": []}  # fmt: skip
    calibration = collect_images([root / "train"])[:: max(1, 367 // args.calibration_images)][: args.calibration_images]
    onnx_paths: dict[str, dict[str, Path]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for weights in args.weights:
            checkpoint = load_checkpoint(weights)
            config = checkpoint["model_config"]  # the neck, under its earlier key variant in older checkpoints
            label = str(config.get("neck", config.get("variant", Path(weights).stem)))
            stored = checkpoint.get("dataset") or {}
            mean, std = stored["mean"], stored["std"]
            dataset = build_dataset("camvid", root, "val", eval_transforms(mean, std))
            rows: dict[str, Any] = {}
            reference_labels: list[np.ndarray] = []
            for name, precision, channels_last in (("float32 NCHW", "fp32", False), ("float32 channels last", "fp32", True),
                                                   ("bfloat16", "bf16", None)):  # fmt: skip
                model = prepare_inference(build_model_from_checkpoint(checkpoint), "cpu", precision, channels_last)
                scores, labels = score(model, dataset)
                rows[name] = (scores, labels)
                if not reference_labels:
                    reference_labels = labels
                print(f"{label} {name}: mIoU {scores['mIoU']:.2f}", flush=True)
            model = build_model_from_checkpoint(checkpoint).eval()
            float_path = Path(folder) / f"{label}.onnx"
            export_onnx(model, float_path, metadata={"mean": mean, "std": std}, check=False)
            int8_path = Path(folder) / f"{label}.int8.onnx"
            norm = [m / 255 if max(mean) > 1 else m for m in mean], [s / 255 if max(std) > 1 else s for s in std]
            quantize_onnx_int8(float_path, int8_path, calibration_batches(calibration, *norm))
            onnx_paths[label] = {"onnxruntime float32": float_path, "onnxruntime int8": int8_path}
            for name, path in onnx_paths[label].items():
                rows[name] = score(OnnxModel(path, args.threads), dataset)
                print(f"{label} {name}: mIoU {rows[name][0]['mIoU']:.2f}", flush=True)
            reference = rows["float32 NCHW"][0]
            entry: dict[str, Any] = {"model": label, "weights": str(weights), "paths": {}}
            for name, (scores, labels) in rows.items():
                changed = float(np.mean([np.mean(a != b) for a, b in zip(labels, reference_labels)]))
                entry["paths"][name] = {
                    "mIoU": scores["mIoU"],
                    "boundary_mIoU": scores["boundary"]["mIoU"],
                    "mIoU_change": scores["mIoU"] - reference["mIoU"],
                    "pixels_changed": changed,
                }
            result["models"].append(entry)
        load_before = machine_load()
        flat = {f"{model} {name}": path for model, paths in onnx_paths.items() for name, path in paths.items()}
        latency = onnx_latency(flat, latency_size, args.threads, args.repeats)
        result["latency"] = {"size": args.latency_size, "threads": args.threads, "median_ms": latency,
                             "load_before": load_before, "load_after": machine_load()}  # fmt: skip

    print(f"\n{result['cpu']['model']} ({', '.join(result['cpu']['flags'])}), {args.threads} threads")
    print("| model | path | mIoU | change | boundary mIoU | pixels changed |\n|---|---|---:|---:|---:|---:|")
    for entry in result["models"]:
        for name, row in entry["paths"].items():
            print(f"| {entry['model']} | {name} | {row['mIoU']:.2f} | {row['mIoU_change']:+.2f} | "
                  f"{row['boundary_mIoU']:.2f} | {100 * row['pixels_changed']:.2f}% |")  # fmt: skip
    print(f"\nonnxruntime latency at {args.latency_size}, batch 1, {args.threads} threads (median of {args.repeats})")
    print("| model | float32 ms | int8 ms | int8 speed-up |\n|---|---:|---:|---:|")
    for model in onnx_paths:
        f32, i8 = latency[f"{model} onnxruntime float32"], latency[f"{model} onnxruntime int8"]
        print(f"| {model} | {f32:.0f} | {i8:.0f} | {f32 / i8:.2f}x |")
    models = list(onnx_paths)
    if len(models) == 2:
        for kind in ("float32", "int8"):
            a, b = (latency[f"{m} onnxruntime {kind}"] for m in models)
            print(f"{models[1]} / {models[0]} in {kind}: {b / a:.2f}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
