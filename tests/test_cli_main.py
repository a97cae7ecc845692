"""The ``fapn`` entry point: a parser built without torch, and one-line errors instead of tracebacks."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fapn.cli.common import parse_size, require_extra, size_from_values
from fapn.cli.main import main


def test_help_imports_no_torch() -> None:
    # The real check behind "fapn --help answers in well under a second": nothing heavy is imported to build
    # the parser (a timing assert would be flaky on a shared machine). `python -m fapn --help`, run by runpy
    # so that sys.modules can be inspected afterwards; every subcommand's help is formatted too.
    code = (
        "import runpy, sys\n"
        "sys.argv = ['fapn', '--help']\n"
        "try:\n    runpy.run_module('fapn', run_name='__main__', alter_sys=True)\n"
        "except SystemExit as exit:\n    code = exit.code\n"
        "from fapn.cli.main import build_parser\n"
        "for action in build_parser()._subparsers._group_actions:\n"
        "    for sub in action.choices.values(): sub.format_help()\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'torchvision', 'numpy', 'PIL', 'yaml'})\n"
        "print('RESULT', code, 'fapn.cli.predict' in sys.modules, heavy[:5])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "usage: fapn" in result.stdout and "predict" in result.stdout, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "RESULT 0 True []", result.stdout[-500:]


def test_library_errors_become_one_line_and_exit_2(capsys, monkeypatch) -> None:
    monkeypatch.delenv("FAPN_DEBUG", raising=False)
    assert main(["configs", "semseg/nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fapn: error: config 'semseg/nope'") and err.count("\n") == 1


def test_fapn_debug_reraises(monkeypatch) -> None:
    monkeypatch.setenv("FAPN_DEBUG", "1")
    with pytest.raises(FileNotFoundError, match="semseg/nope"):
        main(["configs", "semseg/nope"])


def test_missing_extra_names_the_pip_line(monkeypatch, capsys) -> None:
    monkeypatch.delenv("FAPN_DEBUG", raising=False)
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if the onnx extra were not installed
    with pytest.raises(ModuleNotFoundError, match=r'ONNX export needs onnxscript.*pip install "fapn\[onnx\]"'):
        require_extra(["onnx", "onnxscript"], "ONNX export")

    def command(args: argparse.Namespace) -> int:  # a subcommand whose library code imports the extra
        import onnxscript  # noqa: F401

        return 0

    monkeypatch.setattr("fapn.cli.main.build_parser", lambda: _FixedParser(argparse.Namespace(func=command)))
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err == 'fapn: error: onnxscript is not installed; it comes with the onnx extra: pip install "fapn[onnx]"\n'


class _FixedParser:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args

    def parse_args(self, argv: object) -> argparse.Namespace:
        return self.args


def test_one_size_syntax() -> None:
    assert parse_size("512x1024") == (512, 1024) and parse_size("64") == (64, 64) and parse_size("3X4") == (3, 4)
    assert size_from_values(["768", "1536"]) == (768, 1536) == size_from_values(["768x1536"])
    for bad in ["512x", "0x4", "axb", "1x2x3"]:
        with pytest.raises(argparse.ArgumentTypeError, match="HEIGHTxWIDTH"):
            parse_size(bad)
    with pytest.raises(ValueError, match="--input-size: expected HEIGHTxWIDTH"):
        size_from_values(["1", "2", "3"], "--input-size")


def test_export_onnx_without_the_extra_says_how_to_install_it(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.delenv("FAPN_DEBUG", raising=False)
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if `pip install -e .` without the onnx extra
    args = [
        "export",
        "--model",
        "realtime_fapn",
        "--num-classes",
        "3",
        "--format",
        "onnx",
        "--out",
        str(tmp_path / "m.onnx"),
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err == (
        'fapn: error: fapn export --format onnx needs onnx, which is not installed; pip install "fapn[onnx]"\n'
    )
    assert not (tmp_path / "m.onnx").exists()


def test_profile_input_size_takes_hxw_and_the_old_form(capsys) -> None:
    import json

    assert main(["profile", "--neck", "fpn", "--input-size", "64x96", "--json"]) == 0
    new = json.loads(capsys.readouterr().out)
    assert main(["profile", "--neck", "fpn", "--input-size", "64", "96", "--json"]) == 0
    old = json.loads(capsys.readouterr().out)
    assert new == old and new["input_shape"] == [1, 3, 64, 96]
    assert main(["profile", "--input-size", "16x16"]) == 2
    assert "at least 32x32" in capsys.readouterr().err


def test_the_neck_options_keep_their_earlier_names() -> None:
    # --neck / --necks were --variant / --variants: the old spellings parse to the same destination
    from fapn.cli.main import build_parser

    parser = build_parser()
    for argv, dest, value in (
        (["profile", "--variant", "fpn+fam"], "neck", "fpn+fam"),
        (["export", "--model", "realtime_fapn", "--variant", "fpn+fam", "--out", "m.onnx"], "neck", "fpn+fam"),
        (["benchmark", "--variants", "fpn+fam", "fapn"], "necks", ["fpn+fam", "fapn"]),
    ):
        new = [{"--variant": "--neck", "--variants": "--necks"}.get(a, a) for a in argv]
        old_args, new_args = parser.parse_args(argv), parser.parse_args(new)
        assert getattr(old_args, dest) == getattr(new_args, dest) == value
        assert vars(old_args) == vars(new_args) and "variant" not in vars(new_args)


MODEL_COMMANDS = ("app", "benchmark", "compare", "demo", "eval", "explain", "export", "predict", "train")
"""The subcommands that run a model (``profile`` counts on the meta device, ``score``/``configs``/``convert`` run
none)."""
REPO = Path(__file__).resolve().parents[1]


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    from fapn.cli.main import build_parser

    parser = build_parser()
    return {name: sub for action in parser._subparsers._group_actions for name, sub in action.choices.items()}


def test_every_command_that_runs_a_model_takes_threads_as_the_readme_says() -> None:
    subcommands = _subcommands()
    with_threads = [n for n, sub in subcommands.items() if any("--threads" in a.option_strings for a in sub._actions)]
    assert sorted(with_threads) == list(MODEL_COMMANDS)
    readme = REPO / "README.md"
    if not readme.is_file():
        pytest.skip("no README.md beside the tests (not a checkout)")
    sentence = readme.read_text().split("Every command that runs a model (", 1)[1].split(")", 1)[0]
    assert sorted(re.findall(r"`(\w+)`", sentence)) == list(MODEL_COMMANDS)


def test_export_applies_threads_before_reading_the_checkpoint(tmp_path, monkeypatch, capsys) -> None:
    import torch

    monkeypatch.delenv("FAPN_DEBUG", raising=False)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        args = ["export", "--weights", str(tmp_path / "missing.pt"), "--format", "torchscript", "--threads", "1"]
        assert main([*args, "--out", str(tmp_path / "m.ts")]) == 2
        assert torch.get_num_threads() == 1
        assert f"checkpoint not found: {tmp_path / 'missing.pt'}" in capsys.readouterr().err
    finally:
        torch.set_num_threads(before)


def test_readme_cpu_install_line_and_demo_folder_ignored() -> None:
    readme, gitignore = REPO / "README.md", REPO / ".gitignore"
    if not (readme.is_file() and gitignore.is_file()):
        pytest.skip("not a checkout")
    # a CPU-only machine gets PyTorch's CPU wheels (the default Linux wheel brings 5 GB of CUDA libraries)
    assert "pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu" in readme.read_text()
    # fapn demo's default report folder (hundreds of MB of checkpoints) is never committed by accident
    demo_folder = _subcommands()["demo"].parse_args([]).output
    assert f"{demo_folder}/" in gitignore.read_text().splitlines()


def test_help_says_each_default_once_and_none_for_required_options() -> None:
    from fapn.cli.main import build_parser

    checked = 0
    for group in build_parser()._subparsers._group_actions:
        for command, sub in group.choices.items():
            for action in sub._actions:
                if not action.option_strings or action.help == argparse.SUPPRESS:
                    continue
                text = " ".join(sub._get_formatter()._format_action(action).split())
                where = f"fapn {command} {action.option_strings[0]}: {text}"
                assert action.help, where  # every option explains itself
                assert text.count("default:") <= 1, where  # said once
                assert "(default: None)" not in text and "(default: False)" not in text, where
                if action.required:
                    assert "default" not in text, where
                checked += 1
    assert checked > 80
