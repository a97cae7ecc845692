"""Training and evaluation engine.

* :mod:`fapn.engine.trainer`: the skeleton every task shares (run folder and resume rules, checkpoint contents,
  RNG state, logging, start-up summary, the optimisation loop);
* :mod:`fapn.engine.semseg`: semantic segmentation recipe (``config``), training (``train``, ``fapn train``),
  evaluation (``eval``, ``fapn eval``) and scoring of saved predictions (``score``, ``fapn score``);
* :mod:`fapn.engine.detection`: detection, instance and panoptic recipe, data, training and evaluation;
* :mod:`fapn.engine.demo` (``fapn demo``), :mod:`fapn.engine.distributed`, :mod:`fapn.engine.lr_schedule`.

Checkpoints are :mod:`fapn.checkpoint`; device, mixed precision and threads are :mod:`fapn.runtime`.
"""
