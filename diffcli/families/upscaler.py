"""Diffusion upscalers: Stable Diffusion x4 (StableDiffusionUpscalePipeline) and the x2 latent upscaler
(StableDiffusionLatentUpscalePipeline). `diffcli upscale --method model` runs them over tiles."""

from __future__ import annotations

from diffcli.families.spec import Alias, Configs, Family


def detect(c: Configs) -> bool:
    return "Upscale" in c.pipeline_class


FAMILIES = (
    Family(
        name="upscaler",
        label="diffusion upscaler",
        order=30,
        detect=detect,
        defaults={"steps": 20, "cfg": 0.0, "scheduler": "euler"},
        aliases={
            "x4-upscaler": Alias(
                "stabilityai/stable-diffusion-x4-upscaler",
                "upscaler",
                "Stable Diffusion x4 upscaler",
                {"steps": 20, "cfg": 9.0, "scheduler": "ddim"},
            ),
        },
    ),
)
