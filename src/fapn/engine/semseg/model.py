"""The model a semantic segmentation recipe describes: its registry name and builder arguments (the checkpoint's
``model_config``), the model built through the registry, and frozen batch norm."""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from fapn.checkpoint import model_builder
from fapn.config import config_from_dict, config_to_dict, read_renamed_key
from fapn.engine.semseg.config import ModelConfig, SegmentationConfig

__all__ = ["check_config", "set_train_mode", "model_config_of", "build_segmentation_model", "freeze_batch_norm"]


# Builder arguments the engine fills from the recipe when the builder's signature has them.
_OPTIONAL_ARGUMENTS = ("backbone", "neck", "ignore_index")


def _registry_name(cfg: SegmentationConfig) -> str:
    """The registry name of the recipe's model."""
    from fapn.models import list_models

    name = cfg.model.name
    if name not in list_models():
        raise ValueError(
            f"unknown model.name {name!r}; registered semantic segmentation models: {list_models(task='semseg')}"
        )
    return name


def model_config_of(cfg: SegmentationConfig, num_classes: int, ignore_index: int = 255) -> dict[str, Any]:
    """The checkpoint's ``model_config``: the registry name and the builder's keyword arguments (the recipe's
    ``num_classes``, ``backbone`` / ``neck`` / ``ignore_index`` where the builder takes them, and
    ``model.options``).

    ``model.options.neck``, the place of a factory's neck in earlier releases, still works (a ``FutureWarning``
    says it is now ``model.neck``).

    Raises:
        ValueError: an unknown model name, an option the builder does not take, or ``model.options.neck`` and
            ``model.neck`` that differ.
    """
    name = _registry_name(cfg)
    parameters = inspect.signature(model_builder(name)).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    defaults = ModelConfig()
    options = dict(cfg.model.options)
    neck = cfg.model.neck
    if "neck" in options and "neck" in parameters:
        neck = read_renamed_key("model.options.neck", "model.neck", options.pop("neck"), neck, unset=defaults.neck)
    recipe = {"backbone": cfg.model.backbone, "neck": neck, "ignore_index": ignore_index}
    config: dict[str, Any] = {"name": name}
    for key in _OPTIONAL_ARGUMENTS:
        if key in parameters:
            config[key] = recipe[key]
        elif key != "ignore_index" and recipe[key] != getattr(defaults, key):
            # a value the builder cannot take would otherwise be dropped and the run train something else
            raise ValueError(
                f"model.{key}={recipe[key]}: {name} takes no {key} (its encoder and neck are fixed by its name); "
                f"pick a model.name that does (fapn.models.list_models(task='semseg'))"
            )
    config["num_classes"] = num_classes
    if "frozen_batch_norm" in parameters and "frozen_batch_norm" not in cfg.model.options:
        # recorded, as the detection engine does: the checkpoint then rebuilds with the same norm layers
        # although it is rebuilt without loading ImageNet weights again
        config["frozen_batch_norm"] = cfg.model.weights_backbone is not None
    for key, value in options.items():
        if key not in parameters and not takes_any:
            raise ValueError(
                f"model.options.{key}: {name} takes no argument {key!r}; its arguments: {sorted(parameters)}"
            )
        config[key] = value
    if "backbone" in config:  # keep the key order of earlier checkpoints: name, backbone, ...
        config = {"name": name, "backbone": config.pop("backbone"), **{k: v for k, v in config.items() if k != "name"}}
    return config


def build_segmentation_model(cfg: SegmentationConfig, num_classes: int, ignore_index: int = 255) -> nn.Module:
    """The model the recipe describes, through the registry, with ImageNet backbone weights when asked."""
    config = model_config_of(cfg, num_classes, ignore_index)
    return model_builder(config.pop("name"))(**config, weights_backbone=cfg.model.weights_backbone)


def check_config(cfg: SegmentationConfig) -> None:
    """Every value against its type (``Literal`` choices too, for configs built in Python rather than loaded) and
    the model name against the registry: before any data is read."""
    try:
        config_from_dict(config_to_dict(cfg), SegmentationConfig)
    except ValueError as err:
        raise ValueError(f"recipe {cfg.name!r}: {err}") from None
    _registry_name(cfg)


def freeze_batch_norm(model: nn.Module) -> list[nn.Module]:
    """Stop every batch norm of ``model`` from learning (no gradient) and return them; callers put them in
    eval mode after each ``model.train()`` (see :func:`set_train_mode`). The state dict keeps its layout."""
    frozen: list[nn.Module] = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for module in frozen:
        for parameter in module.parameters():
            parameter.requires_grad_(False)
    return frozen


def set_train_mode(model: nn.Module, frozen: list[nn.Module]) -> None:
    model.train()
    for module in frozen:
        module.eval()
