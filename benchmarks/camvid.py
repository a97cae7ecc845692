"""CamVid benchmark: R18 FPN vs FaPN from scratch, same recipe and budget, evaluated on val.

Trains ``semseg/camvid_r18_fpn`` and ``semseg/camvid_r18_fapn`` with ``fapn train`` (sequentially, or both at
once with ``--parallel``), then prints a markdown report: the command, wall time per model, val mIoU, pixel
accuracy, the boundary (trimap) mIoU and per-class IoU. Results also go to ``OUTPUT/results.json``. The options
and the report are those of every CamVid pair benchmark (``benchmarks/pairs.py``). The seeded, multi-run
version of this comparison is ``benchmarks/camvid_study.py``.

Usage:
    python benchmarks/camvid.py --data ../shared/data/camvid-half --iterations 500 --parallel --output /tmp/camvid
"""

from __future__ import annotations

import sys

from pairs import Model, main

MODELS = {"fpn": Model("R18 FPN", "semseg/camvid_r18_fpn"), "fapn": Model("R18 FaPN", "semseg/camvid_r18_fapn")}

if __name__ == "__main__":
    sys.exit(main(__doc__, MODELS, iterations=500, eval_period=250, output="/tmp/camvid"))
