"""Hugging Face Hub folders: ``config.json`` + ``model.safetensors`` + a model card, for every registered model.

A hub folder is a checkpoint without training state, in the layout timm, segmentation_models_pytorch and
transformers use:

* ``config.json``: ``{"fapn_version", "model_config": {"name": <registry name>, <builder kwargs>...},
  "dataset": {"name", "class_names", "palette", "ignore_index", "mean", "std"}}`` (``dataset`` where known);
* ``model.safetensors``: the state dict, read without unpickling anything;
* ``README.md``: a model card (huggingface_hub's :class:`~huggingface_hub.ModelCard`).

Every builder registered with :func:`fapn.models.register_model` records its registry name and keyword arguments on
the model it returns (``model.fapn_config``), so :func:`save_pretrained` needs nothing but the model.
:func:`from_pretrained` rebuilds the model through the registry. A repo id (``owner/name`` or ``hf://owner/name``,
optionally ``@revision``) is fetched with :func:`huggingface_hub.hf_hub_download`, which honours ``HF_HUB_OFFLINE=1``
and the cache (``HF_HOME``, ``HF_HUB_CACHE``). :func:`fapn.checkpoint.load_checkpoint` reads hub folders and
``hf://`` ids too, so every ``--weights`` and :meth:`fapn.inference.Segmenter.from_checkpoint` take them.

Needs the ``hub`` extra: ``pip install "fapn[hub]"`` (huggingface_hub, safetensors).

Example:
    >>> import tempfile, torch
    >>> import fapn
    >>> from fapn.models import realtime_fapn
    >>> model = realtime_fapn(backbone="resnet18", num_classes=3).eval()
    >>> folder = fapn.save_pretrained(model, tempfile.mkdtemp() + "/camvid-fapn")
    >>> sorted(p.name for p in folder.iterdir())
    ['README.md', 'config.json', 'model.safetensors']
    >>> loaded = fapn.from_pretrained(folder)
    >>> x = torch.randn(1, 3, 64, 64)
    >>> torch.equal(loaded(x), model(x))
    True
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from fapn.hub_folder import (
    CONFIG_NAME,
    HUB_PREFIX,
    WEIGHTS_NAME,
    is_hub_reference,
    load_hub_checkpoint,
    read_hub_folder,
    require_hub,
)

__all__ = [
    "HUB_PREFIX",
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "save_pretrained",
    "from_pretrained",
    "push_to_hub",
    "upload_folder",
    "load_hub_checkpoint",
    "require_hub",
    "is_hub_reference",
    "model_card",
]

CITATION = """@inproceedings{huang2021fapn,
  title     = {FaPN: Feature-aligned Pyramid Network for Dense Image Prediction},
  author    = {Huang, Shihua and Lu, Zhichao and Cheng, Ran and He, Cheng},
  booktitle = {International Conference on Computer Vision (ICCV)},
  year      = {2021}
}"""


def _jsonable(value: Any, where: str) -> Any:
    """``value`` as JSON data (tuples become lists); a ``ValueError`` naming ``where`` for anything else."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, where) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, f"{where}.{k}") for k, v in value.items()}
    raise ValueError(
        f"cannot write {CONFIG_NAME}: {where} is a {type(value).__name__}, not JSON data; build the model with "
        "names, numbers, lists and dicts as arguments, not objects"
    )


def _model_config_of(model: nn.Module) -> dict[str, Any]:
    config = getattr(model, "fapn_config", None)
    if not isinstance(config, Mapping) or "name" not in config:
        raise ValueError(
            f"the {type(model).__name__} does not say how it was built: build it with a registered builder "
            "(fapn.models.get_model or e.g. fapn.models.realtime_fapn), or pass model_config={'name': ..., ...}"
        )
    return dict(config)


