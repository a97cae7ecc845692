"""Whole-model cost of the deformable conv: real-time FaPN-R18 against FPN-R18, per deformable-conv backend.

1. Inference latency at 768x1536 (batch 1, ``torch.no_grad``, eval mode, 19 classes): FaPN / FPN ratio.
2. One CamVid training step (11 classes, the ``camvid_r18_fapn`` config's batch 8 of 176x240 crops, SGD with
   momentum, cross-entropy with ignore index 11): FaPN / FPN ratio. The inputs are random tensors of CamVid's
   shape: a step's cost does not depend on the pixels.

Every candidate is timed round by round, interleaved, in one process, so a neighbour's load on a shared CPU hits
all alike; the medians and their ratios are printed.

    python benchmarks/model_step.py --threads 1
    python benchmarks/model_step.py --threads 2 --rounds 5 --backends cpu,torchvision
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import torch
import torch.nn.functional as F

from fapn.inference.benchmark import time_interleaved
from fapn.models import realtime_fapn
from fapn.ops import BACKENDS


def _model(variant: str, num_classes: int, backend: str | None) -> torch.nn.Module:
    torch.manual_seed(0)
    model = realtime_fapn(backbone="resnet18", num_classes=num_classes, neck=variant, deform_backend=backend)
    # The zero-initialised offset conv puts every sample on the pixel grid; a trained FAM's offsets are
    # fractional. Small random weights make the deformable conv sample as it does in a trained model.
    for module in model.modules():
        if hasattr(module, "offset_mask"):
            torch.nn.init.normal_(module.offset_mask.weight, std=0.01)
    return model


def inference_candidates(backends: list[str], size: tuple[int, int]) -> dict[str, Callable[[], object]]:
    image = torch.randn(1, 3, *size)
    candidates: dict[str, Callable[[], object]] = {}
    for name, variant, backend in [("FPN-R18", "fpn", None)] + [(f"FaPN-R18 [{b}]", "fapn", b) for b in backends]:
        model = _model(variant, 19, backend).eval()

        def run(model: torch.nn.Module = model) -> object:
            with torch.no_grad():
                return model(image)

        candidates[name] = run
    return candidates


def training_candidates(backends: list[str], batch: int, size: tuple[int, int]) -> dict[str, Callable[[], object]]:
    g = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, *size, generator=g)
    labels = torch.randint(0, 12, (batch, *size), generator=g)  # 11 = CamVid's ignore label
    candidates: dict[str, Callable[[], object]] = {}
    for name, variant, backend in [("FPN-R18", "fpn", None)] + [(f"FaPN-R18 [{b}]", "fapn", b) for b in backends]:
        model = _model(variant, 11, backend).train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

        def step(model: torch.nn.Module = model, optimizer: torch.optim.Optimizer = optimizer) -> object:
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(images), labels, ignore_index=11)
            loss.backward()
            optimizer.step()
            return loss

        candidates[name] = step
    return candidates


def _time_and_report(title: str, candidates: dict[str, Callable[[], object]], rounds: int) -> None:
    """Median milliseconds per call of every candidate (calls interleaved round by round), against FPN-R18's."""
    times, errors = time_interleaved(candidates, warmup=1, repeats=rounds)
    medians = {name: statistics.median(t) for name, t in times.items() if t}
    base = medians["FPN-R18"]
    print(f"\n{title}")
    print(f"{'model':<28} {'median ms':>10} {'/ FPN':>7}")
    for name, ms in medians.items():
        print(f"{name:<28} {ms:>10.1f} {ms / base:>7.2f}")
    for name, error in errors.items():
        print(f"{name:<28} failed: {error}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="cpu,pytorch,torchvision", help="deformable-conv backends for FaPN")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--rounds", type=int, default=3, help="timed calls per candidate (interleaved)")
    parser.add_argument("--skip", choices=["inference", "training"], help="leave one of the two out")
    parser.add_argument("--train-batch", type=int, default=8)
    parser.add_argument("--train-size", type=int, nargs=2, default=[176, 240], metavar=("H", "W"))
    args = parser.parse_args()
    backends = [b for b in args.backends.split(",") if b]
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        parser.error(f"unknown backends {unknown}; valid: {sorted(BACKENDS)}")
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.rounds} rounds")
    if args.skip != "inference":
        candidates = inference_candidates(backends, (768, 1536))
        _time_and_report("inference, 1x3x768x1536, 19 classes", candidates, args.rounds)
    if args.skip != "training":
        candidates = training_candidates(backends, args.train_batch, tuple(args.train_size))
        _time_and_report(f"CamVid training step, batch {args.train_batch} x 3x{args.train_size[0]}x{args.train_size[1]}, "
                         "11 classes", candidates, args.rounds)  # fmt: skip


if __name__ == "__main__":
    main()
