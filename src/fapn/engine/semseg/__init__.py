"""Semantic segmentation: recipe (:mod:`.config`), training (:mod:`.train`), evaluation (:mod:`.eval`) and scoring
of saved predictions (:mod:`.score`)."""
