"""FaPN on one CUDA GPU, in one run of a few minutes: what only a GPU can tell.

1. Frames per second of the real-time FPN and FaPN, ResNet-18 and ResNet-34 (19 classes, batch 1), at 1024x2048
   and 768x1536, float32 and float16 (channels last; the supplementary's real-time bar is 30 FPS).
2. The deformable conv (torchvision's CUDA kernel, fapn's default on CUDA, and the pure-PyTorch backend) against
   cuDNN's dense conv of the same shape at FaPN's shapes, float32 and float16.
3. One mixed-precision (float16 autocast + GradScaler) training step of each R18 model, batch 8 of 512x1024.

Prints one table per part, with the card's name, and writes everything to JSON. ``--dry-run`` runs every part on
the CPU at tiny sizes with one repeat: it checks the script, not the speed (a fast test runs it).

    python benchmarks/gpu.py --out benchmarks/results/gpu/h100.json
    python benchmarks/gpu.py --dry-run --out /tmp/gpu_dry.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from fapn.inference.benchmark import cpu_description, time_calls
from fapn.models import realtime_fapn
from fapn.ops import deform_conv2d

OP_SHAPES = {"128ch 96x192": (128, 96, 192), "128ch 48x96": (128, 48, 96), "256ch 100x152": (256, 100, 152),
             "256ch 50x76": (256, 50, 76)}  # fmt: skip


def timed(fn: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> float:
    """Median milliseconds per call, with the device synchronised around each call."""
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    return statistics.median(time_calls(fn, warmup, repeats, sync))


def _model(backbone: str, variant: str, num_classes: int = 19) -> torch.nn.Module:
    torch.manual_seed(0)
    model = realtime_fapn(backbone=backbone, num_classes=num_classes, neck=variant)
    for module in model.modules():  # fractional offsets, as in a trained FAM
        if hasattr(module, "offset_mask"):
            torch.nn.init.normal_(module.offset_mask.weight, std=0.01)
    return model


def fps_part(device: torch.device, sizes: list[tuple[int, int]], warmup: int, repeats: int) -> list[dict[str, Any]]:
    rows = []
    dtypes = {"float32": torch.float32, "float16": torch.float16 if device.type == "cuda" else torch.bfloat16}
    for backbone in ("resnet18", "resnet34"):
        for variant in ("fpn", "fapn"):
            base = _model(backbone, variant).eval()
            for height, width in sizes:
                for dtype in dtypes.values():
                    model = base.to(device, dtype)
                    if dtype != torch.float32:
                        model = model.to(memory_format=torch.channels_last)
                    x = torch.randn(1, 3, height, width, device=device, dtype=dtype)

                    def run(model: torch.nn.Module = model, x: torch.Tensor = x) -> object:
                        with torch.inference_mode():
                            return model(x)

                    ms = timed(run, device, warmup, repeats)
                    rows.append({"backbone": backbone, "variant": variant, "size": f"{height}x{width}",
                                 "dtype": str(dtype).replace("torch.", ""), "ms": ms, "fps": 1e3 / ms})  # fmt: skip
                    print(f"  {variant}-{backbone} {height}x{width} {rows[-1]['dtype']}: {ms:.2f} ms, "
                          f"{1e3 / ms:.1f} FPS", flush=True)  # fmt: skip
                base = base.float().to(memory_format=torch.contiguous_format)
    return rows


def op_part(device: torch.device, shrink: int, warmup: int, repeats: int) -> list[dict[str, Any]]:
    rows = []
    dtypes = [torch.float32, torch.float16] if device.type == "cuda" else [torch.float32]
    for name, (channels, height, width) in OP_SHAPES.items():
        channels, height, width = channels // shrink, height // shrink, width // shrink
        for dtype in dtypes:
            g = torch.Generator().manual_seed(0)
            x = torch.randn(1, channels, height, width, generator=g).to(device, dtype)
            offset = (torch.randn(1, 144, height, width, generator=g) * 2).to(device, dtype)
            mask = torch.rand(1, 72, height, width, generator=g).to(device, dtype)
            weight = (torch.randn(channels, channels, 3, 3, generator=g) / (9 * channels) ** 0.5).to(device, dtype)
            with torch.inference_mode():
                dense = timed(lambda: F.conv2d(x, weight, padding=1), device, warmup, repeats)  # noqa: B023
                row = {"shape": name, "dtype": str(dtype).replace("torch.", ""), "dense_ms": dense}
                for backend in ("torchvision", "pytorch"):
                    ms = timed(
                        lambda b=backend: deform_conv2d(x, offset, weight, padding=1, mask=mask, backend=b),  # noqa: B023
                        device,
                        warmup,
                        repeats,
                    )
                    row[f"{backend}_ms"] = ms
                    row[f"{backend}_over_dense"] = ms / dense
            rows.append(row)
            print(f"  op {name} {row['dtype']}: dense {dense:.3f} ms, torchvision {row['torchvision_ms']:.3f} ms "
                  f"({row['torchvision_over_dense']:.2f}x), pytorch {row['pytorch_ms']:.3f} ms "
                  f"({row['pytorch_over_dense']:.2f}x)", flush=True)  # fmt: skip
    return rows


def train_part(device: torch.device, batch: int, size: tuple[int, int], warmup: int, repeats: int) -> list[dict]:
    rows = []
    cuda = device.type == "cuda"
    g = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, *size, generator=g).to(device)
    labels = torch.randint(0, 19, (batch, *size), generator=g).to(device)
    for variant in ("fpn", "fapn"):
        model = _model("resnet18", variant).to(device).train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        scaler = torch.amp.GradScaler(device.type, enabled=cuda)

        def step(model: torch.nn.Module = model, optimizer: Any = optimizer, scaler: Any = scaler) -> object:
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.float16 if cuda else torch.bfloat16):
                loss = F.cross_entropy(model(images).float(), labels)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            return loss

        ms = timed(step, device, warmup, repeats)
        rows.append({"variant": variant, "batch": batch, "size": f"{size[0]}x{size[1]}", "ms": ms})
        print(f"  AMP training step {variant}-resnet18, batch {batch} of {size[0]}x{size[1]}: {ms:.1f} ms", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="JSON file for the results")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per measurement")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls first")
    parser.add_argument("--dry-run", action="store_true", help="the CPU, tiny sizes, one repeat: checks the script")
    args = parser.parse_args(argv)
    if args.dry_run:
        device, sizes, shrink, batch, train_size = torch.device("cpu"), [(64, 128)], 8, 2, (64, 64)
        args.repeats, args.warmup = 1, 0
    else:
        if not torch.cuda.is_available():
            print("gpu.py: no CUDA GPU visible to torch; --dry-run checks the script on the CPU", file=sys.stderr)
            return 2
        device, sizes, shrink, batch, train_size = torch.device("cuda"), [(1024, 2048), (768, 1536)], 1, 8, (512, 1024)
        torch.backends.cudnn.benchmark = True
    name = (
        torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU dry run ({cpu_description()['model']})"
    )
    result: dict[str, Any] = {"device": name, "torch": torch.__version__, "cuda": torch.version.cuda,
                              "dry_run": args.dry_run, "repeats": args.repeats}  # fmt: skip
    print(f"# {name}, torch {torch.__version__}, CUDA {torch.version.cuda}", flush=True)
    start = time.perf_counter()
    result["fps"] = fps_part(device, sizes, args.warmup, args.repeats)
    result["deform_conv"] = op_part(device, shrink, args.warmup, args.repeats)
    result["train_step"] = train_part(device, batch, train_size, args.warmup, args.repeats)
    result["seconds"] = time.perf_counter() - start

    print(f"\n{name}: frames per second (batch 1; the supplementary's real-time bar is 30 FPS)")
    print("| model | input | dtype | ms | FPS |\n|---|---|---|---:|---:|")
    for r in result["fps"]:
        print(f"| {r['variant']}-{r['backbone']} | {r['size']} | {r['dtype']} | {r['ms']:.2f} | {r['fps']:.1f} |")
    print(
        "\n| deformable conv | dtype | dense ms | torchvision ms (x dense) | pytorch ms (x dense) |\n|---|---|---:|---:|---:|"
    )
    for r in result["deform_conv"]:
        print(f"| {r['shape']} | {r['dtype']} | {r['dense_ms']:.3f} | {r['torchvision_ms']:.3f} "
              f"({r['torchvision_over_dense']:.2f}) | {r['pytorch_ms']:.3f} ({r['pytorch_over_dense']:.2f}) |")  # fmt: skip
    steps = {r["variant"]: r for r in result["train_step"]}
    print(f"\nAMP training step: FPN {steps['fpn']['ms']:.1f} ms, FaPN {steps['fapn']['ms']:.1f} ms "
          f"({steps['fapn']['ms'] / steps['fpn']['ms']:.2f}x); total {result['seconds']:.0f} s")  # fmt: skip
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
