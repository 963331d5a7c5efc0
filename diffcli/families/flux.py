"""FLUX.1: a flow-matching transformer with CLIP-L and T5-XXL text encoders, guidance-distilled.

dev and Fill take --cfg as the value of the transformer's guidance embedding (one pass per step:
nothing to cut off, no negative prompt); schnell has no guidance input and ignores --cfg. Fill is
made for inpainting only. The pipelines pack 2x2 latent patches into tokens."""

from __future__ import annotations

from dataclasses import replace

from diffcli.families.spec import Alias, Configs, Family, linspace_sigmas

EMBEDDED = "guidance embedding value (guidance-distilled; no negative prompt)"


def detect(c: Configs) -> bool:
    return c.pipeline_class.startswith("Flux") and not c.pipeline_class.startswith("Flux2")


def detect_keys(names: list[str]) -> bool:
    return any(k.startswith(("double_blocks.", "single_transformer_blocks.")) for k in names)


def is_fill(c: Configs) -> bool:
    return "Fill" in c.pipeline_class


def is_schnell(c: Configs) -> bool:
    return not c.transformer.get("guidance_embeds")


def is_kontext(c: Configs) -> bool:
    return c.pipeline_class == "FluxKontextPipeline"


def _alias(repo: str, family: str, label: str, steps: int, cfg: float, gated: bool = True) -> Alias:
    settings = {"steps": steps, "cfg": cfg, "scheduler": "flow-euler", "width": 1024, "height": 1024}
    return Alias(repo, family, label, settings, gated=gated)


FLUX = Family(
    name="flux",
    label="FLUX.1",
    order=10,
    detect=detect,
    detect_keys=detect_keys,
    defaults={"steps": 28, "cfg": 3.5, "scheduler": "flow-euler"},
    flow=True,
    base_sigmas=linspace_sigmas,  # its pipelines' own sigmas (what --shift shifts)
    denoiser="transformer",
    bf16=True,
    sample_size=128,  # the pipeline's default_sample_size: the transformer's config has none
    patch_size=2,
    pipelines={"txt2img": "FluxPipeline", "img2img": "FluxImg2ImgPipeline", "inpaint": "FluxInpaintPipeline"},
    one_task={"FluxFillPipeline": "inpaint"},
    guidance="embedded",
    cfg_meaning=EMBEDDED,
    # diffusers' transformer caches hook FLUX.1's transformer (its pipelines set their cache context)
    options=frozenset({"lora", "quantize", "fbc", "taylorseer", "magcache"}),
    mag_ratios="FLUX_MAG_RATIOS",
    tiny_decoder="madebyollin/taef1",
    single_file="transformer",
    base_examples="flux-dev or flux-schnell",
    aliases={
        "flux-schnell": _alias(
            "black-forest-labs/FLUX.1-schnell",
            "flux",
            "FLUX.1 [schnell] (1-4 steps, no guidance; Apache-2.0)",
            4,
            0.0,
            False,
        ),
        "flux-dev": _alias(
            "black-forest-labs/FLUX.1-dev", "flux", "FLUX.1 [dev] (guidance-distilled; non-commercial license)", 28, 3.5
        ),
        "flux-fill": _alias(
            "black-forest-labs/FLUX.1-Fill-dev", "flux-inpaint", "FLUX.1 Fill [dev] inpainting", 50, 30.0
        ),
        "flux-kontext": Alias(
            "black-forest-labs/FLUX.1-Kontext-dev",
            "flux-kontext",
            "FLUX.1 Kontext [dev]: edits an image as an instruction says (diffcli edit; non-commercial license)",
            {"steps": 28, "cfg": 2.5, "scheduler": "flow-euler"},
            gated=True,
        ),
    },
)
# variants: FLUX.1's data with settings of their own (asked in this order: a Fill model is Fill)
FILL = replace(
    FLUX,
    name="flux-fill",
    label="FLUX.1 Fill",
    variant_of="flux",
    detect=None,
    matches=is_fill,
    detect_keys=None,
    defaults={"steps": 50, "cfg": 30.0, "scheduler": "flow-euler"},
    aliases={},
)
SCHNELL = replace(
    FLUX,
    name="flux-schnell",
    label="FLUX.1 schnell",
    variant_of="flux",
    detect=None,
    matches=is_schnell,
    detect_keys=None,
    defaults={"steps": 4, "cfg": 0.0, "scheduler": "flow-euler"},
    guidance="none",
    cfg_meaning="ignored (FLUX.1 schnell takes no guidance)",
    aliases={},
)
# FLUX.1 Kontext: FLUX.1 dev's transformer trained to read the input image's tokens beside the noise, so an
# instruction edits it. Its edit pipeline takes the one input image (no references); with --mask, diffusers'
# Kontext inpainting pipeline repaints the masked area and takes one reference image (-r: image_reference).
# It also draws from text alone, as FLUX.1 dev does (txt2img, img2img, inpaint: FLUX.1's pipelines).
KONTEXT = replace(
    FLUX,
    name="flux-kontext",
    label="FLUX.1 Kontext",
    variant_of="flux",
    detect=None,
    matches=is_kontext,
    detect_keys=None,
    defaults={"steps": 28, "cfg": 2.5, "scheduler": "flow-euler"},
    pipelines={**FLUX.pipelines, "edit": "FluxKontextPipeline", "edit-inpaint": "FluxKontextInpaintPipeline"},
    references={"edit-inpaint": ("image_reference", 1)},
    aliases={},
)
FAMILIES = (FLUX, FILL, KONTEXT, SCHNELL)
