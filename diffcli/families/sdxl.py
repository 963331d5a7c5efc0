"""Stable Diffusion XL: a larger UNet with two text encoders (CLIP ViT-L and OpenCLIP ViT-bigG), 1024 px.
The refiner is recognised in single files only (it is no family diffcli generates with on its own)."""

from __future__ import annotations

from diffcli.families.sd1 import UNET_OPTIONS
from diffcli.families.spec import Alias, Configs, Family


def detect(c: Configs) -> bool:
    return "XL" in c.pipeline_class or "text_encoder_2" in c.index


def detect_keys(names: list[str]) -> bool:
    return any(k.startswith("conditioner.embedders.1.") for k in names)


def detect_refiner_keys(names: list[str]) -> bool:
    return any(k.startswith("conditioner.embedders.0.model.") for k in names)


SDXL = Family(
    name="sdxl",
    label="Stable Diffusion XL",
    order=50,
    detect=detect,
    detect_keys=detect_keys,
    defaults={"steps": 25, "cfg": 6.0, "scheduler": "dpm++2m-karras"},
    pipelines={
        "txt2img": "StableDiffusionXLPipeline",
        "img2img": "StableDiffusionXLImg2ImgPipeline",
        "inpaint": "StableDiffusionXLInpaintPipeline",
    },
    options=UNET_OPTIONS,
    tiny_decoder="madebyollin/taesdxl",
    inpainting_models=("diffusers/stable-diffusion-xl-1.0-inpainting-0.1",),
    controlnets={
        "canny": "diffusers/controlnet-canny-sdxl-1.0",
        "depth": "diffusers/controlnet-depth-sdxl-1.0",
        "union": "xinsir/controlnet-union-sdxl-1.0",
    },
    single_file="checkpoint",
    native_size=1024,
    config_repo="stabilityai/stable-diffusion-xl-base-1.0",
    aliases={
        "sdxl": Alias(
            "stabilityai/stable-diffusion-xl-base-1.0",
            "sdxl",
            "Stable Diffusion XL base 1.0",
            {"steps": 30, "cfg": 6.0, "scheduler": "dpm++2m-karras", "width": 1024, "height": 1024},
        ),
        "sdxl-inpaint": Alias(
            "diffusers/stable-diffusion-xl-1.0-inpainting-0.1",
            "sdxl-inpaint",
            "SDXL inpainting 0.1",
            {"steps": 30, "cfg": 8.0, "scheduler": "dpm++2m-karras", "width": 1024, "height": 1024},
        ),
        "sdxl-turbo": Alias(
            "stabilityai/sdxl-turbo",
            "sdxl",
            "SDXL-Turbo (1-4 steps, no guidance)",
            {"steps": 1, "cfg": 0.0, "scheduler": "euler-a", "width": 512, "height": 512},
        ),
    },
)
# only told apart in single files (`models list`): no settings, pipelines or aliases of its own here
REFINER = Family(name="sdxl-refiner", label="Stable Diffusion XL refiner", order=55, detect_keys=detect_refiner_keys)
FAMILIES = (SDXL, REFINER)
