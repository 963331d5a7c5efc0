"""Tiny Stable-Diffusion-family models with random weights, saved in the standard diffusers layout.

Real diffusers/transformers classes with small configs (the shapes of diffusers' own "dummy
components"), so every load goes through the same code a user's real model goes through.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

SPECIAL = ["<|startoftext|>", "<|endoftext|>"]
WORDS = ["castle", "at", "dusk", "a", "red", "door", "watercolor", "oil", "painting", "house", "tree"]


def build_tokenizer(path: Path, max_length: int = 16):
    """A CLIPTokenizer whose vocabulary is the ASCII letters plus a few whole words."""
    from transformers import CLIPTokenizer

    path.mkdir(parents=True, exist_ok=True)
    vocab: dict[str, int] = {}
    for tok in SPECIAL + list(string.ascii_lowercase) + [c + "</w>" for c in string.ascii_lowercase]:
        vocab.setdefault(tok, len(vocab))
    merges: list[str] = []
    for word in WORDS:
        piece = word[0]
        for i, ch in enumerate(word[1:], start=1):
            nxt = ch + ("</w>" if i == len(word) - 1 else "")
            merges.append(f"{piece} {nxt}")
            piece = piece + nxt
            vocab.setdefault(piece, len(vocab))
    merges = list(dict.fromkeys(merges))
    (path / "vocab.json").write_text(json.dumps(vocab))
    (path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tok = CLIPTokenizer(str(path / "vocab.json"), str(path / "merges.txt"), model_max_length=max_length)
    tok.save_pretrained(path)
    return tok


def _text_config(tokenizer, **extra):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        hidden_size=32,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=len(tokenizer),
        max_position_embeddings=tokenizer.model_max_length,
        **extra,
    )


def _vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=[32, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
        norm_num_groups=32,
        sample_size=32,
    )


def build_sd(path: Path, *, in_channels: int = 4, seed: int = 0) -> Path:
    """An SD-1-style model (32x32 images); in_channels=9 gives a dedicated inpainting model."""
    import torch
    from diffusers import PNDMScheduler, StableDiffusionInpaintPipeline, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    path = Path(path)
    tokenizer = build_tokenizer(path / "_tok")
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=16,
        in_channels=in_channels,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        norm_num_groups=32,
    )
    scheduler = PNDMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True, steps_offset=1
    )
    cls = StableDiffusionInpaintPipeline if in_channels == 9 else StableDiffusionPipeline
    pipe = cls(
        vae=_vae(),
        unet=unet,
        text_encoder=CLIPTextModel(_text_config(tokenizer)),
        tokenizer=tokenizer,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(path, safe_serialization=True)
    _rmtree(path / "_tok")
    return path


def build_sdxl(path: Path, seed: int = 0) -> Path:
    """An SDXL-style model: two text encoders and text-time conditioning (32x32 images)."""
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    path = Path(path)
    tokenizer = build_tokenizer(path / "_tok")
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=80,  # 6 * 8 time ids + 32 pooled text
        cross_attention_dim=64,
        norm_num_groups=1,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", timestep_spacing="leading", steps_offset=1
    )
    pipe = StableDiffusionXLPipeline(
        vae=_vae(),
        unet=unet,
        text_encoder=CLIPTextModel(_text_config(tokenizer)),
        text_encoder_2=CLIPTextModelWithProjection(_text_config(tokenizer, projection_dim=32)),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        scheduler=scheduler,
    )
    pipe.save_pretrained(path, safe_serialization=True)
    _rmtree(path / "_tok")
    return path


def build_inpaint(path: Path, seed: int = 0) -> Path:
    return build_sd(path, in_channels=9, seed=seed)


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def build_controlnet(path: Path, base: Path, seed: int = 1) -> Path:
    """A ControlNet for the tiny model at BASE (diffusers' `ControlNetModel.from_unet`), its zero
    convolutions given random weights so that the control map changes the pixels."""
    import torch
    from diffusers import ControlNetModel, UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_pretrained(Path(base) / "unet")
    net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32))  # the VAE's 2x
    with torch.no_grad():
        for block in [*net.controlnet_down_blocks, net.controlnet_mid_block, net.controlnet_cond_embedding.conv_out]:
            block.weight.normal_(0, 0.3)
    net.save_pretrained(path, safe_serialization=True)
    return Path(path)


def build_controlnet_union(path: Path, base: Path, seed: int = 2) -> Path:
    """A union ControlNet (diffusers' `ControlNetUnionModel`) for the tiny SDXL model at BASE: the UNet's
    encoder copied as `from_unet` does, its control-type transformer sized to the UNet's first block
    (32 channels), its zero convolutions given random weights so that each map changes the pixels."""
    import torch
    from diffusers import ControlNetUnionModel, UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_pretrained(Path(base) / "unet")
    shape = ControlNetUnionModel.from_unet(
        unet, conditioning_embedding_out_channels=(16, 32), load_weights_from_unet=False
    ).config
    width = unet.config.block_out_channels[0]
    args = {k: v for k, v in shape.items() if not k.startswith("_")}
    net = ControlNetUnionModel(**{**args, "num_trans_channel": width, "num_trans_head": 4, "num_proj_channel": width})
    net.conv_in.load_state_dict(unet.conv_in.state_dict())
    net.time_embedding.load_state_dict(unet.time_embedding.state_dict())
    net.down_blocks.load_state_dict(unet.down_blocks.state_dict(), strict=False)
    net.mid_block.load_state_dict(unet.mid_block.state_dict(), strict=False)
    with torch.no_grad():
        for block in [
            *net.controlnet_down_blocks,
            net.controlnet_mid_block,
            net.controlnet_cond_embedding.conv_out,
            net.spatial_ch_projs,
        ]:
            block.weight.normal_(0, 0.3)
    net.save_pretrained(path, safe_serialization=True)
    return Path(path)


def controlnet_to_single_file(cn_dir: Path, out: Path, prefix: str = "control_model.") -> Path:
    """The ControlNet folder CN_DIR as one .safetensors file in the original (lllyasviel / A1111) key layout
    (`input_hint_block.N`, `zero_convs.N.0`, `middle_block_out.0`, `input_blocks.N`, ...), each key under
    PREFIX: the inverse of diffusers' `convert_controlnet_checkpoint`, for the tiny ControlNets."""
    import re

    from safetensors.torch import load_file, save_file

    from models.ldm import unet_key

    config = json.loads((Path(cn_dir) / "config.json").read_text())
    state = load_file(str(Path(cn_dir) / "diffusion_pytorch_model.safetensors"))
    out_state = {}
    for key, value in state.items():
        if m := re.match(r"controlnet_cond_embedding\.conv_in\.(.*)", key):
            new = f"input_hint_block.0.{m[1]}"
        elif m := re.match(r"controlnet_cond_embedding\.blocks\.(\d+)\.(.*)", key):
            new = f"input_hint_block.{2 * (int(m[1]) + 1)}.{m[2]}"
        elif m := re.match(r"controlnet_cond_embedding\.conv_out\.(.*)", key):
            new = f"input_hint_block.14.{m[1]}"  # where diffusers' converter reads it (its hint blocks: 2..12)
        elif m := re.match(r"controlnet_down_blocks\.(\d+)\.(.*)", key):
            new = f"zero_convs.{m[1]}.0.{m[2]}"
        elif m := re.match(r"controlnet_mid_block\.(.*)", key):
            new = f"middle_block_out.0.{m[1]}"
        else:
            new = unet_key(key, config)
        out_state[prefix + new] = value.contiguous()
    save_file(out_state, str(out))
    return Path(out)


def build_unbuildable(path: Path, src: Path) -> Path:
    """A copy of the model at SRC whose VAE cannot be constructed (its config's channel counts don't divide
    into its norm groups): loading it raises inside diffusers' model constructor, after text encoder and
    UNet have loaded."""
    import json
    import shutil

    shutil.copytree(src, path)
    config_path = path / "vae" / "config.json"
    config = json.loads(config_path.read_text())
    config["block_out_channels"] = [1, 2]
    config_path.write_text(json.dumps(config))
    return path
