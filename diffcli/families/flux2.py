"""FLUX.2 [klein]: Black Forest Labs' compact (4B, 9B) FLUX.2 transformer reading the hidden states of three
layers of a Qwen3 causal LM (9, 18 and 27, side by side), with FLUX.2's VAE: 32 latent channels, a scale
factor of 8, its latents patchified 2x2 into 128-channel tokens (sizes: multiples of 16).

Two kinds of release share the pipelines: the step-distilled klein 4B/9B (`"is_distilled": true` in their
model_index.json: 4 steps, one transformer pass per step, --cfg ignored) and the undistilled base models
(klein-base 4B/9B: ~50 steps, classifier-free guidance, --cfg 4). The pipelines take no negative prompt:
the base models guide against the empty prompt (a --negative is ignored with a warning), and they decide on
guidance once per call (no --cfg-cutoff). They set diffusers' cache context (cond / uncond), so the
transformer takes the TaylorSeer hook; not FirstBlockCache (diffusers' 0.42 hook fails on FLUX.2's blocks,
which hand it their outputs as a list) nor MagCache (calibrated ratios for FLUX.1 only).

No img2img: Flux2KleinPipeline's `image` is reference images the new image is conditioned on (editing),
not a starting point noised by a strength (AutoPipelineForImage2Image maps klein to it all the same); diffcli
refuses img2img on these models. Inpaint is Flux2KleinInpaintPipeline (strength-based, a mask). `diffcli edit`
runs Flux2KleinPipeline with the input image as its one conditioning image (no reference images, -r, and no
--mask yet: the pipeline takes the input and the references in one list, its `image`).

FLUX.2 [dev] (Flux2Pipeline, family `flux2-dev`): the 32B transformer of the same design with a guidance
embedding (guidance-distilled: --cfg is the embedded value, one pass per step, no negative prompt), reading
three layers (10, 20, 30) of a Mistral Small 3.1 (24B) text encoder through its Pixtral processor, which
transformers builds only with torchvision. txt2img, and `diffcli edit` with the input and up to 9 reference
images in the pipeline's `image` list (BFL: up to 10 images in all); no img2img or inpaint pipeline. Its
pipeline sets no cache context: no transformer cache.

FLUX.2 [klein] 9B KV (Flux2KleinKVPipeline, family `flux2-klein-kv`): klein 9B with its own pipeline, which caches
the reference images' attention keys and values on the first step (below)."""

from __future__ import annotations

from dataclasses import replace

from diffcli.families.spec import Alias, Configs, Family, linspace_sigmas

PIPELINES = {"txt2img": "Flux2KleinPipeline", "inpaint": "Flux2KleinInpaintPipeline"}
# `diffcli edit`: the same pipeline, the input image and any -r reference images as its conditioning images
EDIT = {"edit": "Flux2KleinPipeline"}
# its call takes them in one list, `image` (the input first); the pipeline sets no limit, each one adds its
# tokens to every step: up to 3 references beside the input (BFL's klein examples use one to three)
REFERENCES = {"edit": ("image", 3)}


def detect(c: Configs) -> bool:
    """klein's own pipelines (FLUX.2 [dev]'s Flux2Pipeline and the KV-cache klein pipeline are families of their
    own)."""
    return c.pipeline_class in PIPELINES.values()


def detect_keys(names: list[str]) -> bool:
    """FLUX.2's shared single-stream modulation (`single_stream_modulation.lin.*` in BFL's layout, `.linear.*`
    in diffusers'; diffusers' single-file code knows FLUX.2 by it), without FLUX.2 [dev]'s guidance embedding
    (`guidance_in.*`; diffusers: `time_guidance_embed.guidance_embedder.*`). Asked before FLUX.1, whose
    `double_blocks.*` / `single_transformer_blocks.*` names FLUX.2's files share."""
    if not any(k.startswith("single_stream_modulation.") for k in names):
        return False
    return not any(k.startswith(("guidance_in.", "time_guidance_embed.guidance_embedder.")) for k in names)


def is_base(c: Configs) -> bool:
    """An undistilled klein: its pipeline config (model_index.json) has no `"is_distilled": true` (the
    pipelines' default is False: they then run classifier-free guidance)."""
    return not c.index.get("is_distilled")


def _alias(repo: str, label: str, *, base: bool, gated: bool) -> Alias:
    # the model cards': distilled 4 steps (guidance 1.0 there, which the pipelines ignore: diffcli records 0),
    # base 50 steps with guidance 4.0; 1024x1024
    steps, cfg = (50, 4.0) if base else (4, 0.0)
    settings = {"steps": steps, "cfg": cfg, "scheduler": "flow-euler", "width": 1024, "height": 1024}
    return Alias(repo, "flux2-klein", label, settings, gated=gated)


