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
    (one file, every weight matrix whose rows are whole 32-value blocks quantized to Q8_0, the rest F32 (biases,
    norms, and one-row tensors such as Z-Image's pad tokens, which converters keep unquantized), as
    llama.cpp-style converters write them; written with the `gguf` package)."""
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
        if array.ndim == 2 and array.shape[0] > 1 and array.shape[-1] % 32 == 0:
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


def build_chroma(path: Path, seed: int = 0) -> Path:
    """A Chroma-style model: FLUX-like double- and single-stream blocks with a distilled guidance layer,
    a T5 text encoder only, 2x2 latent packing (the shapes of diffusers' own Chroma dummy components)."""
    import torch
    from diffusers import ChromaPipeline, ChromaTransformer2DModel, FlowMatchEulerDiscreteScheduler

    torch.manual_seed(seed)
    path = Path(path)
    t5 = build_t5_tokenizer(path / "_t5")
    transformer = ChromaTransformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        axes_dims_rope=[4, 4, 8],
        approximator_hidden_dim=32,
        approximator_layers=1,
        approximator_num_channels=16,
    )
    pipe = ChromaPipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(),  # Chroma1-HD's: no shift, no dynamic shifting
        vae=_vae(4, 0.3611, 0.1159),
        text_encoder=_t5(t5),
        tokenizer=t5,
    )
    pipe.save_pretrained(path, safe_serialization=True)
    shutil.rmtree(path / "_t5", ignore_errors=True)
    # Chroma1-HD's transformer/config.json keeps FLUX.1's `guidance_embeds: false` (diffusers ignores it when
    # building the model but keeps it in the config), and diffusers' (0.42) ChromaInpaintPipeline reads it
    config = json.loads((path / "transformer" / "config.json").read_text())
    (path / "transformer" / "config.json").write_text(json.dumps({**config, "guidance_embeds": False}, indent=2))
    return path


QWEN_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


# The words of Qwen-Image's prompt template, whole tokens as in Qwen's vocabulary: its pipelines drop the
# template's first 34 tokens, which these make the system prompt exactly (the prompt itself stays bytes).
QWEN_TEMPLATE_WORDS = ["system", "user", "assistant", "Describe", " the", " image", " by", " detailing", " color"]
QWEN_TEMPLATE_WORDS += [" shape", " size", " texture", " quantity", " text", " spatial", " relationships", " of"]
QWEN_TEMPLATE_WORDS += [" objects", " and", " background"]


def build_qwen_tokenizer(path: Path):
    """A Qwen2 byte-level BPE tokenizer with a tiny vocabulary (every byte, no merges, the template's words)
    and Qwen's chat markers, built here (no download); its chat template is the plain ChatML one Z-Image's
    pipeline uses."""
    from tokenizers import AddedToken
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import Qwen2Tokenizer

    vocab = {c: i for i, c in enumerate(sorted(ByteLevel.alphabet()))}
    tok = Qwen2Tokenizer(vocab=vocab, merges=[], model_max_length=1024)
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.add_tokens([AddedToken(w, normalized=False, special=False) for w in QWEN_TEMPLATE_WORDS])
    tok.chat_template = QWEN_CHAT_TEMPLATE
    tok.save_pretrained(path)
    return type(tok).from_pretrained(path)


