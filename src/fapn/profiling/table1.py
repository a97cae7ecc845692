"""The supplementary's Table 1 (real-time FaPN ablation, Cityscapes val, ResNet-18) and our reproduction."""

from __future__ import annotations

from dataclasses import dataclass

from fapn.profiling.complexity import Complexity, profile_model

__all__ = ["TABLE1", "Table1Row", "table1_rows", "TABLE1_INPUT_SHAPE", "PARAMS_TOLERANCE_M", "GMACS_TOLERANCE"]

TABLE1_INPUT_SHAPE = (1, 3, 768, 1536)
"""Input of the FLOPs column: one Cityscapes crop of 1536x768 (width x height)."""

PARAMS_TOLERANCE_M = 0.05
GMACS_TOLERANCE = 0.3


@dataclass(frozen=True)
class Table1Row:
    """One row: the neck (a key of :data:`fapn.models.realtime.NECKS`), the paper's figures and ours."""

    neck: str
    paper_name: str
    paper_miou: float
    paper_params_m: float
    paper_gflops: float
    ours: Complexity

    @property
    def params_ok(self) -> bool:
        return abs(self.ours.params_m - self.paper_params_m) <= PARAMS_TOLERANCE_M

    @property
    def macs_ok(self) -> bool:
        return abs(self.ours.gmacs_paper - self.paper_gflops) <= GMACS_TOLERANCE


TABLE1: dict[str, tuple[str, float, float, float]] = {
    # neck: (paper's row name, mIoU, #Params (M), FLOPs (G))
    "fpn": ("FPN", 68.6, 11.4, 44.5),
    "fpn+fam": ("+ FAM", 73.8, 12.2, 51.0),
    "fpn+fam+fsm": ("+ FAM + FSM", 74.2, 12.6, 51.0),
    "fapn": ("+ FAM + FSM + Concat", 75.6, 12.6, 51.8),
}


def table1_rows(num_classes: int = 19, input_shape: tuple[int, ...] = TABLE1_INPUT_SHAPE) -> list[Table1Row]:
    """Profile the four necks of the ablation (ResNet-18, Cityscapes' 19 classes) against the paper's figures."""
    from fapn.models.realtime import realtime_fapn

    rows = []
    for neck, (name, miou, params_m, gflops) in TABLE1.items():
        model = realtime_fapn(backbone="resnet18", num_classes=num_classes, neck=neck)
        rows.append(Table1Row(neck, name, miou, params_m, gflops, profile_model(model, input_shape)))
    return rows
