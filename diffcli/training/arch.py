"""Architectures of the bundled model (standard diffusers / transformers classes, tiny configs)."""

from __future__ import annotations

from diffcli.bundled.vocab import BOS, EOS, MODEL_MAX_LENGTH, build_vocab

SIZES = {
    # name: (vae channels, vae layers, unet channels, unet layers, text hidden, text layers)
    "full": ((32, 64, 64), 1, (64, 128, 128), 1, 128, 3),
    "tiny": ((16, 16, 16), 1, (16, 32, 32), 1, 32, 1),  # for tests / smoke runs
}
SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    prediction_type="v_prediction",
    timestep_spacing="trailing",
    steps_offset=1,
    # zero terminal SNR (Lin et al. 2024): at t=999 the model sees pure noise, as at
    # sampling time, so layout (object position) comes from the prompt, not the noise
    rescale_betas_zero_snr=True,
)


def make_vae(size: str = "full"):
    from diffusers import AutoencoderKL

    ch, layers = SIZES[size][0], SIZES[size][1]
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * len(ch),
        up_block_types=("UpDecoderBlock2D",) * len(ch),
        block_out_channels=ch,
        layers_per_block=layers,
        norm_num_groups=min(32, ch[0]),
        sample_size=64,
        mid_block_add_attention=False,
    )


def make_text_encoder(size: str = "full"):
    from transformers import CLIPTextConfig, CLIPTextModel

    vocab, _ = build_vocab()
    hidden, layers = SIZES[size][4], SIZES[size][5]
    cfg = CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=hidden,
        intermediate_size=hidden * 4,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 32),
        max_position_embeddings=MODEL_MAX_LENGTH,
        projection_dim=hidden,
        bos_token_id=vocab[BOS],
        eos_token_id=vocab[EOS],
        pad_token_id=vocab[EOS],
    )
    return CLIPTextModel(cfg)


def make_unet(size: str = "full"):
    from diffusers import UNet2DConditionModel

    ch, layers, hidden = SIZES[size][2], SIZES[size][3], SIZES[size][4]
    return UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        layers_per_block=layers,
        block_out_channels=ch,
        # no attention at the top (16x16) level: 4x cheaper on CPU
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (len(ch) - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (len(ch) - 1) + ("UpBlock2D",),
        cross_attention_dim=hidden,
        attention_head_dim=max(1, ch[-1] // 32),
        norm_num_groups=min(32, ch[0]),
    )


def make_scheduler(name: str = "dpm++2m"):
    from diffusers import DDPMScheduler, DPMSolverMultistepScheduler

    if name == "ddpm":
        return DDPMScheduler(**SCHEDULER_CONFIG)
    return DPMSolverMultistepScheduler(**SCHEDULER_CONFIG)
