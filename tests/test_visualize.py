"""Palettes, overlays, grids, offset pictures, and the ``compare`` / ``explain`` commands."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fapn.cli.main import main
from fapn.inference import Segmenter
from fapn.inference.alignment import record_alignment
from fapn.visualize import (
    add_legend,
    arrow_scale,
    color_wheel,
    colorize,
    default_palette,
    draw_arrows,
    features_to_rgb,
    flow_to_color,
    image_grid,
    labelled_figure,
    legend,
    mean_displacement,
    overlay,
    present_classes,
)

_spec = importlib.util.spec_from_file_location("_inference_helpers", Path(__file__).with_name("test_inference.py"))
_helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_helpers)  # reuse make_checkpoint without a shared conftest


def test_palette_and_colorize() -> None:
    palette = default_palette(171)
    assert len(set(palette)) == 171 and (0, 0, 0) not in palette  # distinct, and never the ignore colour
    label = np.array([[0, 1, 2], [255, 1, 7]])
    colors = colorize(label, [[1, 2, 3], [4, 5, 6], [7, 8, 9]], ignore_index=255)
    assert colors[0].tolist() == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert colors[1, 0].tolist() == [0, 0, 0]  # ignored
    assert colors[1, 2].tolist() == list(default_palette(8)[7])  # beyond the palette: default colours
    assert colorize(np.array([[0, 1]]))[0].tolist() == [list(c) for c in default_palette(2)]


def test_one_default_palette_in_the_library() -> None:
    import fapn.data.base
    import fapn.visualize.palette
    from fapn.data import ADE20K_INFO

    assert fapn.visualize.palette.default_palette is fapn.data.base.default_palette
    assert ADE20K_INFO.palette == default_palette(150)  # datasets without colours get the same one
    # the golden-ratio hues, written out again here: hue i * 0.618..., saturation and value cycling
    import colorsys

    r, g, b = colorsys.hsv_to_rgb((5 * 0.618033988749895) % 1.0, 0.65 + 0.35, 0.6 + 0.4 * 2 / 2)
    assert default_palette(6)[5] == (int(r * 255), int(g * 255), int(b * 255))


def test_legend_shows_the_listed_classes_in_their_colours() -> None:
    palette = [[250, 0, 0], [0, 250, 0], [0, 0, 250], [250, 250, 0]]
    names = ["road", "car", "pole", "sign"]
    strip = legend(names, palette, classes=[0, 2, 3], width=300, swatch=12)
    assert strip.shape[1] == 300 and strip.dtype == np.uint8
    for index in range(4):
        count = int(np.all(strip == palette[index], axis=-1).sum())
        assert count == (144 if index != 1 else 0), (names[index], count)  # one 12x12 swatch per listed class
    assert (strip.max(axis=-1) < 128).sum() > 30  # dark text: the names are written (swatches are bright)
    narrow = legend(names, palette, width=90)
    assert narrow.shape[0] > strip.shape[0]  # entries wrap onto more rows
    figure = add_legend(np.zeros((20, 300, 3), np.uint8), names, palette, [1])
    assert figure.shape[0] == 20 + 4 + strip.shape[0] and np.all(figure[:20] == 0)
    assert present_classes(np.array([[0, 3, 255]]), np.array([[9, 1]]), num_classes=4) == [0, 1, 3]


def test_labelled_figure_has_titles_and_a_legend_of_the_classes_shown() -> None:
    palette = [[250, 0, 0], [0, 250, 0], [0, 0, 250]]
    gt = np.array([[0, 0], [2, 255]])
    pred = np.array([[0, 0], [0, 0]])
    panels = [np.full((2, 2, 3), 7, np.uint8), colorize(gt, palette), colorize(pred, palette)]
    figure = labelled_figure(panels, ["image", "ground truth", "model"], ["a", "b", "c"], palette, [gt, pred], scale=8)
    grid = image_grid([np.zeros((16, 16, 3), np.uint8)] * 3, ["x"] * 3)
    assert figure.shape[1] == grid.shape[1] and figure.shape[0] > grid.shape[0]
    assert np.array_equal(figure[20 : 20 + 16, :16], np.full((16, 16, 3), 7, np.uint8))  # panel under its title
    below = figure[grid.shape[0] :]
    assert np.all(below == [250, 0, 0], axis=-1).any() and np.all(below == [0, 0, 250], axis=-1).any()
    assert not np.all(below == [0, 250, 0], axis=-1).any()  # class 1 is in no panel: not in the legend


def test_overlay_blends_only_labelled_pixels() -> None:
    image = np.full((2, 3, 3), 100, np.uint8)
    out = overlay(image, np.array([[0, 255, 1], [1, 1, 255]]), [[200, 0, 0], [0, 200, 0]], alpha=0.25)
    assert out[0, 0].tolist() == [125, 75, 75] and out[0, 1].tolist() == [100, 100, 100]


def test_image_grid_places_cells() -> None:
    a = np.full((4, 6, 3), 10, np.uint8)
    b = np.full((2, 2, 3), 20, np.uint8)
    grid = image_grid([a, b, a], columns=2, padding=1, title_height=0)
    assert grid.shape == (9, 13, 3)
    assert (grid[0:4, 0:6] == 10).all() and (grid[1:3, 9:11] == 20).all() and (grid[5:9, 0:6] == 10).all()


def test_mean_displacement_matches_a_float64_loop() -> None:
    g = torch.Generator().manual_seed(0)
    groups, taps = 2, 9
    offset = torch.randn(1, 2 * groups * taps, 3, 4, generator=g, dtype=torch.float64)
    mask = torch.rand(1, groups * taps, 3, 4, generator=g, dtype=torch.float64)
    got = mean_displacement(offset, mask, groups, taps)
    ref = np.zeros((2, 3, 4))
    weight = np.zeros((3, 4))
    for gi in range(groups):
        for k in range(taps):
            m = mask[0, gi * taps + k].numpy()
            ref[0] += m * offset[0, gi * 2 * taps + 2 * k + 1].numpy()  # dx
            ref[1] += m * offset[0, gi * 2 * taps + 2 * k].numpy()  # dy
            weight += m
    assert np.allclose(got[0].numpy(), ref / weight)
    plain = mean_displacement(offset, None, groups, taps)[0]
    assert torch.allclose(plain[0], offset[0, 1::2].mean(0)) and torch.allclose(plain[1], offset[0, 0::2].mean(0))


def test_flow_colours_agree_with_the_wheel() -> None:
    wheel = color_wheel(101)
    flow = torch.zeros(2, 1, 4)
    flow[:, 0, 0] = torch.tensor([3.0, 0.0])  # right, full length
    flow[:, 0, 1] = torch.tensor([0.0, -3.0])  # up
    flow[:, 0, 2] = torch.tensor([-1.5, 0.0])  # left, half length
    colors = flow_to_color(flow, max_magnitude=3.0)
    assert colors[0, 3].tolist() == [255, 255, 255]  # no motion is white
    assert np.abs(colors[0, 0].astype(int) - wheel[51, 99]).max() <= 12  # rim, right
    assert np.abs(colors[0, 1].astype(int) - wheel[1, 51]).max() <= 12  # rim, top
    assert np.abs(colors[0, 2].astype(int) - wheel[51, 25]).max() <= 12  # half-way, left
    assert (wheel[0, 0] == 255).all()  # outside the disc


def test_arrows_are_drawn_where_the_flow_points() -> None:
    image = np.zeros((32, 32, 3), np.uint8)
    flow = torch.zeros(2, 4, 4)
    flow[0] = 1.0  # 1 feature pixel right = 8 image pixels
    drawn = draw_arrows(image, flow, step=32, color=(255, 0, 0))
    row = drawn[16, :, 0]
    assert row[16] == 255 and row[24] == 255 and row[10] == 0  # shaft from (16,16) to (24,16)


def test_arrows_scale_to_the_largest_offset_by_default() -> None:
    # After short training the offsets are a fraction of a pixel: true-length arrows are dots.
    image = np.zeros((32, 64, 3), np.uint8)
    flow = torch.zeros(2, 4, 8)
    flow[0, :, :4] = 0.01  # 0.08 image px right, left half
    flow[1, :, 4:] = -0.005  # 0.04 image px up, right half
    assert arrow_scale(flow, 32, 64, step=16) == pytest.approx(0.8 * 16 / 0.08)
    true_length = draw_arrows(image, flow, step=16, scale=1.0, color=(255, 0, 0))
    assert (true_length[..., 0] > 0).sum() == 8  # one dot per grid point
    auto = draw_arrows(image, flow, step=16, scale=None, color=(255, 0, 0))
    assert auto[8, 8 : 8 + 12, 0].min() == 255 and auto[8, 8 + 14, 0] == 0  # left half: 12.8 px to the right
    assert auto[8 - 6 : 8, 40, 0].min() == 255  # right half: half as long (6.4 px), upwards
    assert arrow_scale(torch.zeros(2, 4, 8), 32, 64) == 1.0


def test_features_to_rgb_shares_one_projection() -> None:
    a = torch.randn(8, 5, 6)
    b = a.clone()
    b[:, 0, 0] = a[:, 1, 1]
    img_a, img_b = features_to_rgb(a, b, standardize=False)
    assert img_a.shape == (5, 6, 3) and np.array_equal(img_b[0, 0], img_a[1, 1])
    # standardised, a map and a scaled, shifted copy (as after a ReLU's smaller range) look the same
    img_a, img_c = features_to_rgb(a, 0.01 * a + 3.0)
    assert np.abs(img_a.astype(int) - img_c.astype(int)).max() <= 1


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("ckpts")
    return (
        _helpers.make_checkpoint(folder / "fpn.pt", neck="fpn", seed=1),
        _helpers.make_checkpoint(folder / "fapn.pt", neck="fapn", seed=2),
    )


def test_record_alignment_matches_the_model(checkpoints: tuple[Path, Path]) -> None:
    seg = Segmenter.from_checkpoint(checkpoints[1])
    batch = seg.preprocess([_helpers.random_image(64, 96, 7)])
    logits, records = record_alignment(seg.model, batch)
    assert torch.equal(logits, seg.model(batch))
    assert [r.stride for r in records] == [8, 16] and [r.index for r in records] == [0, 1]
    # replaying the module's forward on the recorded inputs gives the recorded output
    fam = seg.model.neck.merges[1]
    assert records[1].offset.shape == (2 * 8 * 9, 4, 6) and float(records[1].offset.abs().max()) > 0.1
    with pytest.raises(ValueError, match="no Feature Alignment Module"):
        record_alignment(Segmenter.from_checkpoint(checkpoints[0]).model, batch)
    assert fam.offset_groups == 8


def test_record_alignment_of_a_bfloat16_model_gives_float32_pictures(checkpoints: tuple[Path, Path]) -> None:
    """`fapn app --precision bf16` draws the offsets of a bfloat16 model: the records are float32, and close."""
    image = _helpers.random_image(64, 96, 8)
    reference = Segmenter.from_checkpoint(checkpoints[1])
    seg = Segmenter.from_checkpoint(checkpoints[1], precision="bf16")
    _, records = record_alignment(seg.model, seg.preprocess([image]))
    _, expected = record_alignment(reference.model, reference.preprocess([image]))
    assert all(r.displacement.dtype == r.mask.dtype == torch.float32 for r in records)
    for r, e in zip(records, expected):
        assert ((r.displacement - e.displacement).norm() / e.displacement.norm()).item() < 0.1


def test_cli_compare_and_explain(
    checkpoints: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    image = _helpers.random_image(64, 96, 8)
    Image.fromarray(image).save(tmp_path / "street.png")
    gt = np.random.default_rng(0).integers(0, 5, (64, 96)).astype(np.uint8)
    gt[:4] = 255
    (tmp_path / "gt").mkdir()
    Image.fromarray(gt).save(tmp_path / "gt" / "street.png")
    out = tmp_path / "out"
    args = ["compare", "--weights", *map(str, checkpoints), "--names", "FPN", "FaPN", "--gt", str(tmp_path / "gt")]
    assert main([*args, str(tmp_path / "street.png"), "--out", str(out), "--width", "96", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    text = captured.out
    assert "warning" not in captured.err  # the ground truth's classes are the models' classes
    fapn_label = Segmenter.from_checkpoint(checkpoints[1]).predict(image)
    valid = gt != 255
    assert f"FaPN: pixel accuracy {100 * (fapn_label[valid] == gt[valid]).mean():.2f}%" in text
    figure = np.asarray(Image.open(out / "street_compare.png"))
    grid_height = 64 + 20  # title band + panel
    assert figure.shape[1] == 4 * 96 + 3 * 4 and figure.shape[0] > grid_height + 4
    fpn_label = Segmenter.from_checkpoint(checkpoints[0]).predict(image)
    shown = set(present_classes(gt, fpn_label, fapn_label, num_classes=5))
    below = figure[grid_height + 4 :]  # the legend: a swatch for each class in the figure, none for the others
    for index, color in enumerate(_helpers.PALETTE):
        assert (np.all(below == color, axis=-1).sum() == 144) == (index in shown), index
    import fapn.visualize.alignment

    drawn = []  # explain's arrows: by default the longest is 0.8 grid steps, however short the offsets

    def spying_draw_arrows(image, flow, step=16, scale=1.0, **kwargs):
        drawn.append((image.shape, flow, step, scale))
        return draw_arrows(image, flow, step=step, scale=scale, **kwargs)

    monkeypatch.setattr(fapn.visualize.alignment, "draw_arrows", spying_draw_arrows)
    assert (
        main(
            [
                "explain",
                "--weights",
                str(checkpoints[1]),
                str(tmp_path / "street.png"),
                "--out",
                str(out),
                "--width",
                "96",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "FAM 0 (stride 8)" in text and "FAM 1 (stride 16)" in text
    assert len(drawn) == 2
    for shape, flow, step, scale in drawn:
        assert scale == pytest.approx(arrow_scale(flow, shape[0], shape[1], step)) and scale != 1.0
    for name in ["offsets", "arrows", "mask", "lateral", "before", "after"]:
        assert (out / f"street_fam_s8_{name}.png").is_file()
    saved = np.load(out / "street_displacements.npz")
    assert saved["stride8"].shape == (2, 8, 12)
    summary = np.asarray(Image.open(out / "street_explain.png"))
    assert summary.shape[0] > 3 * (64 + 20) + 2 * 4 + 4  # three rows of pictures, then the legend
    legend_part = summary[3 * (64 + 20) + 2 * 4 + 4 :]
    assert any(np.all(legend_part == color, axis=-1).sum() == 144 for color in _helpers.PALETTE)
    assert main(["explain", "--weights", str(checkpoints[0]), str(tmp_path / "street.png"), "--out", str(out)]) == 2


def test_cli_compare_warns_about_class_sets_that_differ(
    checkpoints: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a 5-class and a 3-class model, ground truth holding class 6: both said once, on stderr; the figures come
    small = _helpers.make_checkpoint(tmp_path / "small.pt", num_classes=3, neck="fpn", seed=3)
    gt = np.zeros((40, 48), np.uint8)
    gt[:, 24:] = 6
    Image.fromarray(gt).save(tmp_path / "gt.png")
    for stem in ("a", "b"):
        Image.fromarray(_helpers.random_image(40, 48, 9)).save(tmp_path / f"{stem}.png")
    args = ["compare", "--weights", str(checkpoints[0]), str(small), "--names", "FPN", "Small", "--gt"]
    args += [str(tmp_path / "gt.png"), str(tmp_path / "a.png"), str(tmp_path / "b.png")]
    code = main([*args, "--out", str(tmp_path / "out"), "--width", "48"])
    err = capsys.readouterr().err
    assert code == 0 and len(list((tmp_path / "out").glob("*_compare.png"))) == 2
    warnings = [line for line in err.splitlines() if line.startswith("fapn: warning:")]
    assert warnings == [
        "fapn: warning: the checkpoints predict different class sets (FPN: 5 classes, Small: 3 classes); "
        "each panel has the colours and legend of its own model",
        f"fapn: warning: ground truth {tmp_path / 'gt.png'} holds class 6, but FPN predicts 5, Small predicts 3 "
        "classes: was a model trained on another class set (such as 8 classes instead of 11)? The pixels of the "
        "classes it lacks count as wrong in its pixel accuracy",
    ]


def test_cli_compare_of_two_class_sets_gives_distinct_names_and_a_legend_per_panel(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # two checkpoints of the same neck and backbone (so the same default name), 3 and 5 classes
    small = _helpers.make_checkpoint(tmp_path / "small" / "model.pt", num_classes=3, neck="fpn", seed=3)
    large = _helpers.make_checkpoint(tmp_path / "large" / "model.pt", num_classes=5, neck="fpn", seed=4)
    image = _helpers.random_image(40, 48, 9)
    Image.fromarray(image).save(tmp_path / "a.png")
    out = tmp_path / "out"
    args = ["compare", str(tmp_path / "a.png"), "--weights", str(small), str(large), "--out", str(out), "--width", "48"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "(fpn [small/model]: 3 classes, fpn [large/model]: 5 classes)" in err, err
    assert "each panel has the colours and legend of its own model" in err
    large_label = Segmenter.from_checkpoint(large).predict(image)
    extra = [k for k in (3, 4) if (large_label == k).any()]  # classes only the 5-class model has
    assert extra, "the test needs the 5-class model to predict class 3 or 4"
    figure = np.asarray(Image.open(out / "a_compare.png"))
    below = figure[20 + 40 + 4 :]  # under the titled panels: only legends
    for k in extra:  # its classes have a key, in its colours
        assert np.all(below == _helpers.PALETTE[k], axis=-1).sum() == 144, k
