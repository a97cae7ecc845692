"""``fapn app`` without a server: reading uploads, the analysis behind the page, and the command's errors."""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fapn.app import UploadError, analyze, read_image, read_label, score_image, write_examples
from fapn.app.analysis import ground_truth_problem
from fapn.app.inputs import MAX_PIXELS
from fapn.app.page import segment_outputs
from fapn.cli.main import main
from fapn.inference import Segmenter
from fapn.metrics import boundary_band
from fapn.visualize import disagreement_map
from fapn.visualize.disagreement import DISAGREEMENT_COLORS

_spec = importlib.util.spec_from_file_location("_inference_helpers", Path(__file__).with_name("test_inference.py"))
_helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_helpers)  # reuse make_checkpoint without a shared conftest


def encoded(image: Image.Image, format: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **kwargs)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("app_ckpt")
    return (
        _helpers.make_checkpoint(folder / "fpn.pt", neck="fpn", seed=1),
        _helpers.make_checkpoint(folder / "fapn.pt", neck="fapn", seed=2),
    )


@pytest.fixture(scope="module")
def models(checkpoints: tuple[Path, Path]) -> list[tuple[str, Segmenter]]:
    return [("FPN", Segmenter.from_checkpoint(checkpoints[0])), ("FaPN", Segmenter.from_checkpoint(checkpoints[1]))]


# -- uploads -------------------------------------------------------------------------------------------------------


def test_read_image_keeps_rgb_and_converts_grey_rgba_palette_16_bit() -> None:
    rgb = _helpers.random_image(40, 48, 0)
    image, notes, size = read_image(encoded(Image.fromarray(rgb)))
    assert np.array_equal(image, rgb) and notes == [] and size == (40, 48)

    grey = rgb[..., 0]
    image, notes, _ = read_image(encoded(Image.fromarray(grey)))
    assert np.array_equal(image, np.repeat(grey[..., None], 3, axis=2)) and "grey" in notes[0]

    rgba = np.dstack([rgb, np.full((40, 48), 255, np.uint8)])
    rgba[:10, :, 3] = 0  # transparent top rows: drawn over white
    image, notes, _ = read_image(encoded(Image.fromarray(rgba)))
    assert (image[:10] == 255).all() and np.array_equal(image[10:], rgb[10:]) and "transparent" in notes[0]

    deep = (np.arange(40 * 48, dtype=np.uint16).reshape(40, 48) * 34).astype(np.uint16)  # up to 65246
    image, notes, _ = read_image(encoded(Image.fromarray(deep)))
    expected = np.clip(np.rint(deep / 65535 * 255), 0, 255).astype(np.uint8)
    assert np.array_equal(image[..., 0], expected) and any("16-bit" in note for note in notes)

    palette = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    image, _, _ = read_image(encoded(palette))
    assert np.array_equal(image, np.asarray(palette.convert("RGB")))


def test_read_image_downscales_large_images_and_says_so() -> None:
    big = Image.fromarray(np.tile(np.arange(256, dtype=np.uint8), (300, 9))[:, :2000]).convert("RGB")  # 2000x300
    image, notes, size = read_image(encoded(big), max_side=500)
    assert image.shape == (75, 500, 3) and size == (300, 2000)
    assert notes == ["downscaled from 2000x300 to 500x75 (this app caps the longer side at 500 px)"]
    jpeg = Image.fromarray(_helpers.random_image(600, 800, 1))
    image, notes, _ = read_image(encoded(jpeg, "JPEG"), max_side=200)  # decoded at a reduced size, then resized
    assert image.shape == (150, 200, 3) and "800x600 to 200x150" in notes[0]


def test_read_image_applies_the_exif_orientation() -> None:
    rgb = _helpers.random_image(40, 64, 2)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned: display rotated 90 degrees clockwise
    image, _, size = read_image(encoded(Image.fromarray(rgb), exif=exif.tobytes()))
    assert image.shape == (64, 40, 3) and size == (64, 40)
    assert np.array_equal(image, np.rot90(rgb, k=-1))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"this is a text file, not a picture" * 10, "not an image Pillow can read"),
        (encoded(Image.fromarray(_helpers.random_image(64, 64, 3)))[:300], "truncated or damaged"),
        (encoded(Image.new("RGB", (20, 64))), "at least 32 px"),
    ],
)
def test_read_image_refuses_what_it_cannot_use_in_one_line(data: bytes, message: str) -> None:
    with pytest.raises(UploadError, match=message) as info:
        read_image(data)
    assert "\n" not in str(info.value)


def test_read_image_refuses_images_over_the_pixel_limit_before_decoding() -> None:
    side = int(np.sqrt(MAX_PIXELS)) + 100
    huge = encoded(Image.new("1", (side, side)))  # a small file of many pixels
    with pytest.raises(UploadError, match=f"{side}x{side} = .* megapixels"):
        read_image(huge)


