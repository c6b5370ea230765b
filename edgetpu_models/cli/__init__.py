"""The `edgetpu-models` command line: the app layer on top of every room. Nothing in the library imports it."""

from edgetpu_models.cli.app import main

__all__ = ["main"]
