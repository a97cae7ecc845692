"""Evaluation helpers: test-time augmentation and saved predictions."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import nn

from fapn.engine.semseg.eval import predict_logits, save_prediction


def test_flip_and_scales_average_probabilities() -> None:
    torch.manual_seed(0)
    pointwise = nn.Conv2d(3, 4, 1)  # commutes with flipping: flip TTA must change nothing
    image = torch.randn(2, 3, 40, 56)
    plain = predict_logits(pointwise, image)
    torch.testing.assert_close(plain, pointwise(image).softmax(1))
    torch.testing.assert_close(predict_logits(pointwise, image, flip=True), plain)
    asymmetric = nn.Conv2d(3, 4, 3, padding=1)
    flipped = predict_logits(asymmetric, image, flip=True)
    expected = (asymmetric(image).softmax(1) + asymmetric(image.flip(-1)).flip(-1).softmax(1)) / 2
    torch.testing.assert_close(flipped, expected)
    multi = predict_logits(pointwise, image, scales=(0.75, 1.0, 1.5))
    assert multi.shape == plain.shape
    torch.testing.assert_close(multi.sum(1), torch.ones(2, 40, 56))


def test_cityscapes_predictions_are_saved_as_label_ids(tmp_path) -> None:
    train_ids = np.array([[0, 1, 2, 18]])
    save_prediction(train_ids, tmp_path / "a.png", "cityscapes")
    save_prediction(train_ids, tmp_path / "b.png", "camvid")
    assert np.array(Image.open(tmp_path / "a.png")).tolist() == [[7, 8, 11, 33]]
    assert np.array(Image.open(tmp_path / "b.png")).tolist() == [[0, 1, 2, 18]]
