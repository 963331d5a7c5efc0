"""A real single-file (LDM layout) checkpoint loads through `load_pipeline` with no network."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

from diffcli.models import resolve
from diffcli.models.single_file import load_pipeline

from .ldm import to_ldm


def test_tiny_ldm_checkpoint_loads_offline(tiny_sd, tmp_path, no_network):
    import torch
    from safetensors.torch import load_file

    ckpt = to_ldm(tiny_sd, tmp_path / "tiny-sd1.safetensors")
    config = tmp_path / "config"  # the tiny model's own configs + tokenizer, no weights
    shutil.copytree(tiny_sd, config, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    attempts = no_network()
    ref = resolve(str(ckpt), offline=True)
    assert ref.kind == "single_file" and ref.family == "sd1"
    pipe = load_pipeline(replace(ref, config=str(config)), torch.float32)
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    want = load_file(Path(tiny_sd) / "unet" / "diffusion_pytorch_model.safetensors")
    got = pipe.unet.state_dict()
    assert set(want) <= set(got)
    assert all(torch.equal(got[k], want[k]) for k in want)
    vae_want = load_file(Path(tiny_sd) / "vae" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(pipe.vae.state_dict()[k], vae_want[k]) for k in vae_want)
    assert attempts == []
