"""Z-Image (Tongyi-MAI): a 6B single-stream flow-matching transformer reading a Qwen3 text encoder's hidden
states, decoding with FLUX.1's VAE (16 latent channels).

Its pipelines guide as `cond + cfg·(cond − uncond)`: --cfg 0 turns guidance off (one pass per step, what the
distilled Z-Image-Turbo is made for), and a --cfg of g weighs like a classic classifier-free scale of g + 1.
With guidance on, a negative prompt applies. No --cfg-cutoff: the pipelines read a guidance scale of 1 as
guidance still on (they have a cutoff of their own, `cfg_truncation`), and their prompt embeddings are
lists, not the doubled batch diffcli.guidance halves. The transformer takes 2x2 latent patches."""

from __future__ import annotations

from diffcli.families.spec import Alias, Configs, Family

PIPELINES = {
    "txt2img": "ZImagePipeline",
    "img2img": "ZImageImg2ImgPipeline",
    "inpaint": "ZImageInpaintPipeline",
}


def detect(c: Configs) -> bool:
    """Z-Image's own pipelines (not Z-Image-Omni's, nor the ControlNet ones, which take other components)."""
    return c.pipeline_class in PIPELINES.values()


def detect_keys(names: list[str]) -> bool:
    """The caption and image pad tokens with the noise refiner: in the original layout and diffusers' alike
    (diffusers' single-file code knows Z-Image by `layers.0.adaLN_modulation.0.weight`, which other
    transformers share; these names are Z-Image's among the families here; Lumina 2, its ancestor, has
    them too)."""
    return "cap_pad_token" in names and any(k.startswith("noise_refiner.") for k in names)


def _alias(repo: str, label: str, steps: int, cfg: float) -> Alias:
    settings = {"steps": steps, "cfg": cfg, "scheduler": "flow-euler", "width": 1024, "height": 1024}
    return Alias(repo, "z-image", label, settings)


def base_sigmas(steps: int) -> list[float]:
    """The sigmas Z-Image's pipelines pass their scheduler when given none (diffusers' own function: a float32
    linspace(1, 1/steps))."""
    from diffusers.pipelines.z_image.pipeline_z_image import get_default_z_image_sigmas

    return get_default_z_image_sigmas(steps)


FAMILIES = (
    Family(
        name="z-image",
        label="Z-Image",
        order=30,
        detect=detect,
        detect_keys=detect_keys,
        # Z-Image-Turbo's settings (its model card: 8 steps, guidance 0), the release most people run
        defaults={"steps": 8, "cfg": 0.0, "scheduler": "flow-euler"},
        flow=True,
        base_sigmas=base_sigmas,  # its pipelines' own sigmas (what --shift shifts)
        denoiser="transformer",
        bf16=True,
        sample_size=128,  # the pipeline's default 1024x1024 over the VAE's 8: the transformer's config has none
        patch_size=2,  # its config names all_patch_size (2,), not patch_size
        pipelines=PIPELINES,
        guidance="cfg",
        cfg_meaning="guidance scale of cond + cfg·(cond − uncond): 0 turns it off (Turbo), g is a classic g + 1",
        # no fbc/taylorseer/magcache: diffusers' (0.42) Z-Image pipelines set no cache context
        options=frozenset({"negative", "lora", "quantize"}),
        tiny_decoder="madebyollin/taef1",  # FLUX.1's VAE
        single_file="transformer",
        base_examples="z-image-turbo",
        aliases={
            "z-image-turbo": _alias(
                "Tongyi-MAI/Z-Image-Turbo", "Z-Image-Turbo (8 steps, no guidance; Apache-2.0)", 8, 0.0
            ),
            "z-image": _alias(
                "Tongyi-MAI/Z-Image", "Z-Image, the base model (CFG, negative prompt; Apache-2.0)", 50, 4.0
            ),
        },
    ),
)