def build_zimage(path: Path, seed: int = 0) -> Path:
    """A Z-Image-style model: a single-stream transformer (2x2 patches, refiner layers) reading a Qwen3
    text encoder's hidden states, FLUX.1's kind of VAE with 16 latent channels (the shapes of diffusers'
    own Z-Image dummy components)."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel
    from transformers import Qwen3Config, Qwen3Model

    torch.manual_seed(seed)
    path = Path(path)
    tokenizer = build_qwen_tokenizer(path / "_qwen")
    transformer = ZImageTransformer2DModel(
        all_patch_size=(2,),
        all_f_patch_size=(1,),
        in_channels=16,
        dim=32,
        n_layers=2,
        n_refiner_layers=1,
        n_heads=2,
        n_kv_heads=2,
        norm_eps=1e-5,
        qk_norm=True,
        cap_feat_dim=16,
        rope_theta=256.0,
        t_scale=1000.0,
        axes_dims=[8, 4, 4],
        axes_lens=[256, 32, 32],
    )
    with torch.no_grad():  # created with torch.empty: fixed, as diffusers' tests do
        transformer.x_pad_token.copy_(torch.ones_like(transformer.x_pad_token))
        transformer.cap_pad_token.copy_(torch.ones_like(transformer.cap_pad_token))
    text_encoder = Qwen3Model(
        Qwen3Config(
            hidden_size=16,
            intermediate_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            vocab_size=len(tokenizer),
            max_position_embeddings=1024,
        )
    )
    pipe = ZImagePipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),  # Z-Image-Turbo's: shift 3, no dynamic shifting
        vae=_vae(16, 0.3611, 0.1159),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
    )
    pipe.save_pretrained(path, safe_serialization=True)
    shutil.rmtree(path / "_qwen", ignore_errors=True)
    return path


def build_qwen_image(path: Path, seed: int = 0) -> Path:
    """A Qwen-Image-style model: an MMDiT transformer (2x2 latent packing) reading a Qwen2.5-VL text
    encoder's hidden states, the Qwen-Image (Wan-style, 3-D causal) VAE with a scale factor of 8 (the shapes
    of diffusers' own Qwen-Image dummy components, one more VAE level)."""
    import torch
    from diffusers import (
        AutoencoderKLQwenImage,
        FlowMatchEulerDiscreteScheduler,
        QwenImagePipeline,
        QwenImageTransformer2DModel,
    )
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(seed)
    path = Path(path)
    tokenizer = build_qwen_tokenizer(path / "_qwen")
    transformer = QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=16,
        out_channels=4,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=3,
        joint_attention_dim=16,
        guidance_embeds=False,
        axes_dims_rope=(8, 4, 4),
    )
    z_dim = 4
    vae = AutoencoderKLQwenImage(
        base_dim=8,
        z_dim=z_dim,
        dim_mult=[1, 2, 4, 4],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        latents_mean=[0.0] * z_dim,
        latents_std=[1.0] * z_dim,
    )
    config = Qwen2_5_VLConfig(
        text_config={
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"},
            "rope_theta": 1000000.0,
            "vocab_size": len(tokenizer),
            "bos_token_id": None,
            "eos_token_id": tokenizer.convert_tokens_to_ids("<|im_end|>"),
        },
        vision_config={"depth": 2, "hidden_size": 16, "intermediate_size": 16, "num_heads": 2, "out_hidden_size": 16},
        hidden_size=16,
        vocab_size=len(tokenizer),
    )
    scheduler = FlowMatchEulerDiscreteScheduler(  # Qwen-Image's: dynamic shifting, exponential
        base_image_seq_len=256,
        base_shift=0.5,
        max_image_seq_len=8192,
        max_shift=0.9,
        shift=1.0,
        shift_terminal=0.02,
        time_shift_type="exponential",
        use_dynamic_shifting=True,
    )
    pipe = QwenImagePipeline(
        transformer=transformer,
        scheduler=scheduler,
        vae=vae,
        text_encoder=Qwen2_5_VLForConditionalGeneration(config).eval(),
        tokenizer=tokenizer,
    )
    pipe.save_pretrained(path, safe_serialization=True)
    shutil.rmtree(path / "_qwen", ignore_errors=True)
    return path


def _flux2_parts(hidden: int, guidance: bool):
    """FLUX.2's tiny transformer (reading three text-encoder layers HIDDEN wide, side by side; a guidance
    embedding for [dev]), VAE (4 latent channels, patchified 2x2) and scheduler (dynamic shifting: the pipeline
    passes mu), made in this order (the seed set before decides their weights)."""
    from diffusers import AutoencoderKLFlux2, FlowMatchEulerDiscreteScheduler, Flux2Transformer2DModel

    transformer = Flux2Transformer2DModel(
        patch_size=1,
        in_channels=16,  # 4 latent channels x the 2x2 patch
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=3 * hidden,  # three hidden-state layers side by side
        timestep_guidance_channels=32,
        axes_dims_rope=(4, 4, 4, 4),
        guidance_embeds=guidance,
    )
    vae = AutoencoderKLFlux2(
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=32,
    )
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
        max_image_seq_len=4096,
    )  # fmt: skip
    return transformer, vae, scheduler


