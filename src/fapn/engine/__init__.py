"""Training and evaluation engine.

* the skeleton every task shares: :mod:`fapn.engine.run_dir` (the run folder and its resume rule),
  :mod:`fapn.engine.run_log` (start-up summary, log records), :mod:`fapn.engine.trainer` (checkpoint contents, RNG
  state, the optimisation loop);
* :mod:`fapn.engine.semseg`: semantic segmentation recipe (``config``), model (``model``), data (``data``), losses
  (``loss``), training (``train``, ``fapn train``), evaluation (``eval``, ``fapn eval``) and scoring of saved
  predictions (``score``, ``fapn score``);
* :mod:`fapn.engine.detection`: detection, instance and panoptic recipe (``config``), model (``model``), data,
  training and evaluation, in the same files;
* :mod:`fapn.engine.demo` (``fapn demo``), :mod:`fapn.engine.distributed`, :mod:`fapn.engine.lr_schedule`.

Checkpoints are :mod:`fapn.checkpoint`; device, mixed precision and threads are :mod:`fapn.runtime`.
"""
