"""CamVid benchmark: MaskFormer with the FaPN pixel decoder against MaskFormer with its FPN, from scratch.

Trains ``semseg/camvid_maskformer_fpn`` and ``semseg/camvid_maskformer_fapn`` with ``fapn train`` on the same data,
seed, recipe and number of iterations (torchvision ResNet-18 encoder, no ImageNet weights, width 128, 50 queries,
6 decoder layers; see the recipes), sequentially or both at once with ``--parallel``, then prints a markdown
report: the command, wall time per model, val mIoU, pixel accuracy, boundary (trimap) mIoU, per-class IoU, and
the parameters and GMAC of both models (at the recipe's width and at MaskFormer's, 512x512, the paper's
convention, counted on the meta device). Results also go to ``OUTPUT/results.json``. Options and report as every
CamVid pair benchmark (``benchmarks/pairs.py``).

Usage:
    python benchmarks/maskformer_camvid.py --data ../shared/data/camvid-half --iterations 500 --output /tmp/mf
    python benchmarks/maskformer_camvid.py --iterations 3 --eval-period 0 --output /tmp/mf_tiny   # smoke test
"""

from __future__ import annotations

import sys
from typing import Any

from pairs import Model, main

MODELS = {
    "fpn": Model("R18 MaskFormer-FPN", "semseg/camvid_maskformer_fpn"),
    "fapn": Model("R18 MaskFormer-FaPN", "semseg/camvid_maskformer_fapn"),
}
DECODERS = {"fpn": "MaskFormer-FPN", "fapn": "MaskFormer-FaPN"}  # the complexity rows are not all on R18


def complexity(num_classes: int = 11) -> dict[str, dict[str, dict[str, float]]]:
    """Parameters (M) and GMAC at 512x512 of both decoders, at the CamVid recipe's width and at MaskFormer's
    (ResNet-50, width 256, 100 queries, 150 classes: the ADE20K model)."""
    import torch

    from fapn.config import load_config
    from fapn.engine.semseg.config import SegmentationConfig
    from fapn.models import get_model
    from fapn.profiling import profile_model

    table: dict[str, dict[str, dict[str, float]]] = {}
    for key, model in MODELS.items():
        cfg = load_config(model.recipe, SegmentationConfig)
        settings = {
            "recipe": dict(backbone=cfg.model.backbone, num_classes=num_classes, **cfg.model.options),
            "ade20k_r50": dict(backbone="resnet50", num_classes=150),
        }
        for setting, kwargs in settings.items():
            with torch.device("meta"):
                net = get_model(cfg.model.name, **kwargs)
            c = profile_model(net, (1, 3, 512, 512))
            table.setdefault(setting, {})[key] = {
                "params_m": c.params_m,
                "gmacs_paper": c.gmacs_paper,
                "gmacs_full": c.gmacs_full,
            }
    return table


def complexity_report() -> tuple[dict[str, Any], list[str]]:
    """The complexity table for the report, and its values for results.json."""
    table = complexity()
    lines = ["| setting (512x512) | model | params (M) | GMAC (paper) | GMAC (full) |", "|---|---|---|---|---|"]
    for setting, models in table.items():
        for key, c in models.items():
            lines.append(
                f"| {setting} | {DECODERS[key]} | {c['params_m']:.2f} | {c['gmacs_paper']:.2f} | "
                f"{c['gmacs_full']:.2f} |"
            )
    return {"complexity_512": table}, lines


if __name__ == "__main__":
    sys.exit(
        main(__doc__, MODELS, iterations=500, eval_period=0, output="/tmp/maskformer_camvid", extra=complexity_report)
    )
