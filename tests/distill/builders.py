"""Test inputs for the distill tests: teachers with fast defaults, data folders, prompt files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

FAST_TEACHER = {"steps": 2, "cfg": 3.0, "scheduler": "ddim"}


def fast_teacher(src: Path, dst: Path, **defaults) -> Path:
    """A copy of a fixture model whose diffcli.json asks for 2 steps (fast data drawing and reports)."""
    if not dst.exists():
        shutil.copytree(src, dst)
    own = dst / "diffcli.json"
    old = json.loads(own.read_text()) if own.exists() else {}
    own.write_text(json.dumps({**old, **FAST_TEACHER, **defaults}))
    return dst


def image_folder(path: Path, n: int = 4, size: int = 32, captions: bool = True) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    words = ["a red castle", "a house at dusk", "a tree", "a red door"]
    for i in range(n):
        arr = rng.integers(0, 255, (size + 8, size, 3), dtype=np.uint8)  # not square: centre-cropped
        Image.fromarray(arr).save(path / f"img{i}.png")
        if captions:
            (path / f"img{i}.txt").write_text(words[i % len(words)] + "\n")
    return path


def bundled_like(path: Path) -> Path:
    """A bundled-architecture model (size 'tiny', random weights, v-prediction) exported like the real one."""
    if (path / "model_index.json").is_file():
        return path
    import torch

    from diffcli.bundled.vocab import build_tokenizer
    from diffcli.training import arch
    from diffcli.training.export import export_pipeline

    torch.manual_seed(0)
    tok = build_tokenizer(path.parent / "_bundled_tok")
    export_pipeline(
        path,
        arch.make_vae("tiny"),
        arch.make_text_encoder("tiny"),
        arch.make_unet("tiny"),
        tok,
        arch.make_scheduler("dpm++2m"),
        defaults={"steps": 2, "cfg": 3.0, "cfg_cutoff": 0.3},
    )
    return path
