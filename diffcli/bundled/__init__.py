"""The bundled tiny text-to-image model (procedural scenes domain).

Import-light: no torch/diffusers import here. ``MODEL_DIR`` is a standard Stable Diffusion
diffusers folder; ``diffcli.json`` inside it holds the recommended CLI defaults.
"""
from __future__ import annotations

import json
from pathlib import Path

MODEL_NAME = "tiny"
MODEL_DIR = Path(__file__).resolve().parent / MODEL_NAME
EVALUATOR_DIR = Path(__file__).resolve().parent / "evaluator"

__all__ = ["MODEL_NAME", "MODEL_DIR", "EVALUATOR_DIR", "unknown_words", "defaults"]


def unknown_words(text: str) -> list[str]:
    """Words of ``text`` the bundled model does not know (stop words and punctuation ignored)."""
    from .vocab import unknown_words as _uw

    return _uw(text)


def defaults() -> dict:
    """The model's recommended settings (``diffcli.json``)."""
    return json.loads((MODEL_DIR / "diffcli.json").read_text())
