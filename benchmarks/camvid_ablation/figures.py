"""The CamVid study's pictures: validation curves, per-class IoU, and the supplementary's Figure 1 on CamVid."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .plan import FIGURE1_VARIANTS, SHORT, THIN_CLASSES, VARIANTS

__all__ = ["figure1_frames", "draw_pictures"]


def figure1_frames(data: Path, names: list[str], count: int = 4, min_gap: int = 10) -> list[int]:
    """The val frames with the most ground-truth pixels of the thin classes, at least ``min_gap`` frames apart
    (val is a video: neighbours are near-duplicates). Depends on the ground truth only, not on any model."""
    import numpy as np
    from PIL import Image

    classes = json.loads((data / "classes.json").read_text())["classes"]
    thin_ids = [classes.index(c) for c in THIN_CLASSES]
    counts = []
    for name in names:
        label = np.asarray(Image.open(data / "valannot" / f"{name}.png"))
        counts.append(int(np.isin(label, thin_ids).sum()))
    picked: list[int] = []
    for index in sorted(range(len(names)), key=lambda i: (-counts[i], i)):
        if all(abs(index - p) >= min_gap for p in picked):
            picked.append(index)
        if len(picked) == count:
            break
    return sorted(picked)


def draw_pictures(by_variant: dict[str, list[dict[str, Any]]], results: Path, data: Path, images: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.patches import Patch
    from PIL import Image

    images.mkdir(parents=True, exist_ok=True)
    info = json.loads((data / "classes.json").read_text())
    classes, palette = info["classes"], np.array(info["palette"], dtype=np.uint8)
    colour_lut = np.zeros((256, 3), dtype=np.uint8)
    colour_lut[: len(palette)] = palette
    legend = [Patch(facecolor=palette[i] / 255, label=name) for i, name in enumerate(classes)]
    written = []

    # validation mIoU against iterations
    fig, ax = plt.subplots(figsize=(7, 4))
    for variant in VARIANTS:
        runs = [r for r in by_variant[variant] if r["validation_curve"]]
        if not runs:
            continue
        its = [p["iteration"] for p in runs[0]["validation_curve"]]
        curves = np.array([[p["mIoU"] for p in r["validation_curve"]][: len(its)] for r in runs])
        mean = curves.mean(axis=0)
        (line,) = ax.plot(its, mean, marker="o", label=f"{SHORT[variant]} (n={len(runs)})")
        if len(runs) > 1:
            ax.fill_between(its, curves.min(axis=0), curves.max(axis=0), color=line.get_color(), alpha=0.15)
    ax.set_xlabel("iteration (batch 8)")
    ax.set_ylabel("val mIoU (%)")
    ax.set_title("CamVid val mIoU during training (mean over seeds; band: min-max)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(images / "camvid_study_curves.png", dpi=110)
    plt.close(fig)
    written.append("camvid_study_curves.png")

    # per-class IoU, FPN against FaPN
    shown = [v for v in ("fpn", "fapn") if by_variant[v]]
    if shown:
        fig, ax = plt.subplots(figsize=(10, 4))
        x = np.arange(len(classes))
        width = 0.8 / len(shown)
        for k, variant in enumerate(shown):
            values = np.array([[r["per_class_iou"][c] for c in classes] for r in by_variant[variant]])
            offset = (k - (len(shown) - 1) / 2) * width
            errors = values.std(axis=0, ddof=1) if len(values) > 1 else None
            ax.bar(
                x + offset,
                values.mean(axis=0),
                width,
                yerr=errors,
                capsize=2,
                label=f"{SHORT[variant]} (n={len(values)})",
            )
            for row in values:
                ax.plot(x + offset, row, "k.", markersize=3)
        ax.set_xticks(x, classes, rotation=30, ha="right")
        ax.set_ylabel("val IoU (%)")
        ax.set_title("CamVid per-class IoU: mean over seeds, bars = std, dots = seeds")
        ax.grid(axis="y", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(images / "camvid_study_per_class.png", dpi=110)
        plt.close(fig)
        written.append("camvid_study_per_class.png")

    # the supplementary's Figure 1: image | ground truth | FPN | FPN+FAM | FaPN, seed-0 models
    packs = {v: results / f"{v}_seed0_predictions.npz" for v in FIGURE1_VARIANTS}
    if all(p.is_file() for p in packs.values()):
        loaded = {v: np.load(p) for v, p in packs.items()}
        names = [str(n) for n in loaded["fpn"]["names"]]
        frames = figure1_frames(data, names)
        columns = ["image", "ground truth", *[SHORT[v] for v in FIGURE1_VARIANTS]]
        fig, axes = plt.subplots(len(frames), len(columns), figsize=(2.6 * len(columns), 2.0 * len(frames) + 0.8))
        for row, index in enumerate(frames):
            name = names[index]
            panels = [
                np.asarray(Image.open(data / "val" / f"{name}.png").convert("RGB")),
                colour_lut[np.asarray(Image.open(data / "valannot" / f"{name}.png"))],
            ]
            panels += [colour_lut[loaded[v]["labels"][index]] for v in FIGURE1_VARIANTS]
            for col, panel in enumerate(panels):
                ax = axes[row, col]
                ax.imshow(panel)
                ax.set_xticks([])
                ax.set_yticks([])
                if row == 0:
                    ax.set_title(columns[col])
            axes[row, 0].set_ylabel(name, fontsize=7)
        fig.legend(
            handles=[*legend, Patch(facecolor="black", label="void (ignored)")],
            loc="lower center",
            ncol=6,
            fontsize=8,
            frameon=False,
        )
        fig.tight_layout(rect=(0, 0.08, 1, 1))
        fig.savefig(images / "camvid_study_figure1.png", dpi=110)
        # 256 colours, as the README pictures: the photo column makes the full-colour PNG about 580 KB
        quantized = Image.open(images / "camvid_study_figure1.png").convert("RGB").quantize(256)
        quantized.save(images / "camvid_study_figure1.png", optimize=True)
        plt.close(fig)
        written.append("camvid_study_figure1.png")
    return written
