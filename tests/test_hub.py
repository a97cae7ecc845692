"""Hub folders (``fapn.hub``): a ``fapn train`` run as a folder, loaded by ``fapn.from_pretrained`` and by every
``--weights``; repo ids through a populated Hugging Face cache offline; uploads; one-line errors for bad folders.

The round trip of every registered builder is in tests/test_models_contract.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("huggingface_hub", reason='needs the hub extra (pip install "fapn[hub]")')
pytest.importorskip("safetensors", reason='needs the hub extra (pip install "fapn[hub]")')

from safetensors.torch import save_file

import fapn
from fapn.checkpoint import TRAINING_STATE_KEYS, build_model_from_checkpoint, load_checkpoint
from fapn.cli.main import main
from fapn.config import load_config
from fapn.engine.semseg.config import SegmentationConfig
from fapn.engine.semseg.train import train
from fapn.inference import Segmenter
from fapn.models import realtime_fapn
from test_engine_runs import TINY as ENGINE_TINY

RECIPE = "semseg/synthetic_r18_fapn"
# the engine tests' tiny semantic run, shorter, evaluated at its end and with the recipe's own neck (FaPN)
TINY = [*ENGINE_TINY, "train.iterations=2", "train.eval_period=2", "model.neck=fapn"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-iteration ``fapn train`` run of the real-time FaPN on synthetic scenes."""
    out = tmp_path_factory.mktemp("run")
    train(load_config(RECIPE, SegmentationConfig, TINY), output_dir=out, progress=False)
    return out


@pytest.fixture(scope="module")
def folder(run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hub") / "synthetic-fapn"
    assert main(["hub", "export", str(run), "--out", str(out), "--repo-id", "owner/synthetic-fapn"]) == 0
    return out


def _images(tmp_path: Path) -> Path:
    images = tmp_path / "images"
    images.mkdir()
    for i, (h, w) in enumerate([(48, 64), (37, 53)]):
        pixels = np.random.default_rng(i).integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / f"im{i}.png")
    return images


def test_run_exports_to_a_folder_that_loads_with_identical_outputs(run: Path, folder: Path) -> None:
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert config["fapn_version"] == fapn.__version__
    assert config["model_config"]["name"] == "realtime_fapn" and config["model_config"]["neck"] == "fapn"
    assert config["dataset"]["class_names"] and config["dataset"]["palette"]
    with open(folder / "model.safetensors", "rb") as handle:  # safetensors: a JSON header, no pickle
        assert b"pickle" not in handle.read(8 + 1000)
    best = run / ("best.pt" if (run / "best.pt").is_file() else "last.pt")
    reference = build_model_from_checkpoint(load_checkpoint(best)).eval()
    loaded = fapn.from_pretrained(folder)
    x = torch.randn(2, 3, 48, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), reference(x), rtol=0, atol=0)
    card = (folder / "README.md").read_text()
    for text in (
        "library_name: fapn",
        "## Metrics",
        "fapn train semseg/synthetic_r18_fapn",
        "huang2021fapn",
        "random init",
    ):
        assert text in card, text
    assert 'fapn.from_pretrained("owner/synthetic-fapn")' in card and "--weights hf://owner/synthetic-fapn" in card


def test_predict_with_a_folder_equals_predict_with_the_checkpoint(run: Path, folder: Path, tmp_path: Path) -> None:
    images = _images(tmp_path)
    best = run / ("best.pt" if (run / "best.pt").is_file() else "last.pt")
    for name, weights in (("pt", best), ("hub", folder)):
        args = ["predict", "--weights", str(weights), str(images), "--out", str(tmp_path / name), "--threads", "1"]
        assert main(args) == 0
    written = sorted(p.relative_to(tmp_path / "pt") for p in (tmp_path / "pt").rglob("*.png"))
    assert written
    for relative in written:
        a = np.asarray(Image.open(tmp_path / "pt" / relative))
        b = np.asarray(Image.open(tmp_path / "hub" / relative))
        assert np.array_equal(a, b), relative
    # the Python API: same classes, palette, normalisation
    from_folder, from_file = Segmenter.from_checkpoint(folder), Segmenter.from_checkpoint(best)
    assert from_folder.class_names == from_file.class_names
    assert np.array_equal(from_folder.palette, from_file.palette)


def test_a_hub_folder_cannot_be_resumed(folder: Path) -> None:
    with pytest.raises(ValueError, match="hub folder: it holds weights but no training state"):
        load_checkpoint(folder, require=TRAINING_STATE_KEYS)


def _cache(tmp_path: Path, folder: Path, repo: str = "fapn-test/tiny") -> Path:
    """A Hugging Face cache holding ``repo`` at revision main, laid out as huggingface_hub writes it."""
    cache = tmp_path / "hf-cache"
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = cache / f"models--{repo.replace('/', '--')}"
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)
    shutil.copytree(folder, repo_dir / "snapshots" / commit)
    return cache


