"""The ``opensora-sample`` command (:mod:`~opensora.cli.sample`), its condition flags and its files."""
from opensora.cli.sample import main

__all__ = ["main"]
