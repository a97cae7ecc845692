"""What several ``fapn`` subcommands share: size parsing, the ``--device``/``--threads`` options, recipe tasks,
warnings, and the hint for a missing optional extra. No subcommand imports another; they all import this.

Importing this module imports neither torch nor the rest of fapn: ``fapn --help`` builds every parser [ours].

Example:
    >>> parse_size("512x1024"), parse_size("64")
    ((512, 1024), (64, 64))
    >>> size_from_values(["768", "1536"]), size_from_values(["768x1536"])
    ((768, 1536), (768, 1536))
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "parse_size",
    "size_from_values",
    "add_device_argument",
    "add_threads_argument",
    "add_overrides_argument",
    "setup_runtime",
    "run_without_grad",
    "DETECTION_TASKS",
    "config_task",
    "TaskEngine",
    "TASK_ENGINES",
    "task_engine",
    "config_class",
    "EXTRAS",
    "require_extra",
    "missing_extra_hint",
    "warn",
    "THREADS_HELP",
    "HelpFormatter",
]

THREADS_HELP = (
    "torch CPU threads (default: torch's, one per core); on a machine busy with other work 1 is often much faster "
    "-- the library does not guess how busy the machine is"
)

DETECTION_TASKS = ("detection", "instance", "panoptic")
"""Recipe ``task`` values that go to the detection engine (``semseg`` goes to the segmentation engine)."""

EXTRAS: dict[str, str] = {
    "onnx": "onnx",
    "onnxruntime": "onnx",
    "onnxscript": "onnx",
    "pycocotools": "eval",
    "cityscapesscripts": "eval",
    "tensorboard": "logging",
    "gradio": "app",
    "huggingface_hub": "hub",
    "safetensors": "hub",
    "segmentation_models_pytorch": "smp",
}
"""Top-level module -> the ``pip install "fapn[EXTRA]"`` extra that provides it (see ``pyproject.toml``)."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's formatter that shows defaults, where a default says something: ``(default: X)`` is added to an
    optional option whose help does not state its default itself, and not for a required option or a default of
    ``None`` / ``False`` / ``[]`` (nothing given: the help says what happens)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if action.required or "default" in text or default is None or default is False or default == []:
            return text
        return super()._get_help_string(action)


def parse_size(text: str) -> tuple[int, int]:
    """``"512x1024"`` (height x width) or ``"512"`` (square) as ``(height, width)``; the one size syntax of
    every command.

    Raises:
        argparse.ArgumentTypeError: anything else (argparse turns it into a usage error naming the option).
    """
    try:
        parts = [int(p) for p in str(text).lower().split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH such as 512x1024, got {text!r}") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH with positive sides such as 512x1024, got {text!r}")
    return parts[0], parts[1]


def size_from_values(values: Sequence[str] | str, option: str = "size") -> tuple[int, int]:
    """A size given as one ``HxW`` value, or as the older two values ``H W`` (options declared with
    ``nargs="+"`` that used to take ``nargs=2``).

    Raises:
        ValueError: neither form, naming ``option``.
    """
    if isinstance(values, str):
        values = [values]
    values = [str(v) for v in values]
    try:
        if len(values) == 1:
            return parse_size(values[0])
        if len(values) == 2 and all(v.strip().isdigit() for v in values):
            return parse_size(f"{values[0]}x{values[1]}")
    except argparse.ArgumentTypeError as err:
        raise ValueError(f"{option}: {err}") from None
    raise ValueError(
        f"{option}: expected HEIGHTxWIDTH such as 768x1536 (or the older HEIGHT WIDTH), got {' '.join(values)!r}"
    )


def add_device_argument(parser: argparse.ArgumentParser, default: str | None = "auto") -> None:
    """``--device auto|cpu|cuda|cuda:N``, checked by :func:`fapn.runtime.resolve_device` when the command runs."""
    parser.add_argument(
        "--device", default=default, help="auto (a CUDA GPU when torch sees one, else the CPU), cpu, cuda or cuda:N"
    )


def add_precision_argument(parser: argparse.ArgumentParser) -> None:
    """``--precision fp32|bf16|fp16``: the dtype a model runs in (:func:`fapn.runtime.prepare_inference`)."""
    parser.add_argument(
        "--precision",
        choices=("fp32", "bf16", "fp16"),
        default="fp32",
        help="compute dtype: fp32 (exact); bf16 (CPU or CUDA, about 1.5x faster on a CPU with AVX512-BF16, CamVid "
        "mIoU change in docs/benchmarks.md); fp16 (CUDA only). The layout is chosen by itself: channels last on "
        "the CPU, the same labels as NCHW, faster",
    )


