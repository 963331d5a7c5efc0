"""A LoRA student directory (`--method lcm-lora`), read without torch: its file, its base, its defaults.

    OUT/pytorch_lora_weights.safetensors
    OUT/diffcli.json   {"steps": 4, "cfg": 1.0, "scheduler": "lcm", ..., "lora": {"base": NAME,
                        "base_source": "bundled|local|hub|...", "base_path": DIR, "base_hash": ..., "rank": R}}

`--model OUT` accepts such a directory: the resolver sees `is_lora_dir(path)`, resolves
`lora_base(path)` and returns the base's ModelRef with `lora=OUT`; `load_base` then calls
`apply_lora(pipe, OUT)`, and `lora_defaults(OUT)` override the base's recommended settings.
"""

from __future__ import annotations

import json
from pathlib import Path

LORA_FILE = "pytorch_lora_weights.safetensors"
SETTINGS = ("steps", "cfg", "scheduler", "shift", "width", "height")


def read_own(path) -> dict:
    try:
        return json.loads((Path(path) / "diffcli.json").read_text())
    except (OSError, ValueError):
        return {}


def is_lora_dir(path) -> bool:
    p = Path(path)
    return p.is_dir() and (p / LORA_FILE).is_file() and "lora" in read_own(p)


def lora_base(path) -> str:
    """The base model's name for `resolve` (its directory when the base was a local directory)."""
    rec = read_own(Path(path))["lora"]
    base_path = rec.get("base_path")
    if rec.get("base_source") == "local" and base_path and Path(base_path).is_dir():
        return base_path
    return rec["base"]


def lora_defaults(path) -> dict:
    own = read_own(Path(path))
    return {k: own[k] for k in SETTINGS if own.get(k) is not None}


def apply_lora(pipe, path, fuse: bool = True):
    """Load the LoRA at PATH into PIPE (its base pipeline) and, by default, fuse it (needs peft)."""
    pipe.load_lora_weights(str(path), weight_name=LORA_FILE, adapter_name="lcm")
    if fuse:
        pipe.fuse_lora()
    return pipe
