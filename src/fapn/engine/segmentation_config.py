"""Deprecated location: moved to :mod:`fapn.engine.semseg.config`; this re-export stays until no caller imports it."""

from fapn.engine.semseg.config import *  # noqa: F403
from fapn.engine.semseg.config import __all__  # noqa: F401
