"""Tiny instruction-editing models with random weights, in the standard diffusers layout: InstructPix2Pix
(an SD-1-style UNet reading 4 + 4 latent channels) and FLUX.1 Kontext (the tiny FLUX.1 of tiny_flow_models,
saved as a FluxKontextPipeline). Real diffusers classes with small configs, so every load goes through the
code a user's real model goes through."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from tiny_models import _rmtree, _text_config, _vae, build_tokenizer


def build_ip2p(path: Path, seed: int = 0) -> Path:
    """An InstructPix2Pix-style model (32x32 images): tiny_models.build_sd's components, its UNet with 8 input
    channels (the noisy latents and the input image's), saved by StableDiffusionInstructPix2PixPipeline with
    the Euler ancestral scheduler timbrooks/instruct-pix2pix ships."""
    import torch
    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionInstructPix2PixPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    path = Path(path)
    tokenizer = build_tokenizer(path / "_tok")
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=16,
        in_channels=8,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        norm_num_groups=32,
    )
    scheduler = EulerAncestralDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1
    )
    pipe = StableDiffusionInstructPix2PixPipeline(
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


def build_kontext(path: Path, seed: int = 0) -> Path:
    """A FLUX.1-Kontext-style model: tiny_flow_models.build_flux's dev-like model (a guidance embedding) saved
    as FluxKontextPipeline, whose transformer reads the input image's packed latents after the noise's (the
    same transformer shape: Kontext dev is FLUX.1 dev's architecture)."""
    from tiny_flow_models import build_flux

    path = build_flux(Path(path), guidance=True, seed=seed)
    index = json.loads((path / "model_index.json").read_text())
    (path / "model_index.json").write_text(json.dumps({**index, "_class_name": "FluxKontextPipeline"}, indent=2))
    return path


def build_qwen_image_edit(path: Path, *, plus: bool = True, seed: int = 0) -> Path:
    """A Qwen-Image-Edit-style model (PLUS: the multi-image 2509/2511 releases, QwenImageEditPlusPipeline; else
    QwenImageEditPipeline): tiny_flow_models.build_qwen_image's transformer, VAE and scheduler, with a Qwen2.5-VL
    text encoder whose vision tower reads the input (and reference) images, and the Qwen2-VL processor that
    puts their tokens into the prompt (vision markers added to the tiny tokenizer). Needs torchvision (the
    processor's video half: transformers will not build the processor without it)."""
    import shutil

    import torch
    from diffusers import DiffusionPipeline, QwenImageEditPipeline, QwenImageEditPlusPipeline
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    from tiny_flow_models import build_qwen_image

    path = Path(path)
    base = DiffusionPipeline.from_pretrained(build_qwen_image(path.with_name(path.name + "-base"), seed=seed))
    tokenizer = base.tokenizer
    markers = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>", *markers]})
    ids = {m: tokenizer.convert_tokens_to_ids(m) for m in markers}
    config = base.text_encoder.config.to_dict()
    config["text_config"]["vocab_size"] = config["vocab_size"] = len(tokenizer)
    config.update(
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    for key in ("architectures", "model_type", "transformers_version"):
        config.pop(key, None)
    torch.manual_seed(seed)
    text_encoder = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(**config)).eval()
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(),
        chat_template=tokenizer.chat_template,
    )
    cls = QwenImageEditPlusPipeline if plus else QwenImageEditPipeline
    pipe = cls(
        scheduler=base.scheduler,
        vae=base.vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        processor=processor,
        transformer=base.transformer,
    )
    pipe.save_pretrained(path, safe_serialization=True)
    shutil.rmtree(path.with_name(path.name + "-base"), ignore_errors=True)
    return path


# ---------------------------------------------------------------- inputs, and plain diffusers to compare with


def noise_image(path: Path, size: tuple[int, int], seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def plain_ip2p(model: Path, image: Path, instruction: str, seed: int, cfg: float = 7.5, image_cfg: float = 1.5):
    """What diffusers' own InstructPix2Pix pipeline makes with the same arguments (its own Euler a scheduler)."""
    import torch
    from diffusers import StableDiffusionInstructPix2PixPipeline

    pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(str(model), torch_dtype=torch.float32)
    with Image.open(image) as img:
        init = img.convert("RGB")
    out = pipe(
        instruction,
        image=init,
        num_inference_steps=2,
        guidance_scale=cfg,
        image_guidance_scale=image_cfg,
        generator=torch.Generator("cpu").manual_seed(seed),
    ).images[0]
    return np.asarray(out, dtype=np.int16)


def plain_kontext(model: Path, image: Path, instruction: str, seed: int, mask=None, reference=None):
    """What diffusers' own FluxKontextPipeline (with a mask: FluxKontextInpaintPipeline) makes with the same
    arguments: the input's size, kept (max_area that size, _auto_resize off)."""
    import torch
    from diffusers import FluxKontextInpaintPipeline, FluxKontextPipeline

    cls = FluxKontextInpaintPipeline if mask is not None else FluxKontextPipeline
    pipe = cls.from_pretrained(str(model), torch_dtype=torch.float32)
    with Image.open(image) as img:
        init = img.convert("RGB")
    extra = {}
    if mask is not None:
        with Image.open(mask) as m:
            extra["mask_image"] = m.convert("L")
    if reference is not None:
        with Image.open(reference) as r:
            extra["image_reference"] = r.convert("RGB")
    width, height = init.size
    out = pipe(
        prompt=instruction,
        image=init,
        width=width,
        height=height,
        max_area=width * height,
        _auto_resize=False,
        num_inference_steps=2,
        guidance_scale=2.5,
        generator=torch.Generator("cpu").manual_seed(seed),
        **extra,
    ).images[0]
    return np.asarray(out, dtype=np.int16)


# what Qwen-Image-Edit's family passes for --cfg 4 (its default): true CFG with the negative prompt " "
QWEN_EDIT_GUIDANCE = {"negative_prompt": " ", "true_cfg_scale": 4.0}


def plain_edit(model, images, instruction: str, seed: int, size: tuple[int, int], pipe=None, **guidance):
    """What the model's own pipeline (model_index.json's class; or PIPE, already loaded) makes with IMAGES (paths:
    the input, then references; one image is passed alone, several as one list) at SIZE in 2 steps, with the
    family's GUIDANCE arguments (Qwen-Image-Edit: negative_prompt " ", true_cfg_scale 4; FLUX.2: guidance_scale)."""
    import torch
    from diffusers import DiffusionPipeline

    pipe = pipe or DiffusionPipeline.from_pretrained(str(model), torch_dtype=torch.float32)
    inputs = [Image.open(p).convert("RGB") for p in images]
    out = pipe(
        image=(inputs if len(inputs) > 1 else inputs[0]) if inputs else None,
        prompt=instruction,
        width=size[0],
        height=size[1],
        num_inference_steps=2,
        generator=torch.Generator("cpu").manual_seed(seed),
        **guidance,
    ).images[0]
    return np.asarray(out, dtype=np.int16)
