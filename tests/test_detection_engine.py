"""The detection recipes (YAML -> dataclass) and fapn train / fapn eval for detection tasks, end to end."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("pycocotools")
from fapn.config import list_configs
from fapn.engine.detection import build_datasets, build_model, load_detection_config, run_eval, run_train

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

TINY = [
    "train.iterations=2",
    "train.batch_size=2",
    "train.log_period=1",
    "train.checkpoint_period=0",
    "data.synthetic.num_train=4",
    "data.synthetic.num_val=1",
    "data.synthetic.height=64",
    "data.synthetic.width=80",
    "model.min_size=[64]",
    "model.max_size=80",
    "model.options.rpn_post_nms_top_n_train=20",
    "model.options.box_batch_size_per_image=8",
    "optim.warmup_iters=1",
]


def test_detectron2_schedules():
    names = [n for n in list_configs() if n.startswith("detection/")]
    assert {
        "detection/mask_rcnn_R_50_FaPN_1x",
        "detection/mask_rcnn_R_50_FaPN_3x",
        "detection/panoptic_fpn_R_50_FaPN_1x",
        "detection/faster_rcnn_R_50_FaPN_1x",
    } <= set(names)
    for name in names:
        load_detection_config(name)  # every shipped config is valid
    one = load_detection_config("detection/mask_rcnn_R_50_FaPN_1x")
    three = load_detection_config("detection/mask_rcnn_R_50_FaPN_3x")
    assert (one.train.batch_size, one.optim.lr, one.optim.weight_decay) == (16, 0.02, 1e-4)
    assert (one.train.iterations, one.optim.milestones) == (90000, [60000, 80000])
    assert (three.train.iterations, three.optim.milestones) == (270000, [210000, 250000])
    assert one.model.min_size == [640, 672, 704, 736, 768, 800] and one.model.weights_backbone == "IMAGENET1K_V1"
    fpn = load_detection_config("detection/mask_rcnn_R_50_FPN_1x", ["optim.lr=0.01"])
    assert fpn.model.neck == "fpn" and fpn.optim.lr == 0.01
    pan = load_detection_config("detection/panoptic_fpn_R_50_FaPN_1x")
    assert pan.task == "panoptic" and pan.model.panoptic["semantic_loss_weight"] == 0.5
    with pytest.raises(ValueError, match="unknown config key"):
        load_detection_config("detection/mask_rcnn_R_50_FaPN_1x", ["optim.learning_rate=1"])


def test_panoptic_train_then_eval_reproduces_metrics(tmp_path):
    overrides = [*TINY, f"data.root={tmp_path / 'data'}"]
    config = "detection/synthetic_panoptic_fpn_R_18_FaPN"
    result = run_train(config, overrides, str(tmp_path / "run"), resume=False)
    assert result["output_dir"] == str(tmp_path / "run") and result["iterations"] == 2
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    metrics = saved["metrics"]
    assert metrics["iterations"] == 2 and len(saved["history"]) == 2
    assert {"bbox", "segm", "panoptic"} <= set(metrics) and metrics["panoptic"]["Stuff_n"] == 2
    checkpoint = torch.load(tmp_path / "run" / "model_final.pt", weights_only=True)
    assert checkpoint["model_config"]["detector"] == "panoptic_fpn" and checkpoint["iteration"] == 2
    again = run_eval(config, overrides, str(tmp_path / "run" / "model_final.pt"))
    assert again["panoptic"]["All_pq"] == pytest.approx(metrics["panoptic"]["All_pq"])
    assert again["bbox"]["AP"] == pytest.approx(metrics["bbox"]["AP"], nan_ok=True)


def test_instance_eval_of_a_saved_model(tmp_path):
    overrides = [*TINY, f"data.root={tmp_path / 'data'}"]
    config = "detection/synthetic_mask_rcnn_R_18_FPN"
    cfg = load_detection_config(config, overrides)
    dataset = build_datasets(cfg, ("val",))["val"]
    model, kwargs = build_model(cfg, dataset)
    assert kwargs["neck"] == "fpn" and kwargs["num_classes"] == 4
    torch.save({"model": model.state_dict()}, tmp_path / "w.pth")
    metrics = run_eval(config, overrides, str(tmp_path / "w.pth"))
    assert set(metrics["bbox"]) == {"AP", "AP50", "AP75", "APs", "APm", "APl"} and "segm" in metrics
    with pytest.raises(FileNotFoundError):
        run_eval(config, overrides, str(tmp_path / "missing.pth"))


def test_models_trained_from_imagenet_weights_rebuild_with_frozen_bn_for_eval(tmp_path):
    body = __import__("torchvision").models.resnet18()
    torch.save(body.state_dict(), tmp_path / "r18.pth")
    overrides = [*TINY, f"data.root={tmp_path / 'data'}", f"model.weights_backbone={tmp_path / 'r18.pth'}"]
    cfg = load_detection_config("detection/synthetic_mask_rcnn_R_18_FaPN", overrides)
    dataset = build_datasets(cfg, ("val",))["val"]
    trained, kwargs = build_model(cfg, dataset)
    rebuilt, _ = build_model(cfg, dataset, with_weights=False)
    assert kwargs["frozen_batch_norm"] is True
    rebuilt.load_state_dict(trained.state_dict())  # strict: same norm layers, no num_batches_tracked
    from fapn.checkpoint import build_model_from_checkpoint

    model = build_model_from_checkpoint(
        {"model": trained.state_dict(), "model_config": {"name": "build_detection_model", **kwargs}}
    )
    assert type(model.backbone.body.bn1).__name__ == "FrozenBatchNorm2d"


def test_detection_resume_is_exact_and_follows_the_run_folder_rules(tmp_path, capsys):
    # N iterations straight == N/2, then --resume, then N/2: bitwise, weights and optimiser state
    from fapn.checkpoint import load_checkpoint
    from fapn.engine.detection import train

    overrides = [
        *TINY,
        f"data.root={tmp_path / 'data'}",
        "train.iterations=4",
        "data.synthetic.num_val=1",
        "eval.max_images=1",
    ]
    cfg = load_detection_config("detection/synthetic_mask_rcnn_R_18_FaPN", overrides)
    train(cfg, tmp_path / "straight", progress=False)
    summary = capsys.readouterr().out  # the start-up summary, as semantic segmentation's (test_engine_runs)
    assert "fapn train: synthetic_mask_rcnn_R_18_FaPN (instance)" in summary
    assert "model:   maskrcnn resnet18 + fapn, " in summary and "train:   synthetic train, 4 images" in summary
    assert f"output:  {tmp_path / 'straight'}" in summary and "start:   new run, 4 iterations" in summary
    stopped = train(cfg, tmp_path / "resumed", progress=False, stop_after=2)
    assert stopped["iterations"] == 2 and load_checkpoint(tmp_path / "resumed" / "last.pt")["iteration"] == 2
    with pytest.raises(ValueError, match=r"already holds a run.*--resume.*--overwrite"):
        train(cfg, tmp_path / "resumed", progress=False)
    other = load_detection_config("detection/synthetic_mask_rcnn_R_18_FaPN", [*overrides, "optim.lr=0.01"])
    with pytest.raises(ValueError, match=r"with optim\.lr=0\.01: the run was trained with optim\.lr=0\.02"):
        train(other, tmp_path / "resumed", resume=True, progress=False)
    capsys.readouterr()
    train(cfg, tmp_path / "resumed", resume=True, progress=False)
    assert f"start:   resumed from iteration 2 of 4 ({tmp_path / 'resumed' / 'last.pt'})" in capsys.readouterr().out
    a = load_checkpoint(tmp_path / "straight" / "last.pt")
    b = load_checkpoint(tmp_path / "resumed" / "last.pt")
    assert a["iteration"] == b["iteration"] == 4
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    for key, state in a["optimizer"]["state"].items():
        assert torch.equal(state["momentum_buffer"], b["optimizer"]["state"][key]["momentum_buffer"])
    # one RNG format for every task
    assert set(a["rng"]) >= {"torch", "python"} and set(a["rng"]) == set(b["rng"])
    with pytest.raises(FileNotFoundError, match="no checkpoint to resume from"):
        train(cfg, tmp_path / "fresh", resume=True, progress=False)


def test_eval_without_a_recipe_uses_the_checkpoints_and_writes_json_next_to_the_weights(tmp_path, capsys):
    from fapn.checkpoint import save_checkpoint
    from fapn.cli.main import main
    from fapn.config import config_to_dict

    cfg = load_detection_config("detection/synthetic_mask_rcnn_R_18_FPN", [*TINY, f"data.root={tmp_path / 'data'}"])
    model, _ = build_model(cfg, build_datasets(cfg, ("val",))["val"])
    weights = save_checkpoint({"model": model.state_dict(), "config": config_to_dict(cfg)}, tmp_path / "run" / "w.pt")
    assert main(["eval", "--weights", str(weights), "--no-progress"]) == 0  # no recipe named: the stored one
    metrics = json.loads((tmp_path / "run" / "w_eval.json").read_text())  # written by default, as --help says
    assert metrics["images"] == 1 and "segm" in metrics  # the stored recipe's one validation image
    assert "scores written to" in capsys.readouterr().out
