"""YAML -> dataclass configs: shipped recipes, overrides, _base_ chains and clear errors."""

from __future__ import annotations

import json
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from fapn.config import apply_overrides, config_from_dict, config_to_dict, list_configs, load_config
from fapn.engine.semseg.config import PAPER_SCALES, SegmentationConfig


def semseg_configs() -> list[str]:
    return [name for name in list_configs() if name.startswith("semseg/")]


def test_every_shipped_semseg_config_loads() -> None:
    names = semseg_configs()
    assert {
        "semseg/cityscapes_r18_fapn",
        "semseg/cityscapes_r34_fapn",
        "semseg/coco_stuff_r18_fapn",
        "semseg/coco_stuff_r34_fapn",
        "semseg/camvid_r18_fapn",
        "semseg/camvid_r18_fpn",
    } <= set(names)
    for name in names:
        cfg = load_config(name, SegmentationConfig)
        assert cfg.task == "semseg"
        assert cfg.model.neck in ("fpn", "fpn+fam", "fpn+fam+fsm", "fapn")


@pytest.mark.parametrize("backbone", ["r18", "r34"])
def test_paper_recipes_match_the_supplementary(backbone: str) -> None:
    city = load_config(f"semseg/cityscapes_{backbone}_fapn", SegmentationConfig)
    assert city.data.crop_size == [768, 1536]  # 1536x768 (width x height)
    assert (city.train.batch_size, city.train.iterations) == (16, 40000)
    assert (city.optim.lr, city.optim.schedule, city.optim.power) == (0.01, "poly", 0.9)
    assert (city.optim.momentum, city.optim.weight_decay) == (0.9, 5e-4)
    assert city.data.scales == PAPER_SCALES == [0.75, 1.0, 1.25, 1.5, 1.75, 2.0]
    assert city.model.backbone == {"r18": "resnet18", "r34": "resnet34"}[backbone]
    coco = load_config(f"semseg/coco_stuff_{backbone}_fapn", SegmentationConfig)
    assert coco.data.crop_size == [640, 640]
    assert (coco.train.batch_size, coco.train.iterations, coco.optim.lr) == (16, 20000, 0.01)


def test_overrides_and_ablation_neck_by_one_key() -> None:
    cfg = load_config(
        "semseg/cityscapes_r18_fapn",
        SegmentationConfig,
        ["optim.lr=0.005", "model.neck=fpn+fam", "data.crop_size=[512, 1024]", "train.amp=true"],
    )
    assert cfg.optim.lr == 0.005 and isinstance(cfg.optim.lr, float)
    assert cfg.model.neck == "fpn+fam"
    assert cfg.data.crop_size == [512, 1024]
    assert cfg.train.amp is True
    assert cfg.train.iterations == 40000  # untouched keys keep the file's values