@pytest.mark.slow  # three fresh interpreters
def test_repo_ids_load_from_a_populated_cache_offline(folder: Path, tmp_path: Path) -> None:
    cache = _cache(tmp_path, folder)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.save(x, tmp_path / "x.pt")
    with torch.no_grad():
        torch.save(fapn.from_pretrained(folder)(x), tmp_path / "expected.pt")
    script = f"""
import torch, fapn
from fapn.checkpoint import load_checkpoint
x = torch.load({str(tmp_path / "x.pt")!r})
expected = torch.load({str(tmp_path / "expected.pt")!r})
with torch.no_grad():
    for ref in ("hf://fapn-test/tiny", "fapn-test/tiny", "hf://fapn-test/tiny@main"):
        assert torch.equal(fapn.from_pretrained(ref)(x), expected), ref
assert load_checkpoint("hf://fapn-test/tiny")["dataset"]["class_names"]
try:
    fapn.from_pretrained("hf://fapn-test/absent")
except ValueError as err:
    print("ERROR", err)
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    error = done.stdout.strip().splitlines()[-1]
    assert error.startswith("ERROR hf://fapn-test/absent: cannot fetch config.json (")
    # and the CLI, offline: fapn predict --weights hf://...
    images = _images(tmp_path)
    command = [sys.executable, "-m", "fapn", "predict", "--weights", "hf://fapn-test/tiny", str(images)]
    done = subprocess.run(
        [*command, "--out", str(tmp_path / "out"), "--threads", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert list((tmp_path / "out").rglob("*.png"))
    # fapn eval of a repo id writes its scores into the working folder (not into a folder named "hf:")
    data = ["--set", "data.options={size: [32, 40], num_images: 4}", "--set", "data.val_options={num_images: 1}"]
    command = [sys.executable, "-m", "fapn", "eval", RECIPE, "--weights", "hf://fapn-test/tiny@main", *data]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "mIoU" in json.loads((tmp_path / "tiny_main_eval.json").read_text()) and not (tmp_path / "hf:").exists()


def test_push_to_hub_uploads_the_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The two HTTP calls (create the repo, upload the folder) are replaced; what would be uploaded is kept."""
    from huggingface_hub import HfApi

    calls: list[tuple[str, dict]] = []
    uploads = iter(range(1, 100))

    def create_repo(self: HfApi, repo_id: str, **kwargs: object) -> str:
        calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self: HfApi, *, repo_id: str, folder_path: str, **kwargs: object) -> str:
        calls.append(("upload_folder", {"repo_id": repo_id, **kwargs}))
        shutil.copytree(folder_path, tmp_path / f"uploaded{next(uploads)}")
        return f"https://huggingface.co/{repo_id}/commit/abc"

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    model = realtime_fapn(num_classes=3, neck="fpn").eval()
    url = fapn.push_to_hub(model, "hf://owner/tiny", private=True, dataset={"name": "toy", "class_names": list("abc")})
    assert url == "https://huggingface.co/owner/tiny/commit/abc"
    assert [c[0] for c in calls] == ["create_repo", "upload_folder"]
    assert calls[0][1]["repo_id"] == "owner/tiny" and calls[0][1]["private"] is True
    uploaded = tmp_path / "uploaded1"
    assert sorted(p.name for p in uploaded.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(fapn.from_pretrained(uploaded)(x), model(x))
    # fapn hub push: a folder that is not one is refused before any call
    calls.clear()
    assert main(["hub", "push", str(tmp_path), "owner/tiny"]) == 2
    assert calls == []
    assert main(["hub", "push", str(uploaded), "owner/tiny"]) == 0
    assert [c[0] for c in calls] == ["create_repo", "upload_folder"]


# --- bad folders: one line naming the file -------------------------------------------------------------------


@pytest.fixture()
def good(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    return fapn.save_pretrained(realtime_fapn(num_classes=3, neck="fpn"), tmp_path / "good")


def _one_line_error(folder: Path, match: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises((ValueError, FileNotFoundError), match=match) as info:
        fapn.from_pretrained(folder)
    assert "\n" not in str(info.value)
    # the CLI: rc 2 and one line, through the same checkpoint loader as every --weights
    capsys.readouterr()
    assert main(["export", "--weights", str(folder), "--format", "torchscript", "--out", str(folder / "m.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fapn: error: ") and "\n" not in err, err


def test_bad_config(good: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = good / "config.json"
    config.write_text("{not json")
    _one_line_error(good, r"config\.json: not valid JSON", capsys)
    config.write_text(json.dumps({"_model_class": "FPN", "encoder_name": "resnet34"}))  # another library's
    _one_line_error(good, r"config\.json: not a fapn config.*another library", capsys)
    config.write_text(json.dumps({"model_config": {"name": "unet"}}))
    with pytest.raises(ValueError, match=r"config\.json: cannot build the model: unknown model 'unet'"):
        fapn.from_pretrained(good)
    config.write_text(json.dumps({"model_config": {"name": "realtime_fapn", "colour": 3}}))
    with pytest.raises(ValueError, match=r"config\.json: cannot build the model: .*'colour'"):
        fapn.from_pretrained(good)
    config.unlink()
    _one_line_error(good, r"config\.json: missing", capsys)


def test_bad_weights(good: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from safetensors.torch import load_file

    weights = good / "model.safetensors"
    state = load_file(str(weights))
    save_file({k: v for k, v in state.items() if k != "head.3.bias"}, str(weights))
    _one_line_error(good, r"model\.safetensors: the weights do not fit model 'realtime_fapn': 1 missing key", capsys)
    save_file({**state, "head.3.weight": torch.zeros(7, 64, 1, 1)}, str(weights))
    _one_line_error(good, r"model\.safetensors: .*1 shape mismatch.*head\.3\.weight is \[7, 64, 1, 1\]", capsys)
    save_file({"encoder.conv1.weight": torch.zeros(64, 3, 7, 7)}, str(weights))  # another model's file
    _one_line_error(
        good, r"model\.safetensors: .*missing key.*1 unexpected key\(s\) \(encoder\.conv1\.weight\)", capsys
    )
    weights.write_bytes(b"\x00" * 64)
    _one_line_error(good, r"model\.safetensors: not a readable safetensors file", capsys)
    weights.unlink()
    _one_line_error(good, r"model\.safetensors: missing", capsys)


def test_saving_needs_a_recorded_or_given_config(tmp_path: Path) -> None:
    from fapn.models.backbones import build_backbone
    from fapn.models.realtime import RealtimeFaPN, realtime_neck  # noqa: F401  (RealtimeFaPN built by hand)

    body = build_backbone("resnet18")
    hand_built = RealtimeFaPN(body, body.channels, 3)
    with pytest.raises(ValueError, match="does not say how it was built"):
        fapn.save_pretrained(hand_built, tmp_path / "a")
    folder = fapn.save_pretrained(hand_built, tmp_path / "b", model_config={"name": "realtime_fapn", "num_classes": 3})
    assert type(fapn.from_pretrained(folder)) is RealtimeFaPN
    odd = realtime_fapn(num_classes=3)
    odd.fapn_config = {"name": "realtime_fapn", "num_classes": 3, "weights_backbone": None, "x": object()}
    with pytest.raises(ValueError, match=r"cannot write config\.json: model_config\.x is a object"):
        fapn.save_pretrained(odd, tmp_path / "c")
    with pytest.raises(FileNotFoundError, match="hub folder not found"):
        fapn.from_pretrained(tmp_path / "nowhere" / "x")


def test_convert_writes_hub_folders_only_of_whole_models(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from test_convert import authors_neck_state

    source = tmp_path / "model_final.pth"
    torch.save({"model": authors_neck_state()}, source)
    out = tmp_path / "folder"
    assert main(["convert", str(source), "--out", str(out), "--hub"]) == 2
    assert "--hub writes a whole model: it needs --model-config" in capsys.readouterr().err
    config = json.dumps({"name": "detectron2_fapn_rcnn", "depth": 50, "num_classes": 3})
    # the authors' neck alone does not make the Mask R-CNN it names: refused before anything is written
    assert main(["convert", str(source), "--out", str(out), "--hub", "--model-config", config]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith("fapn: error: the checkpoint's weights do not fit model 'detectron2_fapn_rcnn'")
        and "missing key" in err
    )
    assert not out.exists()


def test_eval_scores_a_folder_as_its_checkpoint(run: Path, folder: Path, tmp_path: Path) -> None:
    best = run / ("best.pt" if (run / "best.pt").is_file() else "last.pt")
    data = ["--set", "data.options={size: [32, 40], num_images: 4}", "--set", "data.val_options={num_images: 2}"]
    scores = []
    for name, weights in (("pt", best), ("hub", folder)):
        output = tmp_path / f"{name}.json"
        assert main(["eval", RECIPE, "--weights", str(weights), *data, "--output", str(output), "--threads", "1"]) == 0
        scores.append(json.loads(output.read_text()))
    assert scores[0]["mIoU"] == scores[1]["mIoU"] and scores[0]["per_class_iou"] == scores[1]["per_class_iou"]


def test_a_folder_of_an_earlier_release_with_variant_loads(good: Path) -> None:
    # config.json as an earlier release wrote it: the real-time network's neck under its old keyword, variant
    document = json.loads((good / "config.json").read_text())
    document["model_config"]["variant"] = document["model_config"].pop("neck")
    (good / "config.json").write_text(json.dumps(document))
    torch.manual_seed(0)
    reference = realtime_fapn(num_classes=3, neck="fpn").eval()
    with pytest.warns(FutureWarning, match=r"realtime_fapn\(\): the keyword variant= is now neck="):
        model = fapn.from_pretrained(good).eval()
    assert model.neck_name == "fpn" and model.fapn_config["neck"] == "fpn"
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))
    # a hub folder written now from such a checkpoint records today's keyword
    old = {
        "model": reference.state_dict(),
        "model_config": {"name": "realtime_fapn", "num_classes": 3, "variant": "fpn"},
    }
    with pytest.warns(FutureWarning, match="variant= is now neck="):
        folder = fapn.save_pretrained(old, good.parent / "resaved")
    assert json.loads((folder / "config.json").read_text())["model_config"] == {
        "name": "realtime_fapn",
        "num_classes": 3,
        "neck": "fpn",
    }
