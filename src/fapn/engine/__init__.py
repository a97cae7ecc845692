"""Training and evaluation engine.

Semantic segmentation: :mod:`fapn.engine.semseg_train` (``train``, ``fapn train``),
:mod:`fapn.engine.semseg_eval` (``evaluate``, ``fapn eval``), :mod:`fapn.engine.semseg_score` (``fapn score``),
:mod:`fapn.engine.demo` (``fapn demo``), recipes in :mod:`fapn.engine.segmentation_config`; checkpoints in
:mod:`fapn.engine.checkpoint`.
"""