def test_read_label_reads_indices_and_refuses_colour_and_wrong_sizes() -> None:
    label = np.random.default_rng(0).integers(0, 5, (30, 40)).astype(np.uint8)
    read, notes = read_label(encoded(Image.fromarray(label)), (30, 40))
    assert np.array_equal(read, label) and read.dtype == np.int64 and notes == []
    read, _ = read_label(encoded(Image.fromarray(np.repeat(label[..., None], 3, axis=2))), (30, 40))
    assert np.array_equal(read, label)  # grey stored as RGB is one channel
    with pytest.raises(UploadError, match="colour picture"):
        read_label(encoded(Image.fromarray(_helpers.random_image(30, 40, 0))), (30, 40))
    with pytest.raises(UploadError, match="ground truth is 40x30 px but the image is 20x10"):
        read_label(encoded(Image.fromarray(label)), (10, 20))
    # the label of an image that was downscaled is downscaled with it, by nearest label
    read, notes = read_label(encoded(Image.fromarray(label)), (15, 20), original_size=(30, 40))
    assert read.shape == (15, 20) and set(np.unique(read)) <= set(np.unique(label)) and "downscaled" in notes[0]
    assert np.array_equal(read, label[1::2, 1::2])  # each output pixel takes the source pixel at its centre
    wide = np.full((30, 40), 300, np.uint16)
    read, _ = read_label(encoded(Image.fromarray(wide)), (30, 40))
    assert (read == 300).all()


# -- analysis ------------------------------------------------------------------------------------------------------


def reference_miou(label: np.ndarray, gt: np.ndarray, num_classes: int, ignore: int) -> float:
    ious = []
    valid = gt != ignore
    for c in range(num_classes):
        p, g = (label == c) & valid, (gt == c) & valid
        union = (p | g).sum()
        if union:
            ious.append((p & g).sum() / union)
    return 100 * float(np.mean(ious))


def test_score_image_is_miou_and_boundary_miou_by_hand() -> None:
    rng = np.random.default_rng(1)
    gt = np.repeat(rng.integers(0, 4, (6, 8)), 4, axis=0).repeat(4, axis=1)  # blocks: boundaries between them
    gt[:3] = 255
    label = np.where(rng.random(gt.shape) < 0.8, gt % 255, rng.integers(0, 4, gt.shape))
    miou, boundary = score_image(label, gt, 4, 255, boundary_width=1)
    assert miou == pytest.approx(reference_miou(label, gt, 4, 255))
    band = boundary_band(torch.from_numpy(gt), 1).numpy()
    assert boundary == pytest.approx(reference_miou(label, np.where(band, gt, 255), 4, 255))


def test_ground_truth_problem_names_unknown_classes_and_empty_labels() -> None:
    assert "values 7, 9 that are neither" in ground_truth_problem(np.array([[0, 9, 7]]), 5, 255, "FPN")
    assert "labels no pixel" in ground_truth_problem(np.full((2, 2), 11), 11, 11, "FPN")
    assert ground_truth_problem(np.array([[0, 4, 255]]), 5, 255, "FPN") is None


def test_disagreement_map_colours_who_is_right() -> None:
    image = np.full((4, 4, 3), 128, np.uint8)
    a = np.zeros((4, 4), np.int64)
    b = a.copy()
    b[0, 0] = 1  # only a right
    b[1, 1] = 2  # gt is 2 here: only b right
    a[2, 2], b[2, 2] = 3, 4  # both wrong
    gt = np.zeros((4, 4), np.int64)
    gt[1, 1] = 2
    picture, fraction = disagreement_map(image, [a, b], ["FPN", "FaPN"], gt, alpha=1.0)
    assert fraction == 3 / 16
    assert tuple(picture[0, 0]) == DISAGREEMENT_COLORS["only {first} right"]
    assert tuple(picture[1, 1]) == DISAGREEMENT_COLORS["only {second} right"]
    assert tuple(picture[2, 2]) == DISAGREEMENT_COLORS["both wrong"]
    agree = picture[3, 3]
    assert agree[0] == agree[1] == agree[2]  # grey where they agree
    plain, _ = disagreement_map(image, [a, b], alpha=1.0)  # without ground truth: one colour
    assert tuple(plain[0, 0]) == tuple(plain[1, 1]) == DISAGREEMENT_COLORS["models disagree"]
    with pytest.raises(ValueError, match="at least two"):
        disagreement_map(image, [a])


