"""Qwen-Image: a 20B MMDiT flow-matching transformer reading a Qwen2.5-VL text encoder's hidden states, with
its own (Wan-style) VAE: 16 latent channels, a scale factor of 8, latents packed 2x2 into tokens.

--cfg is true classifier-free guidance, the pipelines' `true_cfg_scale` (their `guidance_scale` is for
guidance-distilled transformers, which Qwen-Image's is not): a second transformer pass with the negative
prompt, taken only when there is a negative prompt and the scale is above 1: the family's default negative
prompt is " " (Qwen's examples pass it), so --cfg guides as it does for other families unless --negative
"" turns the second pass off. No
--cfg-cutoff: the pipelines decide on guidance once per call, so a step callback cannot stop it. Qwen-Image's
pipelines set diffusers' cache context, so its transformer takes the FirstBlockCache and TaylorSeer hooks
(MagCache needs magnitude ratios diffusers ships only for FLUX.1).

Qwen-Image-Edit (QwenImageEditPipeline) and its multi-image releases 2509/2511 (QwenImageEditPlusPipeline) are
variants: the same transformer architecture fine-tuned to edit, whose Qwen2.5-VL text encoder also sees the input
image (and, Plus, up to two reference images beside it: the pipeline's one `image` list, the input first) through
a Qwen2-VL processor; made for `diffcli edit` only. transformers builds that processor only with torchvision
installed. Qwen-Image 2.1 (QwenImage21Pipeline) is not this family but its own (qwen_image21.py): another
transformer class, a Qwen3-VL text encoder with a processor, a 16x VAE. Nor are the layered pipelines."""

from __future__ import annotations

from dataclasses import replace

from diffcli.families.spec import Alias, Configs, Family, linspace_sigmas

TRUE_CFG = "true classifier-free guidance scale (true_cfg_scale; default negative prompt ' '; 1 turns it off)"

PIPELINES = {
    "txt2img": "QwenImagePipeline",
    "img2img": "QwenImageImg2ImgPipeline",
    "inpaint": "QwenImageInpaintPipeline",
}


EDIT_PIPELINE = "QwenImageEditPipeline"
EDIT_PLUS_PIPELINE = "QwenImageEditPlusPipeline"


def detect(c: Configs) -> bool:
    return c.pipeline_class in (*PIPELINES.values(), EDIT_PIPELINE, EDIT_PLUS_PIPELINE)


def is_edit(c: Configs) -> bool:
    return c.pipeline_class == EDIT_PIPELINE


def is_edit_plus(c: Configs) -> bool:
    return c.pipeline_class == EDIT_PLUS_PIPELINE


def detect_keys(names: list[str]) -> bool:
    """The text-input norm and the image-stream modulation of its blocks: diffusers' own names, which its
    single files (ComfyUI's too, under `model.diffusion_model.`) keep: diffusers loads them unconverted.
    Qwen-Image 2.1's transformer names its text norm `txt_in.text_norm`."""
    return "txt_norm.weight" in names and any(k.startswith("transformer_blocks.0.img_mod.") for k in names)


def _alias(repo: str, label: str) -> Alias:
    # the model card's: 50 steps, true_cfg_scale 4.0 with negative prompt " ", 1328x1328 for 1:1
    settings = {"steps": 50, "cfg": 4.0, "negative": " ", "scheduler": "flow-euler", "width": 1328, "height": 1328}
    return Alias(repo, "qwen-image", label, settings)


QWEN_IMAGE = Family(
    name="qwen-image",
    label="Qwen-Image",
    order=30,
    detect=detect,
    detect_keys=detect_keys,
    defaults={"steps": 50, "cfg": 4.0, "negative": " ", "scheduler": "flow-euler"},  # " ": CFG on (docstring)
    flow=True,
    base_sigmas=linspace_sigmas,  # its pipelines' own sigmas (what --shift shifts)
    denoiser="transformer",
    bf16=True,
    sample_size=128,  # the pipeline's default_sample_size: the transformer's config has none
    patch_size=2,
    pipelines=PIPELINES,
    guidance="cfg",
    cfg_argument="true_cfg_scale",
    cfg_meaning=TRUE_CFG,
    options=frozenset({"negative", "lora", "quantize", "fbc", "taylorseer"}),
    tiny_decoder=None,  # no tiny decoder for its VAE
    single_file="transformer",
    base_examples="qwen-image",
    aliases={
        "qwen-image": _alias("Qwen/Qwen-Image", "Qwen-Image (text rendering; Apache-2.0)"),
        "qwen-image-2512": _alias("Qwen/Qwen-Image-2512", "Qwen-Image-2512, the December 2025 update (Apache-2.0)"),
    },
)


def _edit_alias(repo: str, family: str, label: str, steps: int) -> Alias:
    # the model cards': true_cfg_scale 4.0 with negative prompt " "; the output keeps the input's size
    return Alias(repo, family, label, {"steps": steps, "cfg": 4.0, "negative": " ", "scheduler": "flow-euler"})


# Qwen-Image-Edit (August 2025): one input image, no references
EDIT = replace(
    QWEN_IMAGE,
    name="qwen-image-edit",
    label="Qwen-Image-Edit",
    variant_of="qwen-image",
    detect=None,
    matches=is_edit,
    detect_keys=None,
    pipelines={"edit": EDIT_PIPELINE},
    one_task={EDIT_PIPELINE: "edit"},
    single_file=None,
    needs=("torchvision",),  # transformers builds the Qwen2-VL processor (its video half) only with it
    aliases={
        "qwen-image-edit": _edit_alias(
            "Qwen/Qwen-Image-Edit", "qwen-image-edit", "Qwen-Image-Edit (instruction editing; Apache-2.0)", 50
        ),
    },
)
# Qwen-Image-Edit-2509 / -2511: the input and up to two reference images ("the person in image 2 ...")
EDIT_PLUS = replace(
    EDIT,
    name="qwen-image-edit-plus",
    label="Qwen-Image-Edit Plus (2509, 2511)",
    matches=is_edit_plus,
    defaults={**QWEN_IMAGE.defaults, "steps": 40},
    pipelines={"edit": EDIT_PLUS_PIPELINE},
    one_task={EDIT_PLUS_PIPELINE: "edit"},
    references={"edit": ("image", 2)},
    aliases={
        "qwen-image-edit-2509": _edit_alias(
            "Qwen/Qwen-Image-Edit-2509",
            "qwen-image-edit-plus",
            "Qwen-Image-Edit-2509 (editing with up to 2 reference images; Apache-2.0)",
            40,
        ),
        "qwen-image-edit-2511": _edit_alias(
            "Qwen/Qwen-Image-Edit-2511",
            "qwen-image-edit-plus",
            "Qwen-Image-Edit-2511 (editing with up to 2 reference images; Apache-2.0)",
            40,
        ),
    },
)
FAMILIES = (QWEN_IMAGE, EDIT, EDIT_PLUS)
