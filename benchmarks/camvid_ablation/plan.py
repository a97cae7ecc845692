"""The CamVid study's plan: the four Table 1 variants, the seeds, labels, and where each run's result lives."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "REPO",
    "RECIPE",
    "VARIANTS",
    "LABELS",
    "SHORT",
    "PAPER_MIOU",
    "PLAN",
    "THIN_CLASSES",
    "FIGURE1_VARIANTS",
    "MARK_BEGIN",
    "MARK_END",
    "README_BEGIN",
    "README_END",
    "Run",
    "result_path",
    "missing_runs",
    "RESULTS_DIR",
]


REPO = Path(__file__).resolve().parents[2]


RECIPE = "semseg/camvid_r18_study"


VARIANTS = ("fpn", "fpn+fam", "fpn+fam+fsm", "fapn")


LABELS = {"fpn": "FPN", "fpn+fam": "+ FAM", "fpn+fam+fsm": "+ FAM + FSM", "fapn": "+ FAM + FSM + Concat (FaPN)"}


SHORT = {"fpn": "FPN", "fpn+fam": "FPN+FAM", "fpn+fam+fsm": "FPN+FAM+FSM", "fapn": "FaPN"}


PAPER_MIOU = {"fpn": 68.6, "fpn+fam": 73.8, "fpn+fam+fsm": 74.2, "fapn": 75.6}  # supplementary Table 1, Cityscapes


# The study plan, in the order runs are started: seed 0 of every variant first (Figure 1 needs them), then the
# seeds that make FPN vs FaPN a measured difference, then the middle rows' second seed.
PLAN: tuple[tuple[str, int], ...] = (
    ("fpn", 0),
    ("fapn", 0),
    ("fpn+fam", 0),
    ("fpn+fam+fsm", 0),
    ("fpn", 1),
    ("fapn", 1),
    ("fpn", 2),
    ("fapn", 2),
    ("fpn+fam", 1),
    ("fpn+fam+fsm", 1),
)


THIN_CLASSES = ("Pole", "SignSymbol", "Pedestrian", "Bicyclist")


FIGURE1_VARIANTS = ("fpn", "fpn+fam", "fapn")  # the supplementary's Figure 1 columns


MARK_BEGIN = "<!-- camvid-study:begin -->"


MARK_END = "<!-- camvid-study:end -->"


README_BEGIN = "<!-- camvid-study-summary:begin -->"


README_END = "<!-- camvid-study-summary:end -->"


@dataclass(frozen=True)
class Run:
    variant: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.variant}_seed{self.seed}"

    @classmethod
    def parse(cls, text: str) -> Run:
        variant, _, seed = text.rpartition(":")
        if variant not in VARIANTS or not seed.isdigit():
            raise argparse.ArgumentTypeError(f"expected VARIANT:SEED with VARIANT in {VARIANTS}, got {text!r}")
        return cls(variant, int(seed))


def result_path(results: Path, run: Run) -> Path:
    return results / f"{run.name}.json"


def missing_runs(results: Path) -> list[Run]:
    return [Run(v, s) for v, s in PLAN if not result_path(results, Run(v, s)).is_file()]


RESULTS_DIR = REPO / "benchmarks" / "results" / "camvid"
