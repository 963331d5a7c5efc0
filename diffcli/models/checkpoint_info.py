"""Cheap facts about weight files, read from safetensors headers only (no torch)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from diffcli.errors import UsageError

MAX_HEADER = 100 * 1024 * 1024


def read_header(path: Path | str) -> dict:
    """The JSON header of a .safetensors file: {tensor name: {dtype, shape, data_offsets}, ...}."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise ValueError("file too short")
            (n,) = struct.unpack("<Q", raw)
            if n > MAX_HEADER:
                raise ValueError("header too large")
            header = json.loads(f.read(n))
        if not isinstance(header, dict):
            raise ValueError("header is not an object")
        return header
    except (OSError, ValueError, struct.error) as exc:
        raise UsageError(f"{path}: not a valid .safetensors file ({exc})") from None


def tensors(header: dict) -> dict:
    return {k: v for k, v in header.items() if k != "__metadata__"}


def dtypes(path: Path | str) -> list[str]:
    return sorted({str(v.get("dtype")) for v in tensors(read_header(path)).values()})


def detect_family(path: Path | str) -> str:
    """Family of an original-format (LDM) single-file checkpoint: sd1 | sd2 | sdxl | sdxl-refiner | unknown,
    with "-inpaint" appended when the UNet takes 9 input channels."""
    if not str(path).lower().endswith(".safetensors"):
        return "unknown"
    t = tensors(read_header(path))
    keys = t.keys()
    if any(k.startswith("conditioner.embedders.1.") for k in keys):
        family = "sdxl"
    elif any(k.startswith("conditioner.embedders.0.model.") for k in keys):
        family = "sdxl-refiner"
    elif any(k.startswith("cond_stage_model.model.") for k in keys):
        family = "sd2"
    elif any(k.startswith("cond_stage_model.transformer.") for k in keys):
        family = "sd1"
    else:
        return "unknown"
    conv_in = t.get("model.diffusion_model.input_blocks.0.0.weight", {})
    shape = conv_in.get("shape") or []
    if len(shape) > 1 and shape[1] == 9:
        family += "-inpaint"
    return family