def model_card(
    model_config: Mapping[str, Any],
    dataset: Mapping[str, Any] | None = None,
    *,
    metrics: Mapping[str, Any] | None = None,
    metrics_command: str | None = None,
    recipe: str | None = None,
    limits: str | None = None,
    repo_id: str | None = None,
) -> Any:
    """A :class:`huggingface_hub.ModelCard` for a fapn model: task, recipe, data, metrics, limits, citation, usage.

    Args:
        model_config: registry name and builder kwargs.
        dataset: the checkpoint's ``dataset`` entry (name, class names, ...).
        metrics: scalar results, e.g. ``{"mIoU": 52.7}``; only numbers are listed.
        metrics_command: the command that measured them (shown with them).
        recipe: the training recipe (a ``fapn configs`` name or the command that trained the model).
        limits: what the model is not good for, added to the card's general caveat.
        repo_id: where the card will live, for the loading example (default: a placeholder).
    """
    from huggingface_hub import ModelCard, ModelCardData

    name = str(model_config.get("name", "?"))
    task = "object-detection" if _task_of(name) == "detection" else "image-segmentation"
    data = dict(dataset or {})
    card_data = ModelCardData(
        library_name="fapn",
        pipeline_tag=task,
        tags=["fapn", "feature-aligned-pyramid-network", "pytorch", task],
        datasets=[str(data["name"])] if data.get("name") else None,
    )
    kwargs = {k: v for k, v in model_config.items() if k != "name"}
    where = repo_id or "FOLDER_OR_OWNER/NAME"
    scores = {k: v for k, v in (metrics or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    lines = [
        f"# {name} (fapn)",
        "",
        "A Feature-aligned Pyramid Network (Huang et al., ICCV 2021) from the "
        "[fapn](https://pypi.org/project/fapn/) library.",
        "",
        "## Task",
        f"{'Object detection / instance segmentation' if task == 'object-detection' else 'Semantic segmentation'}; "
        f"registry name `{name}`, built with `{json.dumps(kwargs, sort_keys=True, default=str)}`.",
        "",
        "## Recipe",
        recipe or "Not recorded.",
        "",
        "## Data",
    ]
    if data:
        classes = data.get("class_names") or []
        lines.append(f"{data.get('name', 'unnamed dataset')}, {len(classes)} classes: {', '.join(map(str, classes))}.")
        if data.get("mean") is not None:
            lines.append(f"Input normalisation: mean {data.get('mean')}, std {data.get('std')} (RGB in [0, 1]).")
    else:
        lines.append("Not recorded.")
    lines += ["", "## Metrics"]
    if scores:
        lines += [f"- {k}: {v:.4g}" for k, v in scores.items()]
        if metrics_command:
            lines += ["", f"Measured with `{metrics_command}`."]
    else:
        lines.append("Not measured.")
    lines += [
        "",
        "## Limits",
        "Measured only on the data named above (if any); expect lower accuracy on other cameras, scenes and image "
        "sizes." + (f" {limits}" if limits else ""),
        "",
        "## How to load",
        "```python",
        "import fapn",
        f'model = fapn.from_pretrained("{where}")',
        "```",
        "or on the command line: "
        f"`fapn predict --weights {where if repo_id is None else HUB_PREFIX + where} --out predictions/ images/`.",
        "",
        "## Citation",
        "```bibtex",
        CITATION,
        "```",
        "",
    ]
    return ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n" + "\n".join(lines))


def _task_of(name: str) -> str:
    from fapn.models import list_models

    return "detection" if name in list_models(task="detection") else "semseg"


def save_pretrained(
    model: nn.Module | Mapping[str, Any],
    folder: str | os.PathLike[str],
    *,
    model_config: Mapping[str, Any] | None = None,
    dataset: Mapping[str, Any] | None = None,
    card: Any = None,
    **card_kwargs: Any,
) -> Path:
    """Write ``model`` as a hub folder: ``config.json``, ``model.safetensors`` and a ``README.md`` model card.

    Args:
        model: a model built by a registered builder, or a fapn checkpoint dict (``{"model": state_dict,
            "model_config": ..., "dataset": ...}``, e.g. :func:`fapn.checkpoint.load_checkpoint` of a run's
            ``best.pt``), whose weights are checked against the model it names before anything is written.
        folder: destination, created if needed; existing files of these names are replaced.
        model_config: registry name and builder kwargs (default: what the builder recorded, or the checkpoint's).
        dataset: class names, palette, normalisation (default: the checkpoint's, if any).
        card: a :class:`huggingface_hub.ModelCard` or text to write as ``README.md`` instead of :func:`model_card`'s.
        card_kwargs: passed to :func:`model_card` (``metrics``, ``metrics_command``, ``recipe``, ``limits``,
            ``repo_id``).

    Returns:
        the folder.

    Raises:
        ValueError: no recorded or given ``model_config``, arguments that are not JSON data, or checkpoint
            weights that do not fit the model they name.
    """
    require_hub()
    from safetensors.torch import save_file

    if isinstance(model, nn.Module):
        state = model.state_dict()
        config = dict(model_config) if model_config is not None else _model_config_of(model)
    else:
        from fapn.state_dict import model_state_from

        state = model_state_from(model)
        config = dict(model_config if model_config is not None else model.get("model_config") or {})
        dataset = dataset if dataset is not None else model.get("dataset")
        if "name" not in config:
            raise ValueError("the checkpoint has no model_config['name']: cannot tell which model it holds")
        from fapn.models.registry import rename_legacy_keywords

        config = rename_legacy_keywords(str(config["name"]), config)  # the folder records today's keywords
        _check_fit(config, state)
    config.pop("weights_backbone", None)  # the weights are in the folder
    document: dict[str, Any] = {
        "fapn_version": _version(),
        "model_config": _jsonable(config, "model_config"),
    }
    if dataset:
        document["dataset"] = _jsonable(dict(dataset), "dataset")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # safetensors refuses tensors that share memory; a state dict may hold views of one storage
    tensors = {k: v.detach().to("cpu").clone().contiguous() for k, v in state.items()}
    save_file(tensors, str(folder / WEIGHTS_NAME), metadata={"format": "pt", "fapn_model": str(config["name"])})
    (folder / CONFIG_NAME).write_text(json.dumps(document, indent=2) + "\n")
    if card is None:
        card = model_card(config, dataset, **card_kwargs)
    (folder / "README.md").write_text(str(card))
    return folder


def _check_fit(config: Mapping[str, Any], state: Mapping[str, Tensor]) -> None:
    """Build the model ``config`` names and refuse weights that would not load into it (a folder that cannot be
    loaded is found when it is written, not when someone downloads it)."""
    from fapn.checkpoint import model_builder
    from fapn.state_dict import state_dict_mismatch

    kwargs = {k: v for k, v in config.items() if k not in ("name", "weights_backbone")}
    problem = state_dict_mismatch(model_builder(str(config["name"]))(**kwargs), state)
    if problem is not None:
        raise ValueError(f"the checkpoint's weights do not fit model {config['name']!r} {kwargs}: {problem}")


def _version() -> str:
    from fapn import __version__

    return __version__


def from_pretrained(
    reference: str | os.PathLike[str],
    *,
    map_location: str | torch.device = "cpu",
    **model_kwargs: Any,
) -> nn.Module:
    """The model of a hub folder or Hub repo, rebuilt through the registry, weights loaded, in eval mode.

    Args:
        reference: a folder written by :func:`save_pretrained`, or a repo id ``owner/name`` /
            ``hf://owner/name[@revision]`` (fetched into the Hugging Face cache; offline with ``HF_HUB_OFFLINE=1``).
        map_location: where the weights go.
        model_kwargs: builder kwargs that override the folder's (e.g. ``deform_backend="pytorch"``).

    Raises:
        ValueError: see :func:`load_hub_checkpoint`; a config that names no registered model or arguments the
            builder rejects (naming ``config.json``); weights that do not fit the model -- missing or unexpected
            keys, shape mismatches, e.g. a safetensors file of another library (naming ``model.safetensors``).
    """
    from fapn.checkpoint import model_builder
    from fapn.state_dict import state_dict_mismatch

    checkpoint, config_path, weights_path = read_hub_folder(reference, map_location, allow_bare_id=True)
    config = {**checkpoint["model_config"], **model_kwargs}
    name = config.pop("name")
    config.pop("weights_backbone", None)
    try:
        model = model_builder(name)(**config)
    except (ValueError, TypeError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        if first.startswith("unknown model"):
            first = f"unknown model {name!r} (fapn.models.list_models() names the registered ones)"
        raise ValueError(f"{config_path}: cannot build the model: {first}") from None
    problem = state_dict_mismatch(model, checkpoint["model"])
    if problem is not None:
        raise ValueError(f"{weights_path}: the weights do not fit model {name!r}: {problem}")
    model.load_state_dict(checkpoint["model"], strict=True)
    return model.eval()


def upload_folder(
    folder: str | os.PathLike[str],
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str = "Upload fapn model",
) -> str:
    """Upload a hub folder to the Hugging Face Hub repo ``repo_id`` (created if needed); returns the commit URL.

    Raises:
        ValueError: ``folder`` lacks ``config.json`` or ``model.safetensors``.
    """
    require_hub()
    from huggingface_hub import HfApi

    folder = Path(folder)
    missing = [name for name in (CONFIG_NAME, WEIGHTS_NAME) if not (folder / name).is_file()]
    if missing:
        raise ValueError(f"{folder}: not a hub folder, missing {', '.join(missing)}")
    repo_id = repo_id.removeprefix(HUB_PREFIX)
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    commit = api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=commit_message)
    return str(getattr(commit, "commit_url", commit))


def push_to_hub(
    model: nn.Module | Mapping[str, Any],
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str = "Upload fapn model",
    **save_kwargs: Any,
) -> str:
    """Upload ``model`` as a hub folder to the Hugging Face Hub repo ``repo_id`` (created if needed).

    Args:
        model: as for :func:`save_pretrained`.
        repo_id: ``owner/name`` (an ``hf://`` prefix is accepted).
        private: create the repo private.
        token: a Hub token (default: huggingface_hub's login).
        commit_message: the commit's message.
        save_kwargs: passed to :func:`save_pretrained` (``dataset``, ``metrics``, ...).

    Returns:
        the URL of the commit.
    """
    repo_id = repo_id.removeprefix(HUB_PREFIX)
    with tempfile.TemporaryDirectory() as tmp:
        save_pretrained(model, tmp, **{"repo_id": repo_id, **save_kwargs})
        return upload_folder(tmp, repo_id, private=private, token=token, commit_message=commit_message)
