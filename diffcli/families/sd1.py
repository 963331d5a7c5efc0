"""Stable Diffusion 1.x: a UNet with CLIP ViT-L text features (768-wide cross-attention), 512 px."""

from __future__ import annotations

from dataclasses import replace

from diffcli.families.spec import Alias, Configs, Family

# weighted-prompts: A1111 prompt weights as embeddings, through its CLIP text encoders (diffcli.prompts)
UNET_OPTIONS = frozenset({"negative", "cfg-cutoff", "deepcache", "lora", "quantize", "distill", "weighted-prompts"})
# diffusers' AutoPipeline names these "stable-diffusion"; SD 2.x and the bundled models use them too
PIPELINES = {
    "txt2img": "StableDiffusionPipeline",
    "img2img": "StableDiffusionImg2ImgPipeline",
    "inpaint": "StableDiffusionInpaintPipeline",
}
DEFAULTS = {"steps": 25, "cfg": 7.0, "scheduler": "dpm++2m-karras"}


def detect(c: Configs) -> bool:
    return bool(c.unet)  # asked last of the UNet families: any other UNet model


def detect_keys(names: list[str]) -> bool:
    return any(k.startswith("cond_stage_model.transformer.") for k in names)


IP2P_PIPELINE = "StableDiffusionInstructPix2PixPipeline"


def is_instruct_pix2pix(c: Configs) -> bool:
    """InstructPix2Pix: its own pipeline class, or a UNet reading the input image's latents beside the noise
    (4 + 4 channels)."""
    return c.pipeline_class == IP2P_PIPELINE or c.unet.get("in_channels") == 8


SD1 = Family(
    name="sd1",
    label="Stable Diffusion 1.x",
    order=70,
    detect=detect,
    detect_keys=detect_keys,
    defaults=DEFAULTS,
    pipelines=PIPELINES,
    options=UNET_OPTIONS,
    tiny_decoder="madebyollin/taesd",
    inpainting_models=("stable-diffusion-v1-5/stable-diffusion-inpainting", "runwayml/stable-diffusion-inpainting"),
    controlnets={
        "seg": "lllyasviel/control_v11p_sd15_seg",
        "canny": "lllyasviel/control_v11p_sd15_canny",
        "depth": "lllyasviel/control_v11f1p_sd15_depth",
    },
    single_file="checkpoint",
    native_size=512,
    config_repo="stable-diffusion-v1-5/stable-diffusion-v1-5",
    aliases={
        "sd15": Alias(
            "stable-diffusion-v1-5/stable-diffusion-v1-5",
            "sd1",
            "Stable Diffusion 1.5",
            {"steps": 25, "cfg": 7.0, "scheduler": "dpm++2m-karras", "width": 512, "height": 512},
        ),
        "sd15-inpaint": Alias(
            "stable-diffusion-v1-5/stable-diffusion-inpainting",
            "sd1-inpaint",
            "Stable Diffusion 1.5 inpainting",
            {"steps": 25, "cfg": 7.5, "scheduler": "dpm++2m-karras", "width": 512, "height": 512},
        ),
        "lcm-sd15": Alias(
            "SimianLuo/LCM_Dreamshaper_v7",
            "sd1-lcm",
            "Latent Consistency Model (Dreamshaper v7, SD1.5 base)",
            {"steps": 4, "cfg": 8.0, "scheduler": "lcm", "width": 512, "height": 512},
        ),
        "instruct-pix2pix": Alias(
            "timbrooks/instruct-pix2pix",
            "sd1-ip2p",
            "InstructPix2Pix: edits an image as an instruction says (diffcli edit)",
            {"steps": 20, "cfg": 7.5, "image_cfg": 1.5, "scheduler": "euler-a"},
        ),
    },
)
# InstructPix2Pix (Brooks et al. 2023): an SD 1.x UNet that also reads the input image's latents; made for
# instruction editing only. --cfg is its text guidance (guidance_scale), --image-cfg its image guidance
# (image_guidance_scale: how closely the output keeps to the input); both defaults are its pipeline's.
IP2P = replace(
    SD1,
    name="sd1-ip2p",
    label="InstructPix2Pix (SD 1.x)",
    variant_of="sd1",
    detect=None,
    matches=is_instruct_pix2pix,
    detect_keys=None,
    defaults={"steps": 20, "cfg": 7.5, "image_cfg": 1.5, "scheduler": "euler-a"},
    pipelines={"edit": IP2P_PIPELINE},
    one_task={IP2P_PIPELINE: "edit"},
    options=frozenset({"negative", "lora", "quantize", "image-cfg"}),
    inpainting_models=(),
    controlnets={},
    single_file=None,
    aliases={},
)
FAMILIES = (SD1, IP2P)
