"""Deprecated location: moved to :mod:`fapn.engine.semseg.score`; this re-export stays until no caller imports it."""

from fapn.engine.semseg.score import *  # noqa: F403
from fapn.engine.semseg.score import __all__  # noqa: F401
