"""``fapn hub``: a run or checkpoint as a Hugging Face Hub folder (config.json + model.safetensors + model card),
and its upload."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fapn.cli.common import HelpFormatter

__all__ = ["register", "run_export", "run_push"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "hub",
        help="write a run or checkpoint as a Hugging Face Hub folder (safetensors), or upload one",
        description=(
            "'fapn hub export SRC --out FOLDER' writes the model of a 'fapn train' run (its best.pt, else "
            "last.pt) or of a checkpoint (a converted one too: 'fapn convert ... --model-config JSON') as a hub "
            "folder: config.json (registry name, builder arguments, class names, palette, fapn version), "
            "model.safetensors and a README.md model card. Every --weights and fapn.from_pretrained load it; "
            "nothing is unpickled. 'fapn hub push FOLDER OWNER/NAME' uploads a folder (huggingface_hub's login "
            'or --token). Needs the hub extra: pip install "fapn[hub]".'
        ),
    )
    actions = parser.add_subparsers(dest="hub_command", metavar="ACTION", required=True)
    export = actions.add_parser(
        "export",
        help="write a run's best model or a checkpoint as a hub folder",
        formatter_class=HelpFormatter,
    )
    export.add_argument("src", metavar="SRC", help="a 'fapn train' output folder or a checkpoint (.pt)")
    export.add_argument("--out", required=True, help="the hub folder to write")
    export.add_argument("--repo-id", default=None, help="OWNER/NAME the folder will be pushed to (for the card)")
    export.set_defaults(func=run_export)
    push = actions.add_parser("push", help="upload a hub folder to the Hugging Face Hub")
    push.add_argument("folder", metavar="FOLDER", help="a folder written by 'fapn hub export'")
    push.add_argument("repo_id", metavar="OWNER/NAME", help="the repository (created if needed)")
    push.add_argument("--private", action="store_true", help="create the repository private")
    push.add_argument("--token", default=None, help="a Hub token (default: huggingface_hub's login)")
    push.set_defaults(func=run_push)


def _checkpoint_path(src: Path) -> Path:
    if src.is_dir():
        for name in ("best.pt", "last.pt", "model_final.pt"):
            if (src / name).is_file():
                return src / name
        raise FileNotFoundError(f"{src}: no best.pt, last.pt or model_final.pt in the folder")
    return src


def run_export(args: argparse.Namespace) -> int:
    from fapn.checkpoint import load_checkpoint
    from fapn.hub import save_pretrained

    path = _checkpoint_path(Path(args.src))
    checkpoint = load_checkpoint(path)
    metrics = checkpoint.get("metrics") or {}
    recipe_config = checkpoint.get("config") or {}
    recipe = recipe_config.get("name")
    if recipe and recipe_config.get("task") and "/" not in str(recipe):
        recipe = f"{recipe_config['task']}/{recipe}"  # the name 'fapn train' and 'fapn configs' take
    iteration = checkpoint.get("iteration")
    val = dict(metrics.get("val") or {})
    scores = {k: val[k] for k in ("mIoU", "pixel_accuracy", "mean_accuracy") if k in val}
    if isinstance(val.get("boundary"), dict) and "mIoU" in val["boundary"]:
        scores["boundary_mIoU"] = val["boundary"]["mIoU"]
    command = None
    if recipe and scores:
        command = (
            f"fapn train {recipe}"
            + (f" (its validation at iteration {iteration})" if iteration else "")
            + f"; again: fapn eval {recipe} --weights {(args.repo_id and 'hf://' + args.repo_id) or 'FOLDER'}"
        )
    if recipe:
        recipe_text = f"Trained with `fapn train {recipe}`" + (f" for {iteration} iterations." if iteration else ".")
    elif "converted_from" in checkpoint:
        recipe_text = f"Converted from the authors' checkpoint {checkpoint['converted_from']} with `fapn convert`."
    else:
        recipe_text = None
    limits = None
    if recipe and (recipe_config.get("model") or {}).get("weights_backbone") is None:
        limits = (
            f"Trained from random initialisation{f' for {iteration} iterations' if iteration else ''}: "
            "a small-budget model, not a state-of-the-art one."
        )
    folder = save_pretrained(
        checkpoint,
        args.out,
        metrics=scores,
        metrics_command=command,
        recipe=recipe_text,
        limits=limits,
        repo_id=args.repo_id,
    )
    print(f"{path} -> {folder} (config.json, model.safetensors, README.md)")
    return 0


def run_push(args: argparse.Namespace) -> int:
    from fapn.hub import upload_folder

    url = upload_folder(args.folder, args.repo_id, private=args.private or None, token=args.token)
    print(f"{args.folder} -> {url}")
    return 0