def test_model_variant_of_earlier_releases_is_model_neck(tmp_path, capsys) -> None:
    import re

    from fapn.cli.main import main

    renamed = r"model\.variant is now model\.neck; read as model\.neck"
    old = tmp_path / "old.yaml"  # a recipe written for an earlier release
    old.write_text("_base_: semseg/camvid_r18_fapn\nmodel: {backbone: resnet34, variant: fpn+fam}\n")
    with pytest.warns(FutureWarning, match=renamed):
        cfg = load_config(old, SegmentationConfig)
    assert (cfg.model.neck, cfg.model.backbone) == ("fpn+fam", "resnet34")
    with pytest.warns(FutureWarning, match=renamed):  # the old --set on a recipe that says model.neck
        assert load_config("semseg/camvid_r18_fapn", SegmentationConfig, ["model.variant=fpn"]).model.neck == "fpn"
    with pytest.warns(FutureWarning, match=renamed):  # both spellings, the same value
        assert load_config(old, SegmentationConfig, ["model.variant=fpn", "model.neck=fpn"]).model.neck == "fpn"
    assert config_to_dict(cfg)["model"]["neck"] == "fpn+fam" and "variant" not in config_to_dict(cfg)["model"]
    # both spellings with different values: one error naming both, in a file and in --set
    both = tmp_path / "both.yaml"
    both.write_text("model: {variant: fpn, neck: fapn}\n")
    with pytest.raises(
        ValueError,
        match=re.escape(f"{both}: model.variant='fpn' and model.neck='fapn' differ: model.variant is now model.neck, ")
        + "give model.neck only",
    ):
        load_config(both, SegmentationConfig)
    for overrides in (["model.neck=fapn", "model.variant=fpn"], ["model.variant=fpn", "model.neck=fapn"]):
        with (
            warnings.catch_warnings(),
            pytest.raises(ValueError, match=r"model\.variant=fpn and model\.neck=fapn differ"),
        ):
            warnings.simplefilter("ignore", FutureWarning)
            load_config("semseg/camvid_r18_fapn", SegmentationConfig, overrides)
    assert main(["configs", str(both)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fapn: error: ") and "give model.neck only" in err and err.count("\n") == 1
    # fapn configs prints the recipe with the new key
    with pytest.warns(FutureWarning, match=renamed):
        assert main(["configs", str(old)]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["neck"] == "fpn+fam" and "variant" not in printed["model"]


def test_every_factory_takes_its_neck_from_model_neck() -> None:
    from fapn.engine.semseg.model import model_config_of

    cfg = load_config("semseg/cityscapes_semantic_fpn_r50_fapn", SegmentationConfig)
    assert cfg.model.name == "semantic_fpn" and model_config_of(cfg, 19)["neck"] == "fapn"
    cfg.model.neck = "fpn"
    assert model_config_of(cfg, 19)["neck"] == "fpn"
    # model.options.neck, where earlier releases put a factory's neck: read as model.neck
    cfg.model.neck = "fapn"
    cfg.model.options = {**cfg.model.options, "neck": "fpn"}
    with pytest.warns(FutureWarning, match=r"model\.options\.neck is now model\.neck"):
        config = model_config_of(cfg, 19)
    assert config["neck"] == "fpn" and list(config).count("neck") == 1
    cfg.model.neck = "fpn+fam"
    with pytest.raises(ValueError, match=r"model\.options\.neck='fpn' and model\.neck='fpn\+fam' differ"):
        model_config_of(cfg, 19)
    # a fixed architecture has its neck in its name
    fixed = load_config("semseg/camvid_maskformer_fapn", SegmentationConfig, ["model.neck=fpn"])
    with pytest.raises(ValueError, match=r"model\.neck=fpn: maskformer_fapn takes no neck"):
        model_config_of(fixed, 11)


def test_base_chain_merges_only_the_given_keys() -> None:
    fpn = load_config("semseg/camvid_r18_fpn", SegmentationConfig)
    fapn = load_config("semseg/camvid_r18_fapn", SegmentationConfig)
    assert fpn.model.neck == "fpn" and fapn.model.neck == "fapn"
    assert config_to_dict(fpn.optim) == config_to_dict(fapn.optim)
    assert config_to_dict(fpn.data) == config_to_dict(fapn.data)


def test_unknown_key_names_it_and_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"optim\.learning_rate.*valid keys here.*optim\.lr"):
        load_config("semseg/camvid_r18_fapn", SegmentationConfig, ["optim.learning_rate=0.1"])


def test_wrong_type_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"train\.iterations: expected an integer"):
        load_config("semseg/camvid_r18_fapn", SegmentationConfig, ["train.iterations=lots"])
    with pytest.raises(ValueError, match="not of the form"):
        apply_overrides({}, ["optim.lr"])


def test_missing_config_lists_shipped_ones() -> None:
    with pytest.raises(FileNotFoundError, match="semseg/camvid_r18_fapn"):
        load_config("no/such/config", SegmentationConfig)


def test_generic_loader_with_another_dataclass(tmp_path) -> None:
    @dataclass
    class Solver:
        steps: list[int] = field(default_factory=list)
        base_lr: float = 0.02

    @dataclass
    class Detection:
        task: str = "detection"
        solver: Solver = field(default_factory=Solver)
        name: str | None = None

    globals().update(Solver=Solver, Detection=Detection)  # get_type_hints resolves names in this module
    (tmp_path / "base.yaml").write_text("task: detection\nsolver: {steps: [60000, 80000]}\n")
    (tmp_path / "child.yaml").write_text("_base_: base.yaml\nsolver: {base_lr: 0.01}\n")
    cfg = load_config(tmp_path / "child.yaml", Detection, ["name=retina"])
    assert cfg == Detection("detection", Solver([60000, 80000], 0.01), "retina")
    assert config_from_dict({"solver": {"base_lr": 1}}, Detection).solver.base_lr == 1.0


def test_fapn_configs_lists_recipes_recursively(capsys) -> None:
    from fapn.cli.main import main

    assert main(["configs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    *recipes, bases = lines
    names = [line.split()[0] for line in recipes]
    # a base file, merged into recipes through _base_, is listed apart, not as a recipe
    assert names == [n for n in list_configs() if n != "detection/base_rcnn_1x"]
    assert "semseg/cityscapes_r18_fapn" in names and bases.startswith("bases") and "detection/base_rcnn_1x" in bases
    rows = {line.split()[0]: line for line in recipes}
    assert "resnet50" in rows["semseg/cityscapes_pointrend_r50_fapn"]  # the model, where the builder names it
    assert "neck=fpn" in rows["detection/mask_rcnn_R_50_FPN_1x"] and "neck=fpn" in rows["semseg/camvid_r18_fpn"]
    assert main(["configs", "semseg/camvid_r18_fpn", "--raw"]) == 0
    assert "neck: fpn" in capsys.readouterr().out


@pytest.mark.parametrize("task", ["detection", "instance", "panoptic"])
def test_train_and_eval_hand_detection_recipes_to_the_detection_engine(task, tmp_path, monkeypatch) -> None:
    import sys
    import types

    from fapn.cli.main import main

    calls = []
    fake_train = types.ModuleType("fapn.engine.detection.train")
    fake_train.run_train = lambda config, overrides, output_dir, resume, **kw: (
        calls.append(("train", config, overrides, output_dir, resume))
        or {"iterations": 2, "train_seconds": 1.0, "output_dir": output_dir}
    )
    fake_eval = types.ModuleType("fapn.engine.detection.eval")
    fake_eval.run_eval = lambda config, overrides, weights, **kw: (
        calls.append(("eval", config, overrides, weights)) or {}
    )
    import fapn.engine.detection as detection_package

    monkeypatch.setitem(sys.modules, "fapn.engine.detection.train", fake_train)
    monkeypatch.setitem(sys.modules, "fapn.engine.detection.eval", fake_eval)
    monkeypatch.setattr(detection_package, "train", fake_train, raising=False)
    monkeypatch.setattr(detection_package, "eval", fake_eval, raising=False)
    monkeypatch.chdir(tmp_path)  # eval writes --output r.json into the working folder
    recipe = tmp_path / "det.yaml"
    recipe.write_text(f"task: {task}\nsolver: {{base_lr: 0.02}}\n")
    assert main(["train", str(recipe), "--set", "solver.base_lr=0.01", "--output-dir", "out", "--resume"]) == 0
    assert main(["eval", str(recipe), "--weights", "w.pt", "--output", "r.json"]) == 0
    assert calls == [
        ("train", str(recipe), ["solver.base_lr=0.01"], "out", True),
        ("eval", str(recipe), [], "w.pt"),
    ]


# --- recipes: one level of _base_, values unchanged by the flattening, printed resolved ---------------------

FIXTURE = Path(__file__).parent / "fixtures" / "recipes_resolved.json"


def _config_class(raw: dict):
    from fapn.cli.common import config_class

    return config_class(raw.get("task", "semseg"))


def test_shipped_recipes_use_at_most_one_level_of_base() -> None:
    from fapn.config import CONFIG_ROOT, resolve_config_path

    for name in list_configs():
        path = CONFIG_ROOT / f"{name}.yaml"
        base = yaml.safe_load(path.read_text()).get("_base_")
        if base is not None:
            base_path = resolve_config_path(base, relative_to=path.parent)
            assert "_base_" not in yaml.safe_load(base_path.read_text()), f"{name}: its base {base} has a base too"


def test_flattened_recipes_resolve_to_the_values_they_had_before() -> None:
    # tests/fixtures/recipes_resolved.json: load_yaml() of every shipped recipe at 95b6b31, before the _base_
    # chains were flattened (detection chains went three deep). Recipes added later are not in it. Its semantic
    # recipes say model.variant, the earlier name of model.neck: they also check that the old key still loads.
    from fapn.config import CONFIG_ROOT, load_yaml

    expected = json.loads(FIXTURE.read_text())
    assert len(expected) == 22
    for name, raw in expected.items():
        cls = _config_class(raw)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            before = config_to_dict(config_from_dict(raw, cls))
        after = config_to_dict(load_config(name, cls))
        assert after == before, name
        assert load_yaml(CONFIG_ROOT / f"{name}.yaml").get("task", "semseg") == raw.get("task", "semseg")


def test_fapn_configs_prints_the_resolved_recipe_as_yaml(capsys) -> None:
    from fapn.cli.main import main

    assert main(["configs", "camvid_r18_fpn", "--set", "optim.lr=0.005"]) == 0
    text = capsys.readouterr().out
    printed = yaml.safe_load(text)
    expected = config_to_dict(load_config("semseg/camvid_r18_fpn", SegmentationConfig, ["optim.lr=0.005"]))
    assert printed == expected
    assert printed["model"]["neck"] == "fpn" and printed["data"]["crop_size"] == [176, 240]  # from the base
    assert printed["train"]["log_period"] == SegmentationConfig().train.log_period  # a default, filled in
    assert "_base_:" not in text


def test_config_names_did_you_mean_and_folder_left_out(capsys) -> None:
    from fapn.cli.main import main
    from fapn.config import CONFIG_ROOT, resolve_config_path

    assert resolve_config_path("camvid_r18_fapn") == CONFIG_ROOT / "semseg" / "camvid_r18_fapn.yaml"
    with pytest.raises(FileNotFoundError, match=r"did you mean semseg/camvid_r18_fapn"):
        resolve_config_path("semseg/camvid_r18_fapm")
    assert main(["configs", "semseg/nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fapn: error: config 'semseg/nope'") and "\n" not in err and "Traceback" not in err


def test_ambiguous_short_name_lists_the_candidates(tmp_path, monkeypatch) -> None:
    import fapn.config as config

    for folder in ("semseg", "detection"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "same.yaml").write_text("task: semseg\n")
    monkeypatch.setattr(config, "CONFIG_ROOT", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"ambiguous.*detection/same.*semseg/same"):
        config.resolve_config_path("same")


def test_yaml_that_does_not_parse_names_file_and_line(tmp_path, capsys) -> None:
    from fapn.cli.main import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("task: semseg\nmodel:\n  neck: [fpn\ntrain: {iterations: 3}\n")
    with pytest.raises(ValueError, match=rf"{bad}:4:\d+: not valid YAML"):
        load_config(bad, SegmentationConfig)
    assert main(["configs", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fapn: error: {bad}:4:") and err.count("\n") == 1


def test_set_value_that_does_not_parse_is_one_line(capsys) -> None:
    # `--set data.options={size: [32, 40]}` unquoted reaches fapn as 'data.options={size:' (a YAML error that
    # is not a ValueError: it was a traceback)
    from fapn.cli.main import main

    with pytest.raises(ValueError, match=r"override 'data\.options=\{size: \[32': the value is not valid YAML"):
        load_config("semseg/camvid_r18_fpn", SegmentationConfig, ["data.options={size: [32"])
    assert main(["configs", "camvid_r18_fpn", "--set", "data.options={size:"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fapn: error: ") and "'data.options={size:'" in err and "quoted" in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_class_list_yaml_that_does_not_parse_names_file_and_line(tmp_path) -> None:
    # a folder dataset's classes.yaml is the user's YAML too: yaml's own error was a traceback
    from fapn.data.folder import read_class_list

    bad = tmp_path / "classes.yaml"
    bad.write_text("classes: [road, car\npalette: []\n")
    with pytest.raises(ValueError, match=rf"^{bad}:2:\d+: not valid YAML"):
        read_class_list(bad)


def test_literal_fields_checked_at_load_naming_key_value_and_choices(tmp_path) -> None:
    @dataclass
    class Model:
        neck: typing.Literal["fpn", "fapn"] = "fapn"
        norm: typing.Literal["GN", "BN"] | None = None

    @dataclass
    class Recipe:
        model: Model = field(default_factory=Model)

    globals().update(Model=Model, Recipe=Recipe)
    (tmp_path / "r.yaml").write_text("model: {neck: fapm}\n")
    with pytest.raises(
        ValueError,
        match=r"r\.yaml: model\.neck: 'fapm' is not allowed; expected one of 'fpn', "
        r"'fapn' \(did you mean 'fapn'\?\)",
    ):
        load_config(tmp_path / "r.yaml", Recipe)
    with pytest.raises(ValueError, match=r"model\.norm: 'LN' is not allowed; expected one of 'GN', 'BN' \(or null\)"):
        load_config(tmp_path / "r.yaml", Recipe, ["model.neck=fpn", "model.norm=LN"])
    assert load_config(tmp_path / "r.yaml", Recipe, ["model.neck=fpn", "model.norm=GN"]).model.norm == "GN"
    with pytest.raises(ValueError, match="not allowed"):  # True == 1 in Python, but not in a Literal field
        config_from_dict({"x": True}, _IntChoice)


@dataclass
class _IntChoice:
    x: typing.Literal[1, 2] = 1


def test_detection_literal_checked_before_any_data_is_read(tmp_path, monkeypatch) -> None:
    # DetectionConfig's detector is a Literal: a typo is refused while loading, the datasets are never built.
    from fapn.engine.detection.config import DetectionConfig

    with pytest.raises(ValueError, match=r"model\.detector: 'maskrcn' is not allowed; expected one of .*'maskrcnn'"):
        load_config("detection/mask_rcnn_R_50_FaPN_1x", DetectionConfig, ["model.detector=maskrcn"])


def test_bad_neck_is_refused_before_any_data_is_read(tmp_path, capsys, monkeypatch) -> None:
    # The data root does not exist: if the datasets were built first, that would be the error.
    from fapn.cli.main import main

    monkeypatch.delenv("FAPN_DEBUG", raising=False)
    code = main(
        [
            "train",
            "semseg/camvid_r18_fapn",
            "--set",
            "model.neck=fapm",
            "--set",
            f"data.root={tmp_path / 'missing'}",
            "--output-dir",
            str(tmp_path / "run"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "model.neck: 'fapm' is not allowed; expected one of 'fpn', 'fpn+fam', 'fpn+fam+fsm', 'fapn'" in err
    assert "did you mean 'fapn'" in err and "missing" not in err