def test_analyze_runs_every_model_scores_and_draws_the_alignment(models: list[tuple[str, Segmenter]]) -> None:
    image = _helpers.random_image(64, 96, 4)
    gt = np.random.default_rng(2).integers(0, 5, (64, 96))
    result = analyze(models, image, gt, panel_width=96)
    for (name, segmenter), model_result in zip(models, result.results):
        assert model_result.name == name
        assert np.array_equal(model_result.label, segmenter.predict(image))
        expected = score_image(model_result.label, gt, 5, 255)
        assert (model_result.miou, model_result.boundary_miou) == pytest.approx(expected)
        assert model_result.latency_ms > 0
    fpn, fapn = result.results
    assert fpn.alignment is None and fpn.alignment_summary == []
    assert fapn.alignment is not None and len(fapn.alignment_summary) == 2  # two FAMs: strides 8 and 16
    assert fapn.alignment.shape[0] == 2 * (64 + 20) + 4  # one row per FAM
    assert result.comparison.shape[1] == 4 * 96 + 3 * 4  # image | ground truth | FPN | FaPN
    differ = np.mean(fpn.label != fapn.label)
    assert result.disagreement_fraction == pytest.approx(differ) and result.disagreement is not None
    assert "| FPN |" in result.table() and "mIoU" in result.table() and result.notes == []
    alone = analyze(models[:1], image)
    assert alone.disagreement is None and "mIoU" not in alone.table()


def test_analyze_notes_a_ground_truth_it_cannot_score(models: list[tuple[str, Segmenter]]) -> None:
    gt = np.full((64, 96), 7)  # the models have 5 classes
    result = analyze(models, _helpers.random_image(64, 96, 5), gt, alignment=False)
    assert all(r.miou is None for r in result.results)
    assert len(result.notes) == 2 and "values 7" in result.notes[0]


def test_segment_outputs_writes_label_pngs_and_turns_bad_ground_truth_into_notes(
    models: list[tuple[str, Segmenter]], tmp_path: Path
) -> None:
    image = _helpers.random_image(64, 96, 6)
    comparison, files, disagreement, table, gallery, summary, notes = segment_outputs(
        models, encoded(Image.fromarray(image)), encoded(Image.fromarray(image)), tmp_path, panel_width=96
    )
    assert "ground truth not used: the ground truth is a colour picture" in notes
    assert [Path(f).name for f in files] == ["0_FPN_labels.png", "1_FaPN_labels.png"]
    for (_, segmenter), file in zip(models, files):
        assert np.array_equal(np.asarray(Image.open(file)), segmenter.predict(image))
    assert comparison.ndim == 3 and disagreement.ndim == 3 and len(gallery) == 1 and "FAM 0" in summary
    assert "mIoU" not in table
    with pytest.raises(UploadError, match="not an image"):
        segment_outputs(models, b"GIF89a but not really", None, tmp_path)
    assert segment_outputs(models, None, None, tmp_path)[-1].startswith("Upload an image")


def test_examples_are_synthetic_scenes_and_camvid_when_present(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("FAPN_DATA", raising=False)
    pairs = write_examples(tmp_path / "a", synthetic=2, size=(64, 96))
    assert len(pairs) == 2
    image, label = (np.asarray(Image.open(p)) for p in pairs[1])
    assert image.shape == (64, 96, 3) and label.shape == (64, 96) and label.max() < 8
    root = tmp_path / "data" / "camvid-half"
    for split in ("val", "valannot"):
        (root / split).mkdir(parents=True)
    Image.fromarray(_helpers.random_image(40, 48, 7)).save(root / "val" / "f1.png")
    Image.fromarray(np.zeros((40, 48), np.uint8)).save(root / "valannot" / "f1.png")
    monkeypatch.setenv("FAPN_DATA", str(tmp_path / "data"))
    pairs = write_examples(tmp_path / "b", synthetic=1, size=(64, 96))
    assert [p.name for p in pairs[-1]] == ["camvid_f1.png", "camvid_f1_labels.png"]


# -- the command ---------------------------------------------------------------------------------------------------


def test_app_command_errors_are_one_line(checkpoints: tuple[Path, Path], tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # no fapn_demo/ here
    assert main(["app"]) == 2
    assert "no fapn demo checkpoints in fapn_demo/" in capsys.readouterr().err
    assert main(["app", "--weights", str(checkpoints[0]), "--names", "a", "b"]) == 2
    assert "1 checkpoints but 2 --names" in capsys.readouterr().err
    assert main(["app", "--weights", str(checkpoints[0]), "--port", "70000"]) == 2
    assert "--port must lie in 0..65535" in capsys.readouterr().err
    import fapn.cli.common

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "gradio" else real_find_spec(name, *a)
    )
    assert main(["app", "--weights", str(checkpoints[0])]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and 'pip install "fapn[app]"' in err and fapn.cli.common.EXTRAS["gradio"] == "app"


def test_importing_the_app_package_does_not_import_gradio() -> None:
    import subprocess
    import sys

    code = "import sys, fapn.app, fapn.app.page, fapn.cli.app; print('gradio' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


def test_app_page_has_the_segment_endpoint(models: list[tuple[str, Segmenter]], tmp_path: Path) -> None:
    pytest.importorskip("gradio")
    from fapn.app.page import build_app

    app = build_app(models, tmp_path, examples=write_examples(tmp_path / "examples", synthetic=1, size=(64, 96)))
    names = [fn.api_name for fn in app.fns.values()]
    assert "segment" in names