NON_COMMERCIAL = "FLUX non-commercial license"
KLEIN = Family(
    name="flux2-klein",
    label="FLUX.2 [klein]",
    order=9,  # before FLUX.1 (order 10): a FLUX.2 single file also has double/single blocks
    detect=detect,
    detect_keys=detect_keys,
    # the step-distilled klein's settings (4 steps, no guidance), the release most people run
    defaults={"steps": 4, "cfg": 0.0, "scheduler": "flow-euler"},
    flow=True,
    base_sigmas=linspace_sigmas,  # its pipelines' own sigmas (what --shift shifts)
    denoiser="transformer",
    bf16=True,
    sample_size=128,  # the pipeline's default_sample_size: the transformer's config has none
    patch_size=2,  # the VAE's latents are patchified 2x2 (the transformer's own patch_size is 1)
    pipelines={**PIPELINES, **EDIT},
    references=REFERENCES,
    guidance="none",
    cfg_meaning="ignored (the step-distilled klein runs one pass per step; the base models take CFG)",
    options=frozenset({"lora", "quantize", "taylorseer"}),
    tiny_decoder=None,  # none for FLUX.2's 32-channel VAE
    single_file="transformer",
    base_examples="flux2-klein-4b or flux2-klein-base-4b",
    aliases={
        "flux2-klein-4b": _alias(
            "black-forest-labs/FLUX.2-klein-4B",
            "FLUX.2 [klein] 4B (4 steps, step-distilled; Apache-2.0)",
            base=False,
            gated=False,
        ),
        "flux2-klein-9b": _alias(
            "black-forest-labs/FLUX.2-klein-9B",
            f"FLUX.2 [klein] 9B (4 steps, step-distilled; {NON_COMMERCIAL})",
            base=False,
            gated=True,
        ),
        "flux2-klein-base-4b": _alias(
            "black-forest-labs/FLUX.2-klein-base-4B",
            "FLUX.2 [klein] Base 4B (undistilled: CFG, for fine-tuning; Apache-2.0)",
            base=True,
            gated=False,
        ),
        "flux2-klein-base-9b": _alias(
            "black-forest-labs/FLUX.2-klein-base-9B",
            f"FLUX.2 [klein] Base 9B (undistilled: CFG, for fine-tuning; {NON_COMMERCIAL})",
            base=True,
            gated=True,
        ),
    },
)
# the undistilled base models: same pipelines, real classifier-free guidance against the empty prompt
BASE = replace(
    KLEIN,
    name="flux2-klein-base",
    label="FLUX.2 [klein] Base",
    variant_of="flux2-klein",
    detect=None,
    matches=is_base,
    detect_keys=None,
    defaults={"steps": 50, "cfg": 4.0, "scheduler": "flow-euler"},
    guidance="cfg",
    cfg_meaning="classifier-free guidance scale against the empty prompt (no negative prompt; 1 turns it off)",
    aliases={},
)
KV_PIPELINE = "Flux2KleinKVPipeline"


def detect_kv(c: Configs) -> bool:
    return c.pipeline_class == KV_PIPELINE


# FLUX.2 [klein] 9B KV: klein 9B made to cache the reference images' attention keys and values on the first step
# and reuse them (BFL: 1.4-2.7x faster edits with references). Its own pipeline, step-distilled only (no guidance
# argument at all), for text to image and edits with references; no inpaint pipeline. Its transformer takes no
# step cache (the pipeline calls it in key/value extract and cached modes).
KV = replace(
    KLEIN,
    name="flux2-klein-kv",
    label="FLUX.2 [klein] KV",
    order=9,
    detect=detect_kv,
    detect_keys=None,  # its transformer files are klein 9B's, known as flux2-klein
    pipelines={"txt2img": KV_PIPELINE, "edit": KV_PIPELINE},
    options=frozenset({"lora", "quantize"}),
    single_file=None,
    base_examples=None,
    aliases={
        "flux2-klein-9b-kv": _alias(
            "black-forest-labs/FLUX.2-klein-9b-kv",
            f"FLUX.2 [klein] 9B KV (4 steps, fast edits with references; {NON_COMMERCIAL})",
            base=False,
            gated=True,
        ),
    },
)
DEV_PIPELINE = "Flux2Pipeline"


def detect_dev(c: Configs) -> bool:
    return c.pipeline_class == DEV_PIPELINE


def detect_dev_keys(names: list[str]) -> bool:
    """FLUX.2's single-stream modulation with [dev]'s guidance embedding (BFL's `guidance_in.*`, diffusers'
    `time_guidance_embed.guidance_embedder.*`): klein's files have the one without the other."""
    if not any(k.startswith("single_stream_modulation.") for k in names):
        return False
    return any(k.startswith(("guidance_in.", "time_guidance_embed.guidance_embedder.")) for k in names)


DEV = Family(
    name="flux2-dev",
    label="FLUX.2 [dev]",
    order=8,
    detect=detect_dev,
    detect_keys=detect_dev_keys,
    defaults={"steps": 50, "cfg": 4.0, "scheduler": "flow-euler"},  # the model card's
    flow=True,
    base_sigmas=linspace_sigmas,
    denoiser="transformer",
    bf16=True,
    sample_size=128,
    patch_size=2,
    pipelines={"txt2img": DEV_PIPELINE, "edit": DEV_PIPELINE},
    references={"edit": ("image", 9)},
    guidance="embedded",
    cfg_meaning="guidance embedding value (guidance-distilled; no negative prompt)",
    options=frozenset({"lora", "quantize"}),
    tiny_decoder=None,
    single_file="transformer",  # its transformer alone (BFL's layout or diffusers'; .gguf too), with --base
    base_examples="flux2-dev",
    needs=("torchvision",),  # transformers builds the Pixtral processor only with it
    aliases={
        "flux2-dev": Alias(
            "black-forest-labs/FLUX.2-dev",
            "flux2-dev",
            f"FLUX.2 [dev] 32B (text to image and editing with references; {NON_COMMERCIAL})",
            {"steps": 50, "cfg": 4.0, "scheduler": "flow-euler", "width": 1024, "height": 1024},
            gated=True,
        ),
    },
)
FAMILIES = (KLEIN, BASE, KV, DEV)
