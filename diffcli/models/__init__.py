"""The model-cache manager: turns a NAME into a local model (ModelRef). No torch here."""

from diffcli.models.layout import read_layout
from diffcli.models.resolve import ModelRef, resolve

__all__ = ["ModelRef", "read_layout", "resolve"]
