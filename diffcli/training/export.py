"""Export trained components as an fp16 StableDiffusionPipeline folder (standard diffusers layout)."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

from diffcli.output import swap_in_dir

DEFAULTS = {"steps": 15, "cfg": 5.0, "scheduler": "dpm++2m", "width": 64, "height": 64, "family": "bundled"}


def export_pipeline(
    out_dir, vae, text_encoder, unet, tokenizer, scheduler, defaults: dict | None = None, dtype=None
) -> Path:
    """Save fp16 copies of the components to ``out_dir`` atomically (write aside, then swap)."""
    import torch
    from diffusers import StableDiffusionPipeline

    dtype = dtype or torch.float16
    out = Path(out_dir)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    parts = [copy.deepcopy(m).to("cpu", dtype).eval() for m in (vae, text_encoder, unet)]
    pipe = StableDiffusionPipeline(
        vae=parts[0],
        text_encoder=parts[1],
        tokenizer=tokenizer,
        unet=parts[2],
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(tmp, safe_serialization=True)
    load_in_float32_by_default(tmp)
    _write_vocab_files(tmp / "tokenizer")
    old = Path(out_dir) / "diffcli.json"
    d = dict(DEFAULTS)
    if old.exists():
        d.update(json.loads(old.read_text()))
    d.update(defaults or {})
    (tmp / "diffcli.json").write_text(json.dumps(d, indent=2) + "\n")
    swap_in_dir(tmp, out)
    return out


def load_in_float32_by_default(folder) -> None:
    """Record float32 as the dtype of the transformers components of FOLDER, whatever their weights are
    stored in (the weights stay as they are).

    transformers >= 5 loads a model in the dtype its config records when it is not asked for one, and
    save_pretrained records the dtype the model had: fp16 here. diffusers loads its own models in
    float32 by default, so plain `DiffusionPipeline.from_pretrained(folder)` would pair an fp16 text
    encoder with an fp32 UNet and fail at the first matmul. An explicit torch_dtype still wins."""
    for config in sorted(Path(folder).glob("*/config.json")):
        data = json.loads(config.read_text())
        if "transformers_version" not in data:
            continue  # a diffusers component: loaded in float32 unless asked otherwise
        changed = False
        for key in ("dtype", "torch_dtype"):
            if key in data and data[key] != "float32":
                data[key], changed = "float32", True
        if changed:
            config.write_text(json.dumps(data, indent=2) + "\n")


def _write_vocab_files(tok_dir: Path):
    """Also ship the classic vocab.json + merges.txt next to tokenizer.json."""
    from diffcli.bundled.vocab import build_vocab

    vocab, merges = build_vocab()
    (tok_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (tok_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n")
