"""Stable Diffusion 2.x: a UNet with OpenCLIP ViT-H text features (1024-wide cross-attention), 768 px."""

from __future__ import annotations

from diffcli.families.sd1 import DEFAULTS, PIPELINES, UNET_OPTIONS
from diffcli.families.spec import Alias, Configs, Family


def detect(c: Configs) -> bool:
    return c.unet.get("cross_attention_dim") == 1024


def detect_keys(names: list[str]) -> bool:
    return any(k.startswith("cond_stage_model.model.") for k in names)


FAMILIES = (
    Family(
        name="sd2",
        label="Stable Diffusion 2.x",
        order=60,
        detect=detect,
        detect_keys=detect_keys,
        defaults=DEFAULTS,
        pipelines=PIPELINES,
        options=UNET_OPTIONS,
        tiny_decoder="madebyollin/taesd",
        inpainting_models=("stabilityai/stable-diffusion-2-inpainting",),
        controlnets={"canny": "thibaud/controlnet-sd21-canny-diffusers"},
        single_file="checkpoint",
        native_size=768,
        config_repo="stabilityai/stable-diffusion-2-1",
        aliases={
            "sd21": Alias(
                "stabilityai/stable-diffusion-2-1",
                "sd2",
                "Stable Diffusion 2.1 (768, v-prediction)",
                {"steps": 25, "cfg": 7.0, "scheduler": "dpm++2m-karras", "width": 768, "height": 768},
            ),
            "sd-turbo": Alias(
                "stabilityai/sd-turbo",
                "sd2",
                "SD-Turbo (1-4 steps, no guidance)",
                {"steps": 1, "cfg": 0.0, "scheduler": "euler-a", "width": 512, "height": 512},
            ),
        },
    ),
)
