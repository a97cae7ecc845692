"""FaPN-R18 / FPN-R18 latency at 768x1536 in float32/bfloat16 x NCHW/channels last: one small table.

Uses only APIs every recent fapn version has (``realtime_fapn``, ``time_interleaved``), so that it runs on an older checkout
too: that is how docs/benchmarks.md compares the code before and after a change on one machine, e.g.

    PYTHONPATH=/path/to/old/checkout/src python benchmarks/model_ratio.py --threads 2
    python benchmarks/model_ratio.py --threads 2
"""

from __future__ import annotations

import argparse
import statistics

import torch

import fapn
from fapn.inference.benchmark import time_interleaved
from fapn.models import realtime_fapn


def model(variant: str) -> torch.nn.Module:
    torch.manual_seed(0)
    net = realtime_fapn(backbone="resnet18", num_classes=19, neck=variant)
    for module in net.modules():  # fractional offsets, as in a trained FAM
        if hasattr(module, "offset_mask"):
            torch.nn.init.normal_(module.offset_mask.weight, std=0.01)
    return net.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--size", type=int, nargs=2, default=[768, 1536], metavar=("H", "W"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    models = {v: model(v) for v in ("fpn", "fapn")}
    print(f"# fapn from {fapn.__file__}, {args.threads} threads, {args.size[0]}x{args.size[1]}")
    for dtype in (torch.float32, torch.bfloat16):
        for layout in (torch.contiguous_format, torch.channels_last):
            runners = {}
            for variant, net in models.items():
                net = net.to(dtype).to(memory_format=layout)
                x = torch.randn(1, 3, *args.size).to(dtype).contiguous(memory_format=layout)

                def run(net: torch.nn.Module = net, x: torch.Tensor = x) -> None:
                    with torch.inference_mode():
                        net(x)

                runners[variant] = run
            times, _errors = time_interleaved(runners, warmup=1, repeats=args.rounds)
            med = {v: statistics.median(t) for v, t in times.items()}
            name = "channels_last" if layout == torch.channels_last else "contiguous"
            print(f"{str(dtype)[6:]:8s} {name:13s} FPN {med['fpn']:.0f} FaPN {med['fapn']:.0f} "
                  f"ratio {med['fapn'] / med['fpn']:.2f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
