"""Command-line interface: ``fapn COMMAND``."""
