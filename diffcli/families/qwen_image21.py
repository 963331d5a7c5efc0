"""Qwen-Image 2.1 (QwenImage21Pipeline): a single-stream, block-causal flow-matching transformer (~7B) reading a
Qwen3-VL model (8B) that encodes the prompt and any condition images together, with its own 16x VAE (64 latent
channels, RGBA: its images keep an alpha channel, which JPEG output flattens onto white). Not the Qwen-Image family:
another transformer class, text encoder and VAE, and one pipeline for text to image and for image-conditioned
generation (editing): its call's `image` list, read in order (the input first, then references).

Qwen's recommended settings (diffusers' documentation): 40 steps and no guidance. --cfg is true classifier-free
guidance (`true_cfg_scale`: a second transformer pass against the negative prompt, default " ", taken when --cfg is
above 1); no --cfg-cutoff (the pipeline decides on guidance once per call). Sizes are multiples of 32 (16x VAE,
latents grouped 2x2 against the vision tokens). A checkpoint whose model_index.json ships `sample_sigmas` (a
step-distilled release) samples on them: their count is its default --steps (diffcli.models.layout).

No img2img or inpaint pipeline, no transformer cache (its transformer keeps a key/value cache of the text and
condition tokens across steps, which the step-cache hooks know nothing of). LoRA files of its transformer load as
diffusers' QwenImageLoraLoaderMixin loads them; a transformer as one file (.safetensors in diffusers' or ComfyUI's
layout, or .gguf) runs with --base, as Qwen-Image's do.
transformers builds the Qwen3-VL processor (its video half) only with torchvision installed."""

from __future__ import annotations

from diffcli.families.spec import Alias, Configs, Family, linspace_sigmas

PIPELINE = "QwenImage21Pipeline"
# its call takes the input and the references in one list, `image` (the input first): each adds a block of
# vision and latent tokens to every step; up to 3 references beside the input (as FLUX.2 [klein])
REFERENCES = {"edit": ("image", 3)}


def detect(c: Configs) -> bool:
    return c.pipeline_class == PIPELINE


def detect_keys(names: list[str]) -> bool:
    """Its transformer's text-input norm, `txt_in.text_norm` (Qwen-Image's is `txt_norm`), which diffusers' own
    layout and ComfyUI's (under `model.diffusion_model.`, its MLPs' gate and up projections fused) both keep:
    diffusers' single-file code knows the family by it."""
    return "txt_in.text_norm.weight" in names


QWEN_IMAGE21 = Family(
    name="qwen-image-2.1",
    label="Qwen-Image 2.1",
    order=29,  # before Qwen-Image (30), whose pipelines are other classes
    detect=detect,
    detect_keys=detect_keys,
    defaults={"steps": 40, "cfg": 1.0, "negative": " ", "scheduler": "flow-euler"},
    flow=True,
    base_sigmas=linspace_sigmas,  # the pipeline's own sigmas when its config ships none (what --shift shifts)
    denoiser="transformer",
    bf16=True,
    sample_size=64,  # the pipeline's default output_resolution, 1024, over the 16x VAE
    patch_size=2,  # sizes: multiples of 32 (the pipeline rounds down to them)
    pipelines={"txt2img": PIPELINE, "edit": PIPELINE},
    references=REFERENCES,
    guidance="cfg",
    cfg_argument="true_cfg_scale",
    cfg_meaning="true classifier-free guidance scale (true_cfg_scale; default negative prompt ' '; default 1: off, "
    "as Qwen recommends)",
    options=frozenset({"negative", "lora", "quantize"}),
    tiny_decoder=None,
    single_file="transformer",
    base_examples="qwen-image-2.1",
    needs=("torchvision",),  # transformers builds the Qwen3-VL processor (its video half) only with it
    aliases={
        "qwen-image-2.1": Alias(
            "Qwen/Qwen-Image-2.1",
            "qwen-image-2.1",
            "Qwen-Image 2.1 (text to image and editing with references)",
            {"steps": 40, "cfg": 1.0, "negative": " ", "scheduler": "flow-euler", "width": 1024, "height": 1024},
        ),
    },
)
FAMILIES = (QWEN_IMAGE21,)