def build_flux2_klein(path: Path, *, distilled: bool = True, seed: int = 0) -> Path:
    """A FLUX.2-[klein]-style model: FLUX.2's double- and single-stream transformer (no guidance embedding)
    reading the hidden states of three layers (9, 18, 27, the pipeline's default) of a Qwen3 causal LM, so
    the tiny text encoder has 28 layers, 16 wide; the FLUX.2 VAE (its latents patchified 2x2, batch-normed)
    with 4 latent channels. distilled=True writes `is_distilled` into model_index.json as the step-distilled
    klein 4B/9B have it (the base models run classifier-free guidance)."""
    import torch
    from diffusers import Flux2KleinPipeline
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    path = Path(path)
    tokenizer = build_qwen_tokenizer(path / "_qwen")
    hidden = 16
    transformer, vae, scheduler = _flux2_parts(hidden, guidance=False)
    text_encoder = Qwen3ForCausalLM(
        Qwen3Config(
            hidden_size=hidden,
            intermediate_size=16,
            num_hidden_layers=28,
            num_attention_heads=2,
            num_key_value_heads=2,
            head_dim=8,
            vocab_size=len(tokenizer),
            max_position_embeddings=1024,
        )
    ).eval()
    pipe = Flux2KleinPipeline(
        transformer=transformer,
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        is_distilled=distilled,
    )
    pipe.save_pretrained(path, safe_serialization=True)
    shutil.rmtree(path / "_qwen", ignore_errors=True)
    return path


MISTRAL_CHAT_TEMPLATE = (  # the shape of messages Flux2Pipeline sends (content: a list of typed parts)
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% for c in m['content'] %}"
    "{% if c['type'] == 'text' %}{{ c['text'] }}{% else %}[IMG]{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
)


def build_flux2_dev(path: Path, seed: int = 0) -> Path:
    """A FLUX.2-[dev]-style model: FLUX.2's transformer with a guidance embedding, reading the hidden states of
    layers 10, 20 and 30 (the pipeline's default) of a Mistral 3 model (a 31-layer, 16-wide Mistral text model
    with a tiny Pixtral vision tower) through a Pixtral processor, and the FLUX.2 VAE with 4 latent channels.
    Needs torchvision (transformers builds the Pixtral processor only with it)."""
    import torch
    from diffusers import Flux2Pipeline
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration, PixtralImageProcessor, PixtralProcessor

    torch.manual_seed(seed)
    path = Path(path)
    tokenizer = build_qwen_tokenizer(path / "_tok")
    tokenizer.add_special_tokens(
        {"additional_special_tokens": ["<|im_start|>", "<|im_end|>", "[IMG]", "[IMG_BREAK]", "[IMG_END]"]}
    )
    tokenizer.chat_template = MISTRAL_CHAT_TEMPLATE
    processor = PixtralProcessor(
        image_processor=PixtralImageProcessor(patch_size=16), tokenizer=tokenizer, patch_size=16,
        chat_template=MISTRAL_CHAT_TEMPLATE,
    )  # fmt: skip
    hidden = 16
    config = Mistral3Config(
        text_config={
            "model_type": "mistral", "hidden_size": hidden, "intermediate_size": 16, "num_hidden_layers": 31,
            "num_attention_heads": 2, "num_key_value_heads": 2, "head_dim": 8, "vocab_size": len(tokenizer),
            "max_position_embeddings": 1024,
        },
        vision_config={
            "model_type": "pixtral", "hidden_size": 16, "intermediate_size": 16, "num_hidden_layers": 1,
            "num_attention_heads": 2, "head_dim": 8, "patch_size": 16, "image_size": 64,
        },
        image_token_index=tokenizer.convert_tokens_to_ids("[IMG]"),
    )  # fmt: skip
    transformer, vae, scheduler = _flux2_parts(hidden, guidance=True)
    pipe = Flux2Pipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=Mistral3ForConditionalGeneration(config).eval(),
        tokenizer=processor,
        transformer=transformer,
    )
    pipe.save_pretrained(path, safe_serialization=True)
    shutil.rmtree(path / "_tok", ignore_errors=True)
    return path


