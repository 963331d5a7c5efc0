"""Recognising a ControlNet on disk: a folder by its config.json, a .safetensors file by its header, and the
ControlNets shipped in the package. No torch; diffcli.control uses them (and the model cache to list them)."""

from __future__ import annotations

import json
from pathlib import Path

BUNDLED_CONTROLNETS = ("tiny-control-seg",)  # shipped in diffcli/bundled/<name>, for the bundled model
UNION_CLASS = "ControlNetUnionModel"


def bundled_dir(name: str) -> Path:
    return Path(__file__).resolve().parents[1] / "bundled" / name


def controlnet_class(path: Path) -> str | None:
    """The diffusers class recorded in a folder's config.json, when it is a ControlNet; else None."""
    try:
        data = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    cls = data.get("_class_name") if isinstance(data, dict) else None
    if isinstance(cls, str) and "ControlNet" in cls and "num_control_type" in data:
        return UNION_CLASS  # a union model's config, whatever class name its maker wrote
    return cls if isinstance(cls, str) and "ControlNet" in cls else None


def is_controlnet_dir(path) -> bool:
    return Path(path).is_dir() and controlnet_class(Path(path)) is not None


def is_controlnet_file(path) -> bool:
    """Whether a .safetensors file holds a ControlNet (diffusers' or the original layout), from its header."""
    from diffcli.models.checkpoint_info import read_header, tensors

    if not str(path).lower().endswith(".safetensors"):
        return False
    keys = tensors(read_header(path))
    return any(
        k.startswith(("controlnet_cond_embedding.", "input_hint_block.", "control_model.input_hint_block."))
        for k in keys
    )
