import re

import torch

from diffcli.bundled import train


def test_recipe_smoke_and_resume(tmp_path):
    out, ck = tmp_path / "model", tmp_path / "ckpt"
    common = ["--out", str(out), "--ckpt-dir", str(ck), "--size", "tiny", "--buffer", "64", "--batch", "8",
              "--psnr-n", "16", "--vae-steps", "3", "--ema-start", "2", "--threads", "1"]
    train.main(common + ["--unet-steps", "4", "--decoder-steps", "2"])
    assert torch.load(ck / "decoder.pt", weights_only=False)["step"] == 2
    assert torch.load(ck / "vae.pt", weights_only=False)["step"] == 3
    assert torch.load(ck / "unet.pt", weights_only=False)["step"] == 4
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    train.main(common + ["--unet-steps", "7", "--resume"])
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
