"""Cheap facts about weight files, read from safetensors headers only (no torch)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from diffcli import families
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


def gguf_tensor_names(path: Path | str) -> list[str]:
    """The tensor names of a GGUF file (its header only; needs the `gguf` package: diffcli[gguf])."""
    try:
        from gguf import GGUFReader
    except ImportError:
        raise UsageError(f"{path}: reading GGUF files needs the gguf package: pip install 'diffcli[gguf]'") from None
    try:
        return [t.name for t in GGUFReader(str(path)).tensors]
    except (OSError, ValueError, KeyError, IndexError) as exc:
        raise UsageError(f"{path}: not a valid GGUF file ({exc})") from None


def gguf_types(path: Path | str) -> list[str]:
    """The tensor types in a GGUF file (F32, F16, Q8_0, Q4_K, ...), from its header."""
    from gguf import GGUFReader

    try:
        return sorted({t.tensor_type.name for t in GGUFReader(str(path)).tensors})
    except (OSError, ValueError, KeyError, IndexError) as exc:
        raise UsageError(f"{path}: not a valid GGUF file ({exc})") from None


def transformer_family(keys) -> str | None:
    """The family (flux, sd3, ...) whose single files hold only its transformer, when KEYS are such a
    transformer's (the original BFL/SAI layout, with or without the `model.diffusion_model.` prefix, or
    diffusers' own), else None."""
    family = families.detect_keys([k.removeprefix("model.diffusion_model.") for k in keys])
    spec = families.get(family)
    return family if spec is not None and spec.single_file == "transformer" else None


def detect_family(path: Path | str) -> str:
    """Family of a single-file checkpoint (diffcli.families: each family's detect_keys): sd1 | sd2 | sdxl |
    sdxl-refiner (original LDM layout, with "-inpaint" appended when the UNet takes 9 input channels),
    flux | sd3 (a transformer, as .safetensors or .gguf; other components come from --base) or unknown."""
    if str(path).lower().endswith(".gguf"):
        return transformer_family(gguf_tensor_names(path)) or "unknown"
    if not str(path).lower().endswith(".safetensors"):
        return "unknown"
    t = tensors(read_header(path))
    family = families.detect_keys([k.removeprefix("model.diffusion_model.") for k in t])
    spec = families.get(family)
    if spec is None:
        return "unknown"
    if spec.single_file == "transformer":
        return family
    conv_in = t.get("model.diffusion_model.input_blocks.0.0.weight", {})
    shape = conv_in.get("shape") or []
    if len(shape) > 1 and shape[1] == 9:
        family += "-inpaint"
    return family
