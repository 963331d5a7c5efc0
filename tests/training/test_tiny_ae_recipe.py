"""The tiny autoencoder's recipe (diffcli.training.tiny_ae): its training entry point."""

import torch

from diffcli.training import tiny_ae


def test_training_entry_point_writes_a_loadable_autoencoder(tmp_path):
    from diffusers import AutoencoderTiny

    out = tmp_path / "ae"
    tiny_ae.main(
        [
            "--out",
            str(out),
            "--ckpt",
            str(tmp_path / "ae.pt"),
            "--steps",
            "3",
            "--batch",
            "4",
            "--buffer",
            "8",
            "--psnr-n",
            "4",
            "--threads",
            "1",
            "--decoder-channels",
            "16",
        ]
    )
    ae = AutoencoderTiny.from_pretrained(str(out), torch_dtype=torch.float32)
    assert ae.decode(torch.zeros(1, 4, 16, 16)).sample.shape == (1, 3, 64, 64)
    assert ae.config.decoder_block_out_channels == [16, 16, 16]
    assert torch.load(tmp_path / "ae.pt", weights_only=False)["step"] == 3  # a step budget is exact
    assert not (tmp_path / "ae.tmp").exists()