QWEN3_VL_CHAT_TEMPLATE = (  # ChatML whose content is a string or a list of typed parts (Qwen3-VL's messages)
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for c in m['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% else %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_qwen_image21(path: Path, seed: int = 0) -> Path:
    """A Qwen-Image-2.1-style model: the single-stream block-causal QwenImage21Transformer2DModel reading a
    Qwen3-VL model's hidden states (prompt and condition images encoded together, through a Qwen3-VL processor),
    and the 16x Qwen-Image 2.1 VAE (RGBA; 8 latent channels here): the shapes of diffusers' own dummy components.
    Needs torchvision (transformers builds the Qwen3-VL processor, its video half, only with it)."""
    import torch
    from diffusers import (
        AutoencoderKLQwenImage21,
        FlowMatchEulerDiscreteScheduler,
        QwenImage21Pipeline,
        QwenImage21Transformer2DModel,
    )
    from transformers import (
        Qwen2VLImageProcessor,
        Qwen3VLConfig,
        Qwen3VLForConditionalGeneration,
        Qwen3VLProcessor,
        Qwen3VLVideoProcessor,
    )

    path = Path(path)
    tokenizer = build_qwen_tokenizer(path / "_qwen")
    markers = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>", *markers]})
    tokenizer.chat_template = QWEN3_VL_CHAT_TEMPLATE
    ids = {m: tokenizer.convert_tokens_to_ids(m) for m in markers}
    z_dim, hidden = 8, 16  # z_dim not 4: the pipeline takes a 4-channel condition image for latents
    torch.manual_seed(seed)
    transformer = QwenImage21Transformer2DModel(
        patch_size=1,
        in_channels=z_dim,
        out_channels=z_dim,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        context_in_dim=hidden,
        mlp_ratio=2,
        axes_dims_rope=(4, 6, 6),
    )
    vae = AutoencoderKLQwenImage21(
        base_dim=4,
        decoder_base_dim=4,
        z_dim=z_dim,
        dim_mult=[1, 1, 1, 1, 1],  # four downsamples: the 16x the pipeline assumes
        num_res_blocks=1,
        attn_scales=[],
        temperal_downsample=[False, True, True, True],
        latents_mean=[0.0] * z_dim,
        latents_std=[1.0] * z_dim,
    )
    config = Qwen3VLConfig(
        text_config={
            "hidden_size": hidden,
            "intermediate_size": 16,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "head_dim": 8,
            "vocab_size": len(tokenizer),
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [1, 1, 2]},
        },
        vision_config={
            "depth": 2,
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_heads": 2,
            "out_hidden_size": hidden,
            "patch_size": 16,  # one merged vision token covers 32 pixels: a 2x2 group of 16x latents
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "num_position_embeddings": 64,
            "deepstack_visual_indexes": [0],
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    processor = Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(
            patch_size=16, merge_size=2, temporal_patch_size=2, min_pixels=32 * 32, max_pixels=64 * 64
        ),
        tokenizer=tokenizer,
        video_processor=Qwen3VLVideoProcessor(patch_size=16, merge_size=2, temporal_patch_size=2),
        chat_template=QWEN3_VL_CHAT_TEMPLATE,
    )
    pipe = QwenImage21Pipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=Qwen3VLForConditionalGeneration(config).eval(),
        processor=processor,
        transformer=transformer,
    )
    pipe.save_pretrained(path, safe_serialization=True)
    shutil.rmtree(path / "_qwen", ignore_errors=True)
    return path
