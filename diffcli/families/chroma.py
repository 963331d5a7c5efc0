"""Chroma: a FLUX.1-schnell-derived flow-matching transformer (8.9B) with a T5-XXL text encoder only.

Unlike FLUX.1 it is not guidance-distilled: --cfg is real classifier-free guidance (a second transformer
pass per step with the negative prompt), so a negative prompt and a guidance cutoff apply. Its
pipelines pack 2x2 latent patches into tokens, as FLUX.1's do, and it decodes with FLUX.1's VAE."""

from __future__ import annotations

from diffcli.families.spec import Alias, Configs, Family, linspace_sigmas


def detect(c: Configs) -> bool:
    return c.pipeline_class.startswith("Chroma")


def detect_keys(names: list[str]) -> bool:
    """Chroma's distilled guidance layer (the modulation approximator), in the original layout and
    diffusers' alike; asked before FLUX.1, whose double/single blocks Chroma's files share."""
    return any(k.startswith("distilled_guidance_layer.") for k in names)


# Recommended settings as the Chroma1 model cards publish them (40 steps, guidance 3.0, 1024x1024;
# well-known values, not fetched here: no network when this was written).
def _alias(repo: str, label: str) -> Alias:
    settings = {"steps": 40, "cfg": 3.0, "scheduler": "flow-euler", "width": 1024, "height": 1024}
    return Alias(repo, "chroma", label, settings)


FAMILIES = (
    Family(
        name="chroma",
        label="Chroma",
        order=8,  # before FLUX.1 (order 10): a Chroma single file also has double/single blocks
        detect=detect,
        detect_keys=detect_keys,
        defaults={"steps": 40, "cfg": 3.0, "scheduler": "flow-euler"},
        flow=True,
        base_sigmas=linspace_sigmas,  # its pipelines' own sigmas (what --shift shifts)
        denoiser="transformer",
        bf16=True,
        sample_size=128,  # the pipeline's default_sample_size: the transformer's config has none
        patch_size=2,
        pipelines={
            "txt2img": "ChromaPipeline",
            "img2img": "ChromaImg2ImgPipeline",
            "inpaint": "ChromaInpaintPipeline",
        },
        guidance="cfg",
        cfg_meaning="classifier-free guidance scale (a second pass with the negative prompt; 1 turns it off)",
        # no fbc/taylorseer/magcache: diffusers' (0.42) Chroma pipelines set no cache context, which its
        # transformer cache hooks need
        options=frozenset({"negative", "cfg-cutoff", "lora", "quantize"}),
        tiny_decoder="madebyollin/taef1",  # FLUX.1's VAE
        single_file="transformer",
        base_examples="chroma-hd",
        aliases={
            "chroma-hd": _alias("lodestones/Chroma1-HD", "Chroma1-HD (Apache-2.0; real CFG, negative prompt)"),
            "chroma-base": _alias("lodestones/Chroma1-Base", "Chroma1-Base (the base for fine-tuning; Apache-2.0)"),
        },
    ),
)
