"""Tiny random-weight diffusion upscalers (x4 and x2-latent), saved in the diffusers layout.

The shapes follow diffusers' own test "dummy components" for StableDiffusionUpscalePipeline and
StableDiffusionLatentUpscalePipeline, made smaller where that keeps the tests fast.
"""

from __future__ import annotations

from pathlib import Path

from tiny_models import _rmtree, _text_config, build_tokenizer


def build_x4(path: Path, seed: int = 0) -> Path:
    """A x4 upscaler: UNet with 7 input channels (4 latent + 3 low-res image), noise-level class labels."""
    import torch
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        DDPMScheduler,
        StableDiffusionUpscalePipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    path = Path(path)
    tokenizer = build_tokenizer(path / "_tok")
    unet = UNet2DConditionModel(
        block_out_channels=(32, 32, 64),
        layers_per_block=1,
        sample_size=16,
        in_channels=7,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        use_linear_projection=True,
        only_cross_attention=(True, True, False),
        num_class_embeds=351,  # noise levels 0..max_noise_level
        norm_num_groups=32,
    )
    vae = AutoencoderKL(
        block_out_channels=[32, 32, 64],  # VAE factor 4 = the upscale factor
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 3,
        up_block_types=["UpDecoderBlock2D"] * 3,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=64,
        scaling_factor=0.08333,
    )
    pipe = StableDiffusionUpscalePipeline(
        vae=vae,
        text_encoder=CLIPTextModel(_text_config(tokenizer)),
        tokenizer=tokenizer,
        unet=unet,
        low_res_scheduler=DDPMScheduler(),
        scheduler=DDIMScheduler(prediction_type="v_prediction"),
        max_noise_level=350,
    )
    pipe.save_pretrained(path, safe_serialization=True)
    _rmtree(path / "_tok")
    return path


def build_latent_x2(path: Path, seed: int = 0) -> Path:
    """A x2 latent upscaler: UNet with 8 input channels (4 latent + 4 low-res latent), K-diffusion blocks,
    Fourier time embedding conditioned (time_cond_proj_dim) on a noise-level embedding + the pooled prompt."""
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionLatentUpscalePipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    from tiny_models import _vae

    torch.manual_seed(seed)
    path = Path(path)
    tokenizer = build_tokenizer(path / "_tok")
    unet = UNet2DConditionModel(
        act_fn="gelu",
        attention_head_dim=8,
        norm_num_groups=None,
        block_out_channels=[32, 32, 64, 64],
        time_cond_proj_dim=160,  # 128 noise-level embedding + 32 pooled text
        conv_in_kernel=1,
        conv_out_kernel=1,
        cross_attention_dim=32,
        down_block_types=("KDownBlock2D", "KCrossAttnDownBlock2D", "KCrossAttnDownBlock2D", "KCrossAttnDownBlock2D"),
        in_channels=8,
        mid_block_type=None,
        only_cross_attention=False,
        out_channels=5,
        resnet_time_scale_shift="scale_shift",
        time_embedding_type="fourier",
        timestep_post_act="gelu",
        up_block_types=("KCrossAttnUpBlock2D", "KCrossAttnUpBlock2D", "KCrossAttnUpBlock2D", "KUpBlock2D"),
        sample_size=16,
    )
    pipe = StableDiffusionLatentUpscalePipeline(
        vae=_vae(),  # VAE factor 2
        text_encoder=CLIPTextModel(_text_config(tokenizer)),
        tokenizer=tokenizer,
        unet=unet,
        scheduler=EulerDiscreteScheduler(prediction_type="sample"),
    )
    pipe.save_pretrained(path, safe_serialization=True)
    _rmtree(path / "_tok")
    return path
