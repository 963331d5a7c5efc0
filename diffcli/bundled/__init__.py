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
TINY_AE_DIR = Path(__file__).resolve().parent / "tiny-ae"  # the tiny autoencoder (trained by diffcli.training.tiny_ae)
EDIT_MODEL_NAME = "tiny-edit"  # the bundled InstructPix2Pix model (recipe: diffcli.training.edit)
FLUX_MODEL_NAME = "tiny-flux"  # the bundled FLUX.1-architecture transformer model (recipe: diffcli.training.flux)
# Every model that ships in the package: the bundled model, its 4-step LCM student
# (`diffcli distill --teacher tiny`, see docs/distill.md), its instruction-editing variant and the
# flow-matching transformer model of the same scenes.
MODEL_NAMES = (MODEL_NAME, "tiny-lcm", EDIT_MODEL_NAME, FLUX_MODEL_NAME)
# The shipped model a task uses when none is named (no --model, no $DIFFCLI_MODEL); MODEL_NAME otherwise.
TASK_MODELS = {"edit": EDIT_MODEL_NAME}

__all__ = [
    "MODEL_NAME",
    "MODEL_DIR",
    "MODEL_NAMES",
    "FLUX_MODEL_NAME",
    "TASK_MODELS",
    "default_model",
    "family",
    "EVALUATOR_DIR",
    "model_dir",
    "unknown_words",
    "unknown_words_warning",
    "defaults",
]


def model_dir(name: str = MODEL_NAME) -> Path:
    """The folder of the shipped model NAME (one of MODEL_NAMES); it may be missing from a trimmed install."""
    return MODEL_DIR if name == MODEL_NAME else Path(__file__).resolve().parent / name


def default_model(task: str | None = None) -> str:
    """The shipped model TASK uses when none is named: TASK_MODELS's, where that model is installed, else
    MODEL_NAME."""
    name = TASK_MODELS.get(task or "")
    if name and (model_dir(name) / "model_index.json").is_file():
        return name
    return MODEL_NAME


def unknown_words(text: str) -> list[str]:
    """Words of ``text`` the bundled model does not know (stop words and punctuation ignored)."""
    from .vocab import unknown_words as _uw

    return _uw(text)


def unknown_words_warning(prompt: str, from_image: bool = False) -> str | None:
    """The whole warning to print for PROMPT with the bundled model (None: nothing to say).

    It names the unknown words as typed ("8k", not "k"), says plainly when no word was understood
    (the model then draws a random scene; with FROM_IMAGE, for img2img, inpaint and upscale, the
    prompt does not steer the result), and lists what the model knows.
    """
    from .vocab import unknown_words_warning as _w

    return _w(prompt, from_image)


def family(name: str = MODEL_NAME) -> str:
    """The family the shipped model NAME's diffcli.json names ("bundled"; "bundled-edit" for tiny-edit,
    "bundled-flux" for tiny-flux)."""
    try:
        return json.loads((model_dir(name) / "diffcli.json").read_text()).get("family") or "bundled"
    except (OSError, ValueError):
        return "bundled"


def defaults() -> dict:
    """The model's recommended settings (``diffcli.json``)."""
    return json.loads((MODEL_DIR / "diffcli.json").read_text())
