"""Reading a Hugging Face Hub folder (``config.json`` + ``model.safetensors``) or ``hf://owner/name`` into a fapn
checkpoint dict: what :func:`fapn.checkpoint.load_checkpoint` needs of the hub, below :mod:`fapn.hub` (which writes,
uploads and rebuilds models, and describes the layout).

Example:
    >>> is_hub_reference("hf://owner/camvid-fapn")
    True
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "HUB_PREFIX",
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "require_hub",
    "is_hub_reference",
    "read_hub_folder",
    "load_hub_checkpoint",
]

HUB_PREFIX = "hf://"
"""Prefix that marks a Hugging Face Hub repo id where a file path is expected (``--weights hf://owner/name``)."""
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")


def require_hub() -> None:
    """An ``ImportError`` naming the ``hub`` extra when huggingface_hub or safetensors is missing."""
    try:
        import huggingface_hub  # noqa: F401
        import safetensors  # noqa: F401
    except ImportError as err:
        raise ImportError(
            f'hub folders need huggingface_hub and safetensors ({err.name} is missing): pip install "fapn[hub]"'
        ) from None


def is_hub_reference(path: str | os.PathLike[str]) -> bool:
    """True for ``hf://owner/name`` and for a folder holding ``config.json`` or ``model.safetensors``.

    Example:
        >>> is_hub_reference("hf://owner/camvid-fapn"), is_hub_reference("runs/camvid/best.pt")
        (True, False)
    """
    folder = Path(path)
    return str(path).startswith(HUB_PREFIX) or (
        folder.is_dir() and ((folder / CONFIG_NAME).is_file() or (folder / WEIGHTS_NAME).is_file())
    )


def _resolve(reference: str | os.PathLike[str], *, allow_bare_id: bool) -> tuple[Path, Path, str]:
    """``(config path, weights path, label)`` of a hub folder or repo id (files fetched into the HF cache)."""
    text = str(reference)
    repo_id = text[len(HUB_PREFIX) :] if text.startswith(HUB_PREFIX) else None
    if repo_id is None:
        folder = Path(reference)
        if folder.is_dir():
            return folder / CONFIG_NAME, folder / WEIGHTS_NAME, str(folder)
        if not (allow_bare_id and _REPO_ID.match(text)):
            raise FileNotFoundError(f"hub folder not found: {folder}")
        repo_id = text
    if not _REPO_ID.match(repo_id):
        raise ValueError(f"{text}: not a Hugging Face Hub repo id (expected hf://owner/name or hf://owner/name@rev)")
    from huggingface_hub import hf_hub_download

    repo, _, revision = repo_id.partition("@")
    paths = []
    for filename in (CONFIG_NAME, WEIGHTS_NAME):
        try:
            paths.append(Path(hf_hub_download(repo, filename, revision=revision or None, library_name="fapn")))
        except Exception as err:  # offline and not cached, no such repo or file, HTTP errors
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise ValueError(
                f"{HUB_PREFIX}{repo_id}: cannot fetch {filename} ({type(err).__name__}: {first})"
            ) from None
    return paths[0], paths[1], f"{HUB_PREFIX}{repo_id}"


def read_hub_folder(
    reference: str | os.PathLike[str], map_location: str | torch.device, allow_bare_id: bool
) -> tuple[dict[str, Any], Path, Path]:
    """``(checkpoint, config path, weights path)`` of a hub folder or repo id; see :func:`load_hub_checkpoint`."""
    require_hub()
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    config_path, weights_path, _ = _resolve(reference, allow_bare_id=allow_bare_id)
    if not config_path.is_file():
        raise ValueError(f"{config_path}: missing; a hub folder holds {CONFIG_NAME} and {WEIGHTS_NAME}")
    try:
        document = json.loads(config_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{config_path}: not valid JSON ({err})") from None
    config = document.get("model_config") if isinstance(document, dict) else None
    if not isinstance(config, dict) or not isinstance(config.get("name"), str):
        found = sorted(document)[:6] if isinstance(document, dict) else type(document).__name__
        raise ValueError(
            f"{config_path}: not a fapn config, expected {{'model_config': {{'name': <registry name>, ...}}}}, "
            f"found {found} (a folder saved by another library? load it with that library)"
        )
    if not weights_path.is_file():
        raise ValueError(f"{weights_path}: missing; a hub folder holds {CONFIG_NAME} and {WEIGHTS_NAME}")
    try:
        state: dict[str, Tensor] = load_file(str(weights_path), device=str(map_location))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ValueError(f"{weights_path}: not a readable safetensors file ({first})") from None
    if not state:
        raise ValueError(f"{weights_path}: holds no tensors")
    checkpoint: dict[str, Any] = {"model": state, "model_config": config, "weights_file": str(weights_path)}
    if isinstance(document.get("dataset"), dict):
        checkpoint["dataset"] = document["dataset"]
    return checkpoint, config_path, weights_path


def load_hub_checkpoint(
    reference: str | os.PathLike[str],
    map_location: str | torch.device = "cpu",
    *,
    allow_bare_id: bool = False,
) -> dict[str, Any]:
    """A hub folder or repo id as a fapn checkpoint dict ``{"model", "model_config", "dataset", "weights_file"}``
    (``weights_file``: the safetensors file, named by :func:`fapn.checkpoint.build_model_from_checkpoint`'s errors).

    Nothing is unpickled: the config is JSON, the weights are safetensors.

    Args:
        reference: a folder, ``hf://owner/name[@revision]``, or (with ``allow_bare_id``) ``owner/name``.
        map_location: where the tensors go.
        allow_bare_id: take ``owner/name`` that is not a local folder as a repo id.

    Raises:
        FileNotFoundError: no such folder.
        ValueError: a missing or malformed ``config.json`` or ``model.safetensors``, or a repo that cannot be
            fetched; the message names the file.
    """
    return read_hub_folder(reference, map_location, allow_bare_id)[0]
