"""Deprecated location: moved to :mod:`fapn.engine.semseg.train`; this re-export stays until no caller imports it."""

from fapn.engine.semseg.train import *  # noqa: F403
from fapn.engine.semseg.train import __all__  # noqa: F401
