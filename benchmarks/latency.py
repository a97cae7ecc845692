"""Latency of the real-time FPN baseline and FaPN (ResNet-18, 19 classes) in PyTorch and onnxruntime at the
paper's 768x1536 and at full Cityscapes 1024x2048, batch 1 (the figures of record of docs/benchmarks.md now come from
benchmarks/cpu_paths.py, which covers every dtype, layout and runtime).

Run:  .venv/bin/python benchmarks/latency.py [--threads 1] [--repeats 5] [extra 'fapn benchmark' options]

Prints the machine and a Markdown table (median and interquartile range over --repeats runs after a warm-up,
the ratio to FPN, and the ratio the MACs predict); FaPN in PyTorch with the default CPU deformable-conv backend
and with torchvision's kernel; in onnxruntime with ONNX DeformConv. Models and inputs are timed in turns. On a shared CPU use one thread: with two OpenMP threads
competing with other processes for two cores, PyTorch's times grow several-fold and vary wildly.
"""

from __future__ import annotations

import argparse
import sys

from fapn.cli.main import main
from fapn.inference.benchmark import cpu_description


def machine() -> str:
    cpu = cpu_description()
    return (
        f"{cpu['model']} ({', '.join(cpu['flags'])}), {cpu['cores']} logical cores, "
        f"load average {cpu['load_average']:.1f} at start"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", default="1")
    parser.add_argument("--repeats", default="5")
    parser.add_argument("--warmup", default="1")
    known, extra = parser.parse_known_args()
    print(f"# machine: {machine()}")
    print(f"# command: {' '.join([sys.executable, *sys.argv])}")
    sys.exit(
        main(
            [
                "benchmark",
                "--necks",
                "fpn",
                "fapn",
                "--backbone",
                "resnet18",
                "--num-classes",
                "19",
                "--sizes",
                "768x1536",
                "1024x2048",
                "--batch-sizes",
                "1",
                "--runtimes",
                "torch",
                "onnxruntime",
                "--deform-backends",
                "auto",
                "torchvision",
                "--threads",
                known.threads,
                "--repeats",
                known.repeats,
                "--warmup",
                known.warmup,
                *extra,
            ]
        )
    )
