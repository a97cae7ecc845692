"""The CamVid study's statistics: results by variant, mean and standard deviation, thin-class IoU, complexity, and
paired differences between variants over seeds with a t interval."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .plan import THIN_CLASSES, VARIANTS

__all__ = [
    "load_results",
    "mean_std",
    "fmt_ms",
    "thin_mean",
    "complexity_rows",
    "paired_differences",
    "paired_interval",
    "fmt_interval",
]


def load_results(results: Path) -> dict[str, list[dict[str, Any]]]:
    """Every run's result file under ``results``, by variant and sorted by seed; a broken file stops the report
    with its name (the report would otherwise silently drop a run)."""
    by_variant: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    for path in sorted(results.glob("*_seed*.json")):
        try:
            result = json.loads(path.read_text())
            by_variant[result["variant"]].append(result)
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise SystemExit(
                f"{path} is not a study result ({type(error).__name__}: {error}); fix or remove it"
            ) from None
    for runs in by_variant.values():
        runs.sort(key=lambda r: r["seed"])
    return by_variant


def mean_std(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else float("nan")
    return mean, std


def fmt_ms(values: list[float]) -> str:
    if not values:
        return "-"
    mean, std = mean_std(values)
    return f"{mean:.1f} ± {std:.1f}" if len(values) > 1 else f"{mean:.1f}"


def thin_mean(result: dict[str, Any], key: str = "per_class_iou") -> float:
    return sum(result[key][c] for c in THIN_CLASSES) / len(THIN_CLASSES)


def complexity_rows(num_classes: int, size: tuple[int, int]) -> dict[str, tuple[float, float]]:
    from fapn.models import realtime_fapn
    from fapn.profiling import profile_model

    rows = {}
    for variant in VARIANTS:
        c = profile_model(realtime_fapn(backbone="resnet18", num_classes=num_classes, neck=variant), (1, 3, *size))
        rows[variant] = (c.params_m, c.gmacs_paper)
    return rows


def paired_differences(by_variant: dict[str, list[dict[str, Any]]], a: str, b: str, key: str) -> list[float]:
    """``b - a`` per seed, for the seeds both variants have (a seed fixes the data order of both)."""
    seeds_a = {r["seed"]: r for r in by_variant[a]}
    return [r[key] - seeds_a[r["seed"]][key] for r in by_variant[b] if r["seed"] in seeds_a]


def paired_interval(differences: list[float], level: float = 0.95) -> tuple[float, float] | None:
    """The ``level`` confidence interval of the mean paired difference (one-sample t on the per-seed
    differences, n - 1 degrees of freedom, scipy's ``ttest_1samp``); None below two seeds. With 2 or 3 seeds the
    t quantile is 12.7 or 4.3, so only a difference large against its spread excludes zero."""
    if len(differences) < 2:
        return None
    from scipy import stats

    interval = stats.ttest_1samp(differences, 0.0).confidence_interval(level)
    return float(interval.low), float(interval.high)


def fmt_interval(differences: list[float]) -> str:
    interval = paired_interval(differences)
    return "-" if interval is None else f"[{interval[0]:+.1f}, {interval[1]:+.1f}]"
