"""Built-in model aliases: short names for well-known hub repos, with recommended settings.

The generation commands use `defaults` when the user gives no --steps/--cfg/--scheduler.
Scheduler names are diffcli's (see docs/models.md): ddim, ddpm, pndm, lms, euler, euler-a, heun,
dpm++2m, dpm++2m-karras, dpm++2m-sde-karras, unipc, deis, lcm.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SCHEDULERS = (
    "ddim",
    "ddpm",
    "pndm",
    "lms",
    "euler",
    "euler-a",
    "heun",
    "dpm++2m",
    "dpm++2m-karras",
    "dpm++2m-sde-karras",
    "unipc",
    "deis",
    "lcm",
    "flow-euler",
)


@dataclass(frozen=True)
class Alias:
    repo_id: str
    family: str  # as `models list` detects it: sd1, sd2, sdxl, sd3, flux, sd1-inpaint, flux-inpaint, sd1-lcm, upscaler
    description: str
    defaults: dict = field(default_factory=dict)  # steps, cfg, scheduler, width, height
    gated: bool = False  # the hub asks users to accept a license first (then a token is needed to pull)


# Each family's dedicated inpainting models (9-channel UNets), best first: `diffcli outpaint` paints with
# the first one present on this machine (never fetched for it), see diffcli.inpaint_model.choose_model.
FAMILY_INPAINTING: dict[str, tuple[str, ...]] = {
    "sd1": ("stable-diffusion-v1-5/stable-diffusion-inpainting", "runwayml/stable-diffusion-inpainting"),
    "sd2": ("stabilityai/stable-diffusion-2-inpainting",),
    "sdxl": ("diffusers/stable-diffusion-xl-1.0-inpainting-0.1",),
}

ALIASES: dict[str, Alias] = {
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
    "sd21": Alias(
        "stabilityai/stable-diffusion-2-1",
        "sd2",
        "Stable Diffusion 2.1 (768, v-prediction)",
        {"steps": 25, "cfg": 7.0, "scheduler": "dpm++2m-karras", "width": 768, "height": 768},
    ),
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
    "sd-turbo": Alias(
        "stabilityai/sd-turbo",
        "sd2",
        "SD-Turbo (1-4 steps, no guidance)",
        {"steps": 1, "cfg": 0.0, "scheduler": "euler-a", "width": 512, "height": 512},
    ),
    "sdxl-turbo": Alias(
        "stabilityai/sdxl-turbo",
        "sdxl",
        "SDXL-Turbo (1-4 steps, no guidance)",
        {"steps": 1, "cfg": 0.0, "scheduler": "euler-a", "width": 512, "height": 512},
    ),
    "lcm-sd15": Alias(
        "SimianLuo/LCM_Dreamshaper_v7",
        "sd1-lcm",
        "Latent Consistency Model (Dreamshaper v7, SD1.5 base)",
        {"steps": 4, "cfg": 8.0, "scheduler": "lcm", "width": 512, "height": 512},
    ),
    # SD 3.x and FLUX.1 (flow-matching; docs/models.md). FLUX --cfg is its guidance embedding value.
    "sd3-medium": Alias(
        "stabilityai/stable-diffusion-3-medium-diffusers",
        "sd3",
        "Stable Diffusion 3 Medium",
        {"steps": 28, "cfg": 7.0, "scheduler": "flow-euler", "width": 1024, "height": 1024},
        gated=True,
    ),
    "sd35-medium": Alias(
        "stabilityai/stable-diffusion-3.5-medium",
        "sd3",
        "Stable Diffusion 3.5 Medium",
        {"steps": 40, "cfg": 4.5, "scheduler": "flow-euler", "width": 1024, "height": 1024},
        gated=True,
    ),
    "sd35-large": Alias(
        "stabilityai/stable-diffusion-3.5-large",
        "sd3",
        "Stable Diffusion 3.5 Large",
        {"steps": 28, "cfg": 3.5, "scheduler": "flow-euler", "width": 1024, "height": 1024},
        gated=True,
    ),
    "sd35-large-turbo": Alias(
        "stabilityai/stable-diffusion-3.5-large-turbo",
        "sd3",
        "Stable Diffusion 3.5 Large Turbo (4 steps, no guidance)",
        {"steps": 4, "cfg": 0.0, "scheduler": "flow-euler", "width": 1024, "height": 1024},
        gated=True,
    ),
    "flux-schnell": Alias(
        "black-forest-labs/FLUX.1-schnell",
        "flux",
        "FLUX.1 [schnell] (1-4 steps, no guidance; Apache-2.0)",
        {"steps": 4, "cfg": 0.0, "scheduler": "flow-euler", "width": 1024, "height": 1024},
    ),
    "flux-dev": Alias(
        "black-forest-labs/FLUX.1-dev",
        "flux",
        "FLUX.1 [dev] (guidance-distilled; non-commercial license)",
        {"steps": 28, "cfg": 3.5, "scheduler": "flow-euler", "width": 1024, "height": 1024},
        gated=True,
    ),
    "flux-fill": Alias(
        "black-forest-labs/FLUX.1-Fill-dev",
        "flux-inpaint",
        "FLUX.1 Fill [dev] inpainting",
        {"steps": 50, "cfg": 30.0, "scheduler": "flow-euler", "width": 1024, "height": 1024},
        gated=True,
    ),
    "x4-upscaler": Alias(
        "stabilityai/stable-diffusion-x4-upscaler",
        "upscaler",
        "Stable Diffusion x4 upscaler",
        {"steps": 20, "cfg": 9.0, "scheduler": "ddim"},
    ),
}


def alias_names() -> str:
    return ", ".join(ALIASES)


def alias_for_repo(repo_id: str) -> str | None:
    for name, alias in ALIASES.items():
        if alias.repo_id == repo_id:
            return name
    return None
