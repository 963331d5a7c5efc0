"""Smoke test of the x2 latent-upscaler recipe for the bundled family: a few steps on tiny components,
and the exported folder runs through `diffcli upscale --method model`."""

from __future__ import annotations

import json

from PIL import Image

from helpers import cli


def test_recipe_trains_exports_and_upscales(tmp_path):
    import torch

    from diffcli.bundled.scenes import render, sample_scene
    from diffcli.bundled.vocab import build_tokenizer
    from diffcli.training import arch, latent_upscaler
    from diffcli.training.export import export_pipeline

    base = export_pipeline(
        tmp_path / "base",
        arch.make_vae("tiny"),
        arch.make_text_encoder("tiny"),
        arch.make_unet("tiny"),
        build_tokenizer(tmp_path / "tok"),
        arch.make_scheduler(),
        dtype=torch.float32,
    )
    out = tmp_path / "x2"
    latent_upscaler.main(
        [
            "--base",
            str(base),
            "--out",
            str(out),
            "--size",
            "tiny",
            "--steps",
            "2",
            "--buffer",
            "8",
            "--batch",
            "2",
            "--low",
            "16",
            "--refresh-every",
            "1",
        ]
    )
    assert json.loads((out / "model_index.json").read_text())["_class_name"] == "StableDiffusionLatentUpscalePipeline"
    render(sample_scene(1), 24).save(tmp_path / "in.png")
    r = cli(
        "upscale",
        tmp_path / "in.png",
        "-m",
        out,
        "--steps",
        "2",
        "--dtype",
        "float32",
        "--seed",
        "1",
        "-o",
        tmp_path / "up",
        "--json",
        "--quiet",
    )
    assert r.exit_code == 0, r.stderr
    line = json.loads(r.stdout)
    assert (line["method"], line["scale"], line["width"], line["height"]) == ("model", 2, 48, 48)
    assert Image.open(line["path"]).size == (48, 48)
