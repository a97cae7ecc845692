"""Deprecated location: moved to :mod:`fapn.engine.detection.config`; this re-export stays until no caller imports it."""

from fapn.engine.detection.config import *  # noqa: F403
from fapn.engine.detection.config import __all__  # noqa: F401