def add_threads_argument(parser: argparse.ArgumentParser, default: int | None = None, help: str = THREADS_HELP) -> None:
    """``--threads N`` (default: torch's, one thread per core); ``help`` for a command that says more."""
    parser.add_argument("--threads", type=int, default=default, metavar="N", help=help)


def add_overrides_argument(parser: argparse.ArgumentParser, help: str) -> None:
    """``--set KEY=VALUE`` (repeatable), collected in ``args.overrides`` for :func:`fapn.config.load_config`."""
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help)


def setup_runtime(args: argparse.Namespace) -> Any:
    """Apply ``args.threads`` (when the command has it) and return ``args.device`` as a checked
    :class:`torch.device`.

    Raises:
        ValueError: a device torch does not have (``--device cuda`` without a GPU), or a bad thread count.
    """
    from fapn.runtime import resolve_device, set_threads

    set_threads(getattr(args, "threads", None))
    return resolve_device(getattr(args, "device", "auto"), "--device")


def run_without_grad(command: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """``command(args)`` under ``torch.no_grad()``, for the commands that run a model."""
    import torch

    # no_grad as a context (not torch.set_grad_enabled): the caller's grad mode survives an in-process call
    with torch.no_grad():
        return command(args)


def config_task(config: str) -> str:
    """The top-level ``task`` key of a recipe (``semseg`` when absent)."""
    from fapn.config import load_yaml

    return str(load_yaml(config).get("task", "semseg"))


@dataclass(frozen=True)
class TaskEngine:
    """Where a recipe task's recipe class, trainer and evaluator live, as ``module:name`` (imported on use, so that
    building the parser imports no torch). The trainer and the evaluator return results; the commands print them."""

    config: str
    train: str
    evaluate: str

    def load(self, part: Literal["config", "train", "evaluate"]) -> Any:
        """The recipe class, ``run_train`` or ``run_eval`` of this task, imported now."""
        module, _, name = getattr(self, part).partition(":")
        return getattr(importlib.import_module(module), name)


_SEMSEG = TaskEngine(
    "fapn.engine.semseg.config:SegmentationConfig",
    "fapn.engine.semseg.train:run_train",
    "fapn.engine.semseg.eval:run_eval",
)
_DETECTION = TaskEngine(
    "fapn.engine.detection.config:DetectionConfig",
    "fapn.engine.detection.train:run_train",
    "fapn.engine.detection.eval:run_eval",
)
TASK_ENGINES: dict[str, TaskEngine] = {"semseg": _SEMSEG, **dict.fromkeys(DETECTION_TASKS, _DETECTION)}
"""Recipe ``task`` -> its engine: the one table ``fapn train``, ``fapn eval`` and ``fapn configs`` dispatch on."""


def task_engine(task: str) -> TaskEngine:
    """The engine of recipe task ``task``.

    Raises:
        ValueError: an unknown task.
    """
    if task not in TASK_ENGINES:
        raise ValueError(f"recipe task {task!r} is unknown; expected one of {', '.join(TASK_ENGINES)}")
    return TASK_ENGINES[task]


def config_class(task: str) -> type:
    """The dataclass that holds a recipe of ``task``.

    Raises:
        ValueError: an unknown task.
    """
    cls: type = task_engine(task).load("config")
    return cls


def missing_extra_hint(err: ModuleNotFoundError) -> str | None:
    """``'... pip install "fapn[onnx]"'`` when ``err`` is a module of an optional extra, else ``None``."""
    root = (err.name or "").split(".")[0]
    if root not in EXTRAS:
        return None
    return f'{root} is not installed; it comes with the {EXTRAS[root]} extra: pip install "fapn[{EXTRAS[root]}]"'


def require_extra(modules: Sequence[str], what: str) -> None:
    """Check that the optional ``modules`` are importable before starting ``what``.

    Raises:
        ModuleNotFoundError: the first one missing, with the ``pip install "fapn[...]"`` line in its message.
    """
    import importlib.util

    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            extra = EXTRAS.get(module.split(".")[0])
            hint = f'; pip install "fapn[{extra}]"' if extra else ""
            raise ModuleNotFoundError(f"{what} needs {module}, which is not installed{hint}", name=module)


def warn(message: str) -> None:
    """``fapn: warning: MESSAGE`` on stderr."""
    print(f"fapn: warning: {message}", file=sys.stderr, flush=True)
