"""Semantic segmentation: recipe (:mod:`.config`), model (:mod:`.model`), data (:mod:`.data`), losses (:mod:`.loss`),
training (:mod:`.train`), evaluation (:mod:`.eval`) and scoring of saved predictions (:mod:`.score`), as
:mod:`fapn.engine.detection` files the same ideas."""
