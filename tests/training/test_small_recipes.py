"""Entry points of the recipes that have no test of their own: the scene segmenter, the attribute
evaluator and the bundled ControlNet, each for a step or two, written where the runtime loads them from."""

import json

import numpy as np
import pytest
import torch

from diffcli.bundled.evaluator import load_evaluator
from diffcli.bundled.segmenter import load_segmenter


def test_segmenter_recipe_writes_weights_the_runtime_loads(tmp_path):
    from diffcli.training import segmenter

    segmenter.train(steps=2, n=8, batch=4, out=tmp_path, log=lambda *_: None)
    assert json.loads((tmp_path / "config.json").read_text())["steps"] == 2
    assert load_segmenter(tmp_path).masks([np.zeros((64, 64, 3), np.uint8)]).shape == (1, 64, 64)


def test_evaluator_recipe_writes_weights_the_runtime_loads(tmp_path):
    from diffcli.training import evaluator

    evaluator.train(steps=2, n=8, batch=4, out=tmp_path, log=lambda *_: None)
    assert json.loads((tmp_path / "config.json").read_text())["steps"] == 2
    acc = evaluator.heldout_accuracy(load_evaluator(tmp_path), n=4)
    assert set(acc) == set(evaluator.HEADS)


def test_controlnet_recipe_exports_a_controlnet(tmp_path):
    from diffusers import ControlNetModel

    from diffcli.training import controlnet

    out = tmp_path / "cn"
    controlnet.main(
        [
            "--out",
            str(out),
            "--ckpt-dir",
            str(tmp_path / "ckpt"),
            "--steps",
            "1",
            "--buffer",
            "4",
            "--batch",
            "2",
            "--threads",
            "1",
        ]
    )
    meta = json.loads((out / "diffcli.json").read_text())
    assert meta["recipe"] == "python -m diffcli.training.controlnet" and meta["steps"] == 1
    assert ControlNetModel.from_pretrained(str(out)).config.conditioning_embedding_out_channels == [16, 32, 64]
    assert torch.load(tmp_path / "ckpt" / "control.pt", weights_only=False)["step"] == 1


def test_edit_recipe_resumes_and_exports_an_instructpix2pix_pipeline(tmp_path):
    """The tiny-edit recipe: a run of one step, resumed to two, checkpoints its step (with optimizer state)
    and exports a folder plain diffusers loads as an InstructPix2Pix pipeline with diffcli's settings."""
    from diffusers import StableDiffusionInstructPix2PixPipeline

    from diffcli.training import edit

    out, ckpt = tmp_path / "edit", tmp_path / "ckpt"
    common = ["--out", str(out), "--ckpt-dir", str(ckpt), "--buffer", "4", "--batch", "2", "--threads", "1"]
    edit.main([*common, "--steps", "1", "--attr-weights", "obj=1,time=0,color=0,ground=0,position=0"])
    first = torch.load(ckpt / "edit.pt", weights_only=False)
    assert first["step"] == 1 and first["opt"]["state"]
    edit.main([*common, "--steps", "2", "--resume"])
    assert torch.load(ckpt / "edit.pt", weights_only=False)["step"] == 2
    assert "resumed at step 1" in (ckpt / "train.log").read_text()
    pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(str(out))
    assert pipe.unet.config.in_channels == 8
    assert json.loads((out / "diffcli.json").read_text())["family"] == "bundled-edit"
    with pytest.raises(SystemExit):
        edit.main([*common, "--steps", "1", "--attr-weights", "sky=1"])


def test_flux_recipe_resumes_and_exports_a_flux_pipeline(tmp_path):
    """The tiny-flux recipe: a run of one step, resumed to two, keeps its step, optimizer state and latent
    statistics, and exports a FluxPipeline folder plain diffusers loads in float32, whose VAE carries those
    statistics and whose T5 tokenizer reads every domain word as one piece."""
    from diffusers import FluxPipeline

    from diffcli.training import flux

    out, ckpt = tmp_path / "flux", tmp_path / "ckpt"
    common = ["--out", str(out), "--ckpt-dir", str(ckpt), "--buffer", "4", "--batch", "2", "--threads", "1"]
    flux.main([*common, "--steps", "1"])
    first = torch.load(ckpt / "flux.pt", weights_only=False)
    assert first["step"] == 1 and first["opt"]["state"]
    flux.main([*common, "--steps", "2", "--resume"])
    second = torch.load(ckpt / "flux.pt", weights_only=False)
    assert second["step"] == 2 and second["latent_stats"] == first["latent_stats"]
    assert "resumed at step 1" in (ckpt / "train.log").read_text()
    pipe = FluxPipeline.from_pretrained(str(out))
    assert {m.dtype for m in (pipe.transformer, pipe.text_encoder, pipe.text_encoder_2, pipe.vae)} == {torch.float32}
    assert pipe.vae.config.shift_factor == first["latent_stats"]["shift_factor"]
    assert not pipe.transformer.config.guidance_embeds
    assert pipe.tokenizer_2.tokenize("a red lighthouse at dusk") == ["▁a", "▁red", "▁lighthouse", "▁at", "▁dusk"]
    assert json.loads((out / "diffcli.json").read_text())["family"] == "bundled-flux"
    pipe.set_progress_bar_config(disable=True)
    image = pipe("a castle", height=64, width=64, num_inference_steps=1, max_sequence_length=32).images[0]
    assert image.size == (64, 64)
