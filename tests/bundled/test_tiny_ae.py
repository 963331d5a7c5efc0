"""The bundled model's tiny autoencoder: what ships (its recipe: tests/training/test_tiny_ae_recipe.py)."""

import json

import torch

from diffcli.bundled import TINY_AE_DIR
from diffcli.training import tiny_ae


def test_shipped_tiny_autoencoder_decodes_like_the_bundled_vae():
    from diffusers import AutoencoderTiny

    cfg = json.loads((TINY_AE_DIR / "config.json").read_text())
    assert cfg["_class_name"] == "AutoencoderTiny" and cfg["scaling_factor"] == 1.0
    ae = AutoencoderTiny.from_pretrained(str(TINY_AE_DIR), torch_dtype=torch.float32).eval()
    with torch.no_grad():
        figures = tiny_ae.psnr_vs_teacher(ae, tiny_ae.load_bundled_vae(), n=16)
    # after 22 training steps this was 7.4 dB (measured); the 32-channel one shipped before ~29, this ~35
    assert figures["decoder_vs_bundled_decoder"] > 32, figures
    assert figures["tiny_round_trip"] > 26, figures
