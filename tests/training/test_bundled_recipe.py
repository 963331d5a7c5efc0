"""The bundled model's recipe (diffcli.training.bundled): stages, resume, fine-tune, timestep sampling."""

import re

import torch

from diffcli.training import bundled as recipe
from diffcli.training.common import sample_timesteps


def test_recipe_smoke_and_resume(tmp_path):
    out, ck = tmp_path / "model", tmp_path / "ckpt"
    common = [
        "--out",
        str(out),
        "--ckpt-dir",
        str(ck),
        "--size",
        "tiny",
        "--buffer",
        "32",
        "--batch",
        "8",
        "--psnr-n",
        "16",
        "--vae-steps",
        "3",
        "--ema-start",
        "2",
        "--threads",
        "1",
    ]
    recipe.main(common + ["--unet-steps", "4", "--decoder-steps", "2", "--decoder-sizes", "64,128"])
    assert torch.load(ck / "decoder.pt", weights_only=False)["step"] == 2
    assert torch.load(ck / "vae.pt", weights_only=False)["step"] == 3
    assert torch.load(ck / "unet.pt", weights_only=False)["step"] == 4
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    recipe.main(common + ["--unet-steps", "7", "--resume"])
    st = torch.load(ck / "unet.pt", weights_only=False)
    assert st["step"] == 7 and torch.load(ck / "vae.pt", weights_only=False)["step"] == 3
    log = (ck / "train.log").read_text()
    assert "vae: stage already done at step 3" in log and "unet: resumed at step 4" in log
    assert re.findall(r"training finished at unet step (\d+)", log) == ["4", "7"]

    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(out), torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    img = pipe("castle", num_inference_steps=2, guidance_scale=2.0).images[0]
    assert img.size == (64, 64)


def test_fine_tune_from_exported_weights(tmp_path):
    """--init-from: stage 2 starts from an exported folder, fresh optimizer and budget, same latent scale."""
    import json

    base, out, ck = tmp_path / "base", tmp_path / "ft", tmp_path / "ckpt"
    common = [
        "--ckpt-dir",
        str(ck),
        "--size",
        "tiny",
        "--buffer",
        "64",
        "--batch",
        "8",
        "--psnr-n",
        "16",
        "--vae-steps",
        "2",
        "--threads",
        "1",
    ]
    recipe.main(common + ["--out", str(base), "--unet-steps", "3"])
    json_of = lambda d, f: json.loads((d / f).read_text())  # noqa: E731
    (ck / "unet.pt").unlink()
    recipe.main(
        common + ["--out", str(out), "--resume", "--init-from", str(base), "--unet-steps", "2", "--high-t-frac", "0.5"]
    )
    log = (ck / "train.log").read_text()
    assert f"unet: initialised from {base}" in log
    assert torch.load(ck / "unet.pt", weights_only=False)["step"] == 2
    assert (
        json_of(out / "vae", "config.json")["scaling_factor"] == json_of(base / "vae", "config.json")["scaling_factor"]
    )
    assert json_of(out / "scheduler", "scheduler_config.json")["rescale_betas_zero_snr"] is True


def test_high_timestep_sampling():
    t = sample_timesteps(4000, 1000, 0.5, "cpu", high_start=0.9)
    assert 0 <= int(t.min()) and int(t.max()) < 1000
    share = float((t >= 900).float().mean())
    assert 0.5 < share < 0.6  # half drawn from [900, 1000) plus a tenth of the uniform half
