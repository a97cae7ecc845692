"""Detection, instance and panoptic segmentation on torchvision's detectors: recipe (:mod:`.config`), training
(:mod:`.train`) and evaluation (:mod:`.eval`)."""

from fapn.engine.detection.train import *  # noqa: F403
from fapn.engine.detection.train import __all__  # noqa: F401
