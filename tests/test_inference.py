"""Segmenter, sliding-window inference and ``fapn predict`` against direct model calls."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fapn.checkpoint import save_checkpoint
from fapn.cli.main import main
from fapn.inference import Segmenter, collect_images, sliding_window_logits, window_starts
from fapn.models import realtime_fapn

PALETTE = [[10, 20, 30], [200, 0, 0], [0, 200, 0], [0, 0, 200], [90, 90, 0]]
MEAN, STD = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]


def make_checkpoint(path: Path, num_classes: int = 5, neck: str = "fapn", seed: int = 0) -> Path:
    """A randomly initialised small real-time model with non-zero offsets, saved in the ``fapn train`` format."""
    torch.manual_seed(seed)
    model = realtime_fapn(backbone="resnet18", num_classes=num_classes, neck=neck)
    for module in model.modules():
        if hasattr(module, "offset_mask"):
            torch.nn.init.normal_(module.offset_mask.weight, std=0.02)
            torch.nn.init.normal_(module.offset_mask.bias, std=0.5)
    torch.nn.init.normal_(model.head[3].weight, std=0.3)
    save_checkpoint(
        {
            "model": model.state_dict(),
            "model_config": {
                "name": "realtime_fapn",
                "backbone": "resnet18",
                "num_classes": num_classes,
                "neck": neck,
            },
            "dataset": {
                "name": "synthetic",
                "class_names": [f"c{i}" for i in range(num_classes)],
                "palette": PALETTE[:num_classes],
                "ignore_index": 255,
                "mean": MEAN,
                "std": STD,
            },
            "iteration": 0,
        },
        path,
    )
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.pt")


def random_image(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def reference_labels(checkpoint: Path, image: np.ndarray) -> np.ndarray:
    state = torch.load(checkpoint, weights_only=True)
    model = realtime_fapn(**{k: v for k, v in state["model_config"].items() if k != "name"}).eval()
    model.load_state_dict(state["model"])
    x = torch.from_numpy(image).permute(2, 0, 1)[None].double() / 255
    x = (x - torch.tensor(MEAN, dtype=torch.float64).view(1, 3, 1, 1)) / torch.tensor(STD, dtype=torch.float64).view(
        1, 3, 1, 1
    )
    with torch.no_grad():
        return model.double()(x)[0].argmax(0).numpy()


def test_predict_matches_float64_model_and_carries_dataset(checkpoint: Path) -> None:
    seg = Segmenter.from_checkpoint(checkpoint)
    image = random_image(70, 100, 1)
    label = seg.predict(image)
    assert label.shape == (70, 100) and label.dtype == np.uint8
    ref = reference_labels(checkpoint, image)
    agreement = (label == ref).mean()
    assert agreement > 0.999, agreement
    assert len(np.unique(ref)) > 1  # the test is not trivial
    assert seg.class_names == ["c0", "c1", "c2", "c3", "c4"]
    assert seg.palette.tolist() == PALETTE
    # every input kind gives the same answer
    assert np.array_equal(seg.predict(Image.fromarray(image)), label)
    assert np.array_equal(seg.predict(torch.from_numpy(image).permute(2, 0, 1)), label)


def test_mean_std_on_255_scale_read_as_such(checkpoint: Path) -> None:
    seg = Segmenter.from_checkpoint(checkpoint)
    seg255 = Segmenter(seg.model, 5, [m * 255 for m in MEAN], [s * 255 for s in STD])
    image = random_image(40, 48, 2)
    assert torch.allclose(seg.preprocess([image]), seg255.preprocess([image]), atol=1e-5)


def test_bad_inputs_get_clear_errors(checkpoint: Path) -> None:
    seg = Segmenter.from_checkpoint(checkpoint)
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        seg.predict(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        seg.predict(np.zeros((40, 40, 3), np.float32))
    with pytest.raises(ValueError, match="same size"):
        seg.predict_batch([random_image(40, 40, 0), random_image(48, 40, 0)])


def test_window_starts_cover_every_pixel() -> None:
    for length, window, stride in [(10, 4, 3), (11, 4, 3), (100, 32, 21), (5, 8, 2), (64, 64, 10)]:
        starts = window_starts(length, window, stride)
        covered = np.zeros(length, bool)
        for s in starts:
            assert s >= 0 and s + min(window, length) <= length
            covered[s : s + window] = True
        assert covered.all()


def test_sliding_window_averages_overlaps() -> None:
    # A pointwise model gives the same logits however the image is cut; a position-counting model shows the
    # averaging: each pixel's mean over windows of (1 + window index) is checked against a float64 loop.
    conv = torch.nn.Conv2d(3, 4, 1).double()
    x = torch.randn(2, 3, 45, 70, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(
            sliding_window_logits(conv, x, 4, (32, 32), (20, 25)).double(), conv(x).float().double(), atol=1e-5
        )
    calls: list[int] = []

    def counter(crop: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return torch.full((crop.shape[0], 1, *crop.shape[-2:]), float(len(calls)))

    got = sliding_window_logits(counter, x.float(), 1, (32, 32), (20, 25))
    total = np.zeros((45, 70))
    count = np.zeros((45, 70))
    index = 0
    for top in window_starts(45, 32, 20):
        for left in window_starts(70, 32, 25):
            index += 1
            total[top : top + 32, left : left + 32] += index
            count[top : top + 32, left : left + 32] += 1
    assert np.allclose(got[0, 0].numpy(), total / count)


def test_segmenter_uses_sliding_window_above_size(checkpoint: Path) -> None:
    seg = Segmenter.from_checkpoint(checkpoint, window=(64, 64), window_stride=(32, 32))
    image = random_image(96, 128, 3)
    batch = seg.preprocess([image])
    expected = sliding_window_logits(seg.model, batch, 5, (64, 64), (32, 32))
    assert torch.allclose(seg.logits(image), expected)
    whole = Segmenter.from_checkpoint(checkpoint).logits(image)
    assert not torch.allclose(seg.logits(image), whole, atol=1e-3)


def test_collect_images_files_folders_globs(tmp_path: Path) -> None:
    for name in ["b.png", "a.jpg", "notes.txt"]:
        (tmp_path / name).write_bytes(b"")
    assert collect_images([tmp_path]) == [tmp_path / "a.jpg", tmp_path / "b.png"]
    assert collect_images([str(tmp_path / "*.png"), tmp_path / "b.png"]) == [tmp_path / "b.png"]
    with pytest.raises(FileNotFoundError, match="not found"):
        collect_images([tmp_path / "missing.png"])


def test_cli_predict_writes_label_color_overlay(checkpoint: Path, tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    arrays = {"first": random_image(64, 80, 4), "second": random_image(48, 64, 5), "third": random_image(64, 80, 6)}
    for name, array in arrays.items():
        Image.fromarray(array).save(images / f"{name}.png")
    out = tmp_path / "out"
    assert (
        main(
            [
                "predict",
                "--weights",
                str(checkpoint),
                str(images),
                "--out",
                str(out),
                "--batch-size",
                "2",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    seg = Segmenter.from_checkpoint(checkpoint)
    for name, array in arrays.items():
        label = np.asarray(Image.open(out / f"{name}_label.png"))
        assert np.array_equal(label, seg.predict(array))
        color = np.asarray(Image.open(out / f"{name}_color.png"))
        assert np.array_equal(color, np.asarray(PALETTE, np.uint8)[label])
        overlay = np.asarray(Image.open(out / f"{name}_overlay.png")).astype(int)
        assert np.abs(overlay - (0.5 * array + 0.5 * color[..., :3])).max() <= 1
    assert main(["predict", "--weights", str(checkpoint), str(tmp_path / "nothing.png"), "--out", str(out)]) == 2


def _truncated_png(path: Path, seed: int) -> None:
    Image.fromarray(random_image(40, 48, seed)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_cli_predict_goes_past_an_unreadable_image(checkpoint: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    # a good image, a truncated one, a good one: both good images' outputs are written, the bad file (and only
    # it) is named, a summary is printed and the exit code says something failed.
    import fapn.inference

    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(random_image(40, 48, 1)).save(images / "a_good.png")
    _truncated_png(images / "b_truncated.png", 2)
    Image.fromarray(random_image(40, 48, 3)).save(images / "c_good.png")
    out = tmp_path / "out"
    read_order: list[tuple[str, list[str]]] = []
    real_load = fapn.inference.load_image

    def spying_load(path):  # records which outputs exist when each image is read
        read_order.append((Path(path).name, sorted(p.name for p in out.glob("*_label.png"))))
        return real_load(path)

    monkeypatch.setattr(fapn.inference, "load_image", spying_load)
    code = main(["predict", "--weights", str(checkpoint), str(images), "--out", str(out), "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 1
    for stem in ("a_good", "c_good"):
        for kind in ("label", "color", "overlay"):
            assert (out / f"{stem}_{kind}.png").is_file()
    assert not list(out.glob("b_truncated*"))
    # each image's outputs are on disk before the next image is read
    assert read_order == [
        ("a_good.png", []),
        ("b_truncated.png", ["a_good_label.png"]),
        ("c_good.png", ["a_good_label.png"]),
    ]
    warnings = [line for line in captured.err.splitlines() if "warning" in line]
    assert any(line.startswith(f"fapn: warning: skipped {images / 'b_truncated.png'}: ") for line in warnings)
    assert not any("a_good" in line or "c_good" in line for line in warnings)
    assert "wrote 2 of 3 predictions" in captured.out
    assert warnings[-1] == f"fapn: warning: 1 of 3 images skipped: {images / 'b_truncated.png'}"


def test_cli_predict_writes_a_legend_and_keeps_masks_pixel_aligned(checkpoint: Path, tmp_path: Path) -> None:
    from fapn.visualize import legend

    Image.fromarray(random_image(40, 48, 4)).save(tmp_path / "x.png")
    out = tmp_path / "out"
    assert (
        main(["predict", "--weights", str(checkpoint), str(tmp_path / "x.png"), "--out", str(out), "--threads", "1"])
        == 0
    )
    key = np.asarray(Image.open(out / "legend.png"))
    assert np.array_equal(key, legend([f"c{i}" for i in range(5)], PALETTE, width=480))
    for color in PALETTE:
        assert np.all(key == color, axis=-1).sum() == 12 * 12  # a swatch per class
    assert np.asarray(Image.open(out / "x_color.png")).shape == (40, 48, 3)  # the mask itself is unchanged in size


def test_cli_predict_compare_explain_refuse_cuda_without_a_gpu(
    checkpoint: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("FAPN_DEBUG", raising=False)
    Image.fromarray(random_image(40, 48, 5)).save(tmp_path / "x.png")
    for command in ("predict", "compare", "explain"):
        args = [command, str(tmp_path / "x.png"), "--weights", str(checkpoint), "--out", str(tmp_path / "o")]
        assert main([*args, "--device", "cuda"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("fapn: error: --device cuda: no CUDA GPU is visible") and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()  # refused before anything was written


def test_threads_option_sets_torch_threads(checkpoint: Path, tmp_path: Path) -> None:
    Image.fromarray(random_image(40, 48, 6)).save(tmp_path / "x.png")
    before = torch.get_num_threads()
    try:
        for command in (["predict"], ["compare"], ["explain"]):
            torch.set_num_threads(2)
            assert (
                main(
                    [
                        *command,
                        str(tmp_path / "x.png"),
                        "--weights",
                        str(checkpoint),
                        "--out",
                        str(tmp_path / "o"),
                        "--threads",
                        "1",
                    ]
                )
                == 0
            )
            assert torch.get_num_threads() == 1, command
    finally:
        torch.set_num_threads(before)


def test_inference_does_not_import_the_engine() -> None:
    import subprocess
    import sys

    code = (
        "import sys, fapn.inference, fapn.inference.loading, fapn.inference.alignment, fapn.inference.benchmark\n"
        "print(sorted(m for m in sys.modules if m.startswith('fapn.engine')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.stdout.strip() == "[]", result.stderr[-2000:]


def test_segmenter_runs_channels_last_on_the_cpu_with_the_labels_of_nchw(checkpoint: Path) -> None:
    """The default (fastest) layout changes nothing a user sees: the logits of NCHW to float rounding."""
    fast = Segmenter.from_checkpoint(checkpoint)
    plain = Segmenter.from_checkpoint(checkpoint, channels_last=False)
    conv = next(m for m in fast.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    image = random_image(70, 100, 3)
    torch.testing.assert_close(fast.logits(image), plain.logits(image), rtol=1e-4, atol=1e-4)
    assert (fast.predict(image) == reference_labels(checkpoint, image)).mean() > 0.999


def test_segmenter_bfloat16_is_close_and_fp16_needs_cuda(checkpoint: Path) -> None:
    seg = Segmenter.from_checkpoint(checkpoint, precision="bf16")
    assert next(seg.model.parameters()).dtype == torch.bfloat16
    image = random_image(70, 100, 4)
    logits = seg.logits(image)
    assert logits.dtype == torch.float32
    reference = Segmenter.from_checkpoint(checkpoint).logits(image)
    assert ((logits - reference).norm() / reference.norm()).item() < 0.05  # bfloat16 through ~20 layers
    assert (seg.predict(image) == reference_labels(checkpoint, image)).mean() > 0.9
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        Segmenter.from_checkpoint(checkpoint, precision="fp16")
    with pytest.raises(ValueError, match="unknown precision"):
        Segmenter.from_checkpoint(checkpoint, precision="int4")


def test_cli_predict_precision_bf16(checkpoint: Path, tmp_path: Path) -> None:
    image = tmp_path / "in" / "a.png"
    image.parent.mkdir()
    Image.fromarray(random_image(40, 56, 5)).save(image)
    threads = torch.get_num_threads()
    try:
        assert main(["predict", "--weights", str(checkpoint), "--out", str(tmp_path / "out"), "--precision", "bf16",
                     "--threads", "1", str(image)]) == 0  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    label = np.asarray(Image.open(next((tmp_path / "out").glob("a*label*.png"))))
    assert label.shape == (40, 56)
