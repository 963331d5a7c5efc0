"""Turn a tiny diffusers SD1 model into an original-layout (LDM) single-file checkpoint.

The inverse of diffusers' own single-file conversion, for the tiny test models only
(SD1-style UNet, AutoencoderKL, CLIP text encoder)."""

from __future__ import annotations

import json
import re
from pathlib import Path

RESNET = [
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("time_emb_proj", "emb_layers.1"),
    ("conv_shortcut", "skip_connection"),
]
UNET_STATIC = {
    "time_embedding.linear_1.weight": "time_embed.0.weight",
    "time_embedding.linear_1.bias": "time_embed.0.bias",
    "time_embedding.linear_2.weight": "time_embed.2.weight",
    "time_embedding.linear_2.bias": "time_embed.2.bias",
    "conv_in.weight": "input_blocks.0.0.weight",
    "conv_in.bias": "input_blocks.0.0.bias",
    "conv_norm_out.weight": "out.0.weight",
    "conv_norm_out.bias": "out.0.bias",
    "conv_out.weight": "out.2.weight",
    "conv_out.bias": "out.2.bias",
}
VAE_STATIC = {"conv_norm_out": "norm_out"}
VAE_ATTN = [("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out")]


def _resnet(rest: str) -> str:
    for new, old in RESNET:
        if rest.startswith(new + "."):
            return old + rest[len(new) :]
    return rest


def unet_key(key: str, config: dict) -> str:
    if key in UNET_STATIC:
        return UNET_STATIC[key]
    n = config["layers_per_block"] + 1
    if m := re.match(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
        b, j, rest = int(m[1]), int(m[2]), m[3]
        return f"input_blocks.{n * b + j + 1}.0.{_resnet(rest)}"
    if m := re.match(r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.*)", key):
        b, j, rest = int(m[1]), int(m[2]), m[3]
        return f"input_blocks.{n * b + j + 1}.1.{rest}"
    if m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key):
        return f"input_blocks.{n * (int(m[1]) + 1)}.0.op.{m[2]}"
    if m := re.match(r"mid_block\.resnets\.(\d+)\.(.*)", key):
        return f"middle_block.{2 * int(m[1])}.{_resnet(m[2])}"
    if m := re.match(r"mid_block\.attentions\.0\.(.*)", key):
        return f"middle_block.1.{m[1]}"
    if m := re.match(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
        b, j, rest = int(m[1]), int(m[2]), m[3]
        return f"output_blocks.{n * b + j}.0.{_resnet(rest)}"
    if m := re.match(r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.*)", key):
        b, j, rest = int(m[1]), int(m[2]), m[3]
        return f"output_blocks.{n * b + j}.1.{rest}"
    if m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key):
        b = int(m[1])
        has_attn = "CrossAttn" in config["up_block_types"][b]
        return f"output_blocks.{n * b + n - 1}.{2 if has_attn else 1}.conv.{m[2]}"
    raise KeyError(key)


def vae_key(key: str, config: dict):
    """(ldm key, needs 1x1 conv shape)"""
    n_up = len(config["up_block_types"])
    part, _, rest = key.partition(".")
    for new, old in VAE_STATIC.items():
        if rest.startswith(new + "."):
            return f"{part}.{old}{rest[len(new) :]}", False
    if m := re.match(r"(down|up)_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", rest):
        kind, i, j, tail = m[1], int(m[2]), int(m[3]), m[4]
        idx = i if kind == "down" else n_up - 1 - i
        return f"{part}.{kind}.{idx}.block.{j}.{tail.replace('conv_shortcut', 'nin_shortcut')}", False
    if m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", rest):
        return f"{part}.down.{m[1]}.downsample.conv.{m[2]}", False
    if m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", rest):
        return f"{part}.up.{n_up - 1 - int(m[1])}.upsample.conv.{m[2]}", False
    if m := re.match(r"mid_block\.resnets\.(\d+)\.(.*)", rest):
        return f"{part}.mid.block_{int(m[1]) + 1}.{m[2].replace('conv_shortcut', 'nin_shortcut')}", False
    if m := re.match(r"mid_block\.attentions\.0\.(.*)", rest):
        tail = m[1]
        for new, old in VAE_ATTN:
            if tail.startswith(new + "."):
                tail = old + tail[len(new) :]
                break
        return f"{part}.mid.attn_1.{tail}", tail.endswith("weight") and not tail.startswith("norm")
    return key, False


def to_ldm(model_dir: Path, out: Path) -> Path:
    from safetensors.torch import load_file, save_file

    model_dir = Path(model_dir)
    state = {}
    unet_cfg = json.loads((model_dir / "unet" / "config.json").read_text())
    for k, v in load_file(model_dir / "unet" / "diffusion_pytorch_model.safetensors").items():
        state["model.diffusion_model." + unet_key(k, unet_cfg)] = v
    vae_cfg = json.loads((model_dir / "vae" / "config.json").read_text())
    for k, v in load_file(model_dir / "vae" / "diffusion_pytorch_model.safetensors").items():
        ldm, conv = vae_key(k, vae_cfg)
        state["first_stage_model." + ldm] = v[:, :, None, None] if conv and v.ndim == 2 else v
    for k, v in load_file(model_dir / "text_encoder" / "model.safetensors").items():
        key = k if k.startswith("text_model.") else "text_model." + k  # transformers 5 drops the prefix
        state["cond_stage_model.transformer." + key] = v
    save_file({k: v.contiguous() for k, v in state.items()}, str(out))
    return out
