"""Tiny flow-matching models (SD 3.x and FLUX.1) with random weights, in the standard diffusers layout.

Real diffusers/transformers classes with the shapes of diffusers' own dummy components (CLIP and T5
text encoders shrunk to 32 wide), so every load goes through the code a user's real model goes
through. The T5 tokenizer is a small unigram vocabulary built here (no download).
"""

from __future__ import annotations

import json
import shutil
import string
from pathlib import Path

from tiny_models import _text_config, build_tokenizer

T5_WORDS = ["castle", "at", "dusk", "a", "red", "door", "watercolor", "oil", "painting", "house", "tree"]


def build_t5_tokenizer(path: Path):
    from transformers import T5Tokenizer

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [("▁" + w, -1.0) for w in T5_WORDS] + [(c, -2.0) for c in string.ascii_lowercase] + [("▁", -2.0)]
    tok = T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=64)
    tok.save_pretrained(path)
    return tok


def _t5(tokenizer):
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer),
            d_model=32,
            d_kv=8,
            d_ff=37,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
        )
    )


def _vae(latent_channels: int, scaling: float, shift: float):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=[8, 16],
        in_channels=3,
        out_channels=3,
        layers_per_block=1,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        latent_channels=latent_channels,
        norm_num_groups=4,
        sample_size=32,
        use_quant_conv=False,
        use_post_quant_conv=False,
        scaling_factor=scaling,
        shift_factor=shift,
    )


def build_sd3(path: Path, seed: int = 0) -> Path:
    """An SD-3-style model: MMDiT (patch 2), CLIP-L/G-like and T5 text encoders, a 16-channel VAE, 64x64
    native size."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection

    torch.manual_seed(seed)
    path = Path(path)
    clip = build_tokenizer(path / "_tok", max_length=77)
    t5 = build_t5_tokenizer(path / "_t5")
    transformer = SD3Transformer2DModel(
        sample_size=32,
        patch_size=2,
        in_channels=16,
        out_channels=16,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_projection_dim=32,
        joint_attention_dim=32,
        pooled_projection_dim=64,
    )
    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=_vae(16, 1.5305, 0.0609),  # 16 latent channels, as SD3's inpainting pipeline requires
        text_encoder=CLIPTextModelWithProjection(_text_config(clip, projection_dim=32)),
        text_encoder_2=CLIPTextModelWithProjection(_text_config(clip, projection_dim=32)),
        text_encoder_3=_t5(t5),
        tokenizer=clip,
        tokenizer_2=clip,
        tokenizer_3=t5,
    )
    pipe.save_pretrained(path, safe_serialization=True)
    shutil.rmtree(path / "_tok", ignore_errors=True)
    shutil.rmtree(path / "_t5", ignore_errors=True)
    return path


def build_flux(path: Path, *, guidance: bool = True, seed: int = 0) -> Path:
    """A FLUX.1-style model: double- and single-stream blocks, CLIP and T5 text encoders, 2x2 latent
    packing. guidance=True is dev-like (a guidance embedding), False schnell-like."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    path = Path(path)
    clip = build_tokenizer(path / "_tok", max_length=77)
    t5 = build_t5_tokenizer(path / "_t5")
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=[4, 4, 8],
        guidance_embeds=guidance,
    )
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    pipe = FluxPipeline(
        transformer=transformer,
        scheduler=scheduler,
        vae=_vae(4, 0.3611, 0.1159),
        text_encoder=CLIPTextModel(_text_config(clip)),
        text_encoder_2=_t5(t5),
        tokenizer=clip,
        tokenizer_2=t5,
    )
    pipe.save_pretrained(path, safe_serialization=True)
    shutil.rmtree(path / "_tok", ignore_errors=True)
    shutil.rmtree(path / "_t5", ignore_errors=True)
    return path


def write_transformer_files(base: Path, out: Path, seed: int = 1) -> dict[str, Path]:
    """Another random transformer for BASE (a tiny FLUX or SD3 folder), written as people download one:
    `folder` (diffusers layout, for the plain-diffusers reference), `safetensors` (one file) and `gguf`
    (one file, every 2-D weight whose rows are whole 32-value blocks quantized to Q8_0, the rest F32,
    as llama.cpp-style converters write them; written with the `gguf` package)."""
    import diffusers
    import gguf
    import torch
    from safetensors.torch import save_file

    base, out = Path(base), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = json.loads((base / "transformer" / "config.json").read_text())
    cls = getattr(diffusers, config["_class_name"])
    torch.manual_seed(seed)
    transformer = cls.from_config(config)
    transformer.save_pretrained(out / "transformer")
    state = {k: v.detach().contiguous() for k, v in transformer.state_dict().items()}
    save_file(state, out / "transformer.safetensors")
    writer = gguf.GGUFWriter(str(out / "transformer.gguf"), arch=config["_class_name"])
    for name, tensor in state.items():
        array = tensor.float().numpy()
        if array.ndim == 2 and array.shape[-1] % 32 == 0:
            q8 = gguf.GGMLQuantizationType.Q8_0
            writer.add_tensor(name, gguf.quants.quantize(array, q8), raw_dtype=q8)
        else:
            writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return {
        "folder": out / "transformer",
        "safetensors": out / "transformer.safetensors",
        "gguf": out / "transformer.gguf",
    }


def build_flux_fill(flux: Path, path: Path, seed: int = 2) -> Path:
    """A FLUX.1-Fill-style model from a tiny FLUX folder: its transformer also reads the masked image's
    latents and the mask (16 + 16 + 16 packed channels here; 64 + 64 + 256 in FLUX.1 Fill)."""
    import torch
    from diffusers import FluxTransformer2DModel

    path = Path(path)
    shutil.copytree(flux, path)
    config = json.loads((path / "transformer" / "config.json").read_text())
    shutil.rmtree(path / "transformer")
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel.from_config({**config, "in_channels": 48, "out_channels": 16})
    transformer.save_pretrained(path / "transformer")
    index = json.loads((path / "model_index.json").read_text())
    (path / "model_index.json").write_text(json.dumps({**index, "_class_name": "FluxFillPipeline"}, indent=2))
    return path
