"""CamVid benchmark: PointRend semantic segmentation on FaPN against PointRend on FPN, from scratch, short CPU budget.

The paper's Cityscapes model is PointRend's semantic head on the FaPN neck (``semseg/cityscapes_pointrend_r50_fapn``,
a GPU recipe). This runs the same model family on CamVid at CPU scale: ``fapn train`` with the recipe
``semseg/camvid_r18_fapn`` (CamVid at 240x180, batch 8, poly schedule, same data order and seed for both) and
``model.name=pointrend_semantic`` on a ResNet-18 from scratch, PointRend's authors' point settings (2048 training
points per image chosen by uncertainty, inference by 2 subdivision steps of 8192 points), only the neck differing
(``model.options.neck=fapn`` or ``fpn``). Prints a markdown report (the command, wall time, val mIoU, pixel
accuracy, boundary mIoU, per-class IoU) and writes ``OUTPUT/results.json``. The two models train one after the
other, or both at once with ``--parallel``; options and report as every CamVid pair benchmark
(``benchmarks/pairs.py``).

Usage:
    python benchmarks/pointrend_camvid.py --data ../shared/data/camvid-half --iterations 300 --output /tmp/pr_camvid
    python benchmarks/pointrend_camvid.py --iterations 2 --eval-period 0 --output /tmp/pr_camvid_tiny   # smoke test
"""

from __future__ import annotations

import sys

from pairs import Model, main

RECIPE = "semseg/camvid_r18_fapn"
POINTREND = "{neck: %s, train_num_points: 2048, subdivision_steps: 2, subdivision_num_points: 8192}"


def pointrend(neck: str, label: str) -> Model:
    options = ("model.name=pointrend_semantic", "model.backbone=resnet18", f"model.options={POINTREND % neck}")
    return Model(label, RECIPE, options)


MODELS = {"fpn": pointrend("fpn", "R18 PointRend-FPN"), "fapn": pointrend("fapn", "R18 PointRend-FaPN")}

if __name__ == "__main__":
    sys.exit(main(__doc__, MODELS, iterations=300, eval_period=0, output="/tmp/pointrend_camvid"))
