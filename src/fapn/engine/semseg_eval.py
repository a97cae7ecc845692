"""Deprecated location: moved to :mod:`fapn.engine.semseg.eval`; this re-export stays until no caller imports it."""

from fapn.engine.semseg.eval import *  # noqa: F403
from fapn.engine.semseg.eval import __all__  # noqa: F401
