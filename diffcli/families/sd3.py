"""Stable Diffusion 3.x: a flow-matching MMDiT transformer with CLIP-L, CLIP-G and T5-XXL text encoders.
--cfg is classifier-free guidance; only flow-matching samplers apply."""

from __future__ import annotations

from diffcli.families.spec import Alias, Configs, Family

# no DeepCache: no UNet to cache. SD 3.x's transformer has no CacheMixin and its pipelines set no cache context,
# but diffusers' TaylorSeer hooks work on it with the context diffcli sets (diffcli.cache._hooked); its first-block
# cache fails on SD 3.x's last block and no MagCache ratios exist for it
FLOW_OPTIONS = frozenset({"negative", "cfg-cutoff", "lora", "quantize", "taylorseer"})


def detect(c: Configs) -> bool:
    return c.pipeline_class.startswith("StableDiffusion3") or "text_encoder_3" in c.index


def detect_keys(names: list[str]) -> bool:
    """The original SAI layout (joint_blocks) or diffusers' own (asked after FLUX.1, whose diffusers
    layout has a context embedder and transformer blocks too)."""
    return any(k.startswith("joint_blocks.") for k in names) or (
        "context_embedder.weight" in names and any(k.startswith("transformer_blocks.") for k in names)
    )


def _alias(repo: str, label: str, steps: int, cfg: float) -> Alias:
    settings = {"steps": steps, "cfg": cfg, "scheduler": "flow-euler", "width": 1024, "height": 1024}
    return Alias(repo, "sd3", label, settings, gated=True)


FAMILIES = (
    Family(
        name="sd3",
        label="Stable Diffusion 3.x",
        order=20,
        detect=detect,
        detect_keys=detect_keys,
        defaults={"steps": 28, "cfg": 7.0, "scheduler": "flow-euler"},
        flow=True,
        denoiser="transformer",
        bf16=True,
        pipelines={
            "txt2img": "StableDiffusion3Pipeline",
            "img2img": "StableDiffusion3Img2ImgPipeline",
            "inpaint": "StableDiffusion3InpaintPipeline",
        },
        options=FLOW_OPTIONS,
        tiny_decoder="madebyollin/taesd3",
        single_file="transformer",
        base_examples="sd35-large or sd35-medium",
        aliases={
            "sd3-medium": _alias(
                "stabilityai/stable-diffusion-3-medium-diffusers", "Stable Diffusion 3 Medium", 28, 7.0
            ),
            "sd35-medium": _alias("stabilityai/stable-diffusion-3.5-medium", "Stable Diffusion 3.5 Medium", 40, 4.5),
            "sd35-large": _alias("stabilityai/stable-diffusion-3.5-large", "Stable Diffusion 3.5 Large", 28, 3.5),
            "sd35-large-turbo": _alias(
                "stabilityai/stable-diffusion-3.5-large-turbo",
                "Stable Diffusion 3.5 Large Turbo (4 steps, no guidance)",
                4,
                0.0,
            ),
        },
    ),
)
