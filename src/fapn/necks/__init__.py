"""Feature pyramid necks."""

from fapn.necks.fapn import FaPN

__all__ = ["FaPN"]
