"""What a model family is, as data: the `Family` record every family module declares, and `Alias`.

A family module (diffcli/families/<name>.py, or a plugin's module named by the `diffcli.families`
entry-point group) holds `FAMILIES`: a tuple of `Family` records, the family and any variants of it
with settings of their own (FLUX.1 schnell and Fill of FLUX.1; LCM of any UNet family). No torch, no
weights: detection reads JSON configs and tensor names only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

# The options a family may take (Family.options); the checks before loading ask for these by name.
# deepcache: diffcli's UNet cache; fbc, taylorseer, magcache: diffusers' transformer cache hooks (diffcli.cache)
OPTIONS = (
    "negative",
    "cfg-cutoff",
    "deepcache",
    "fbc",
    "taylorseer",
    "magcache",
    "lora",
    "quantize",
    "distill",
    "weighted-prompts",
    "image-cfg",
)
GUIDANCE = ("cfg", "embedded", "none")  # classifier-free; a guidance embedding (FLUX.1 dev); none


@dataclass(frozen=True)
class Configs:
    """A diffusers model folder's JSON files, as read before any weights: what detection looks at."""

    index: dict  # model_index.json
    unet: dict = field(default_factory=dict)  # unet/config.json ({} when the denoiser is a transformer)
    transformer: dict = field(default_factory=dict)  # transformer/config.json
    scheduler: dict = field(default_factory=dict)  # scheduler/scheduler_config.json

    @property
    def pipeline_class(self) -> str:
        return str(self.index.get("_class_name", ""))


@dataclass(frozen=True)
class Alias:
    """A short name for a well-known hub repo of the family, with the settings it is best used with."""

    repo_id: str
    family: str  # as `models list` shows it: sd1, sd1-inpaint, sd1-lcm, flux, flux-inpaint, upscaler, ...
    description: str
    defaults: dict = field(default_factory=dict)  # steps, cfg, scheduler, width, height
    gated: bool = False  # the hub asks users to accept a license first (then a token is needed to pull)


@dataclass(frozen=True)
class Family:
    """Everything diffcli knows about one model family (or one variant of a family).

    Args:
        name: the family's name as diffcli records and shows it (sd1, sdxl, flux, ...).
        label: a few words for people ("Stable Diffusion XL").
        order: the order families are asked to recognise a model in: lower first. Built-in families
            use 10..90 (most specific first); a plugin's default, 0, is asked before all of them.
        variant_of: for a variant (same denoiser, other settings), the family it varies; "*" for any
            family (LCM); a variant is never detected on its own, only chosen by `matches`.
        detect: whether a diffusers folder's configs are this family's (None: never detected from a folder).
        matches: a variant: whether a model of its family is this variant (read from the same configs).
        detect_keys: whether a single-file checkpoint's tensor names are this family's.
        defaults: the family's recommended steps, cfg and scheduler (settings.py layers them).
        flow: sampled with flow-matching schedulers (--shift scales the model's own shift).
        denoiser: "unet" or "transformer".
        bf16: released in bfloat16 (float16 overflows in parts of it): `--dtype auto` on a GPU that
            computes bfloat16 picks it.
        sample_size: the latent size when the denoiser's config has none.
        patch_size: latent pixels per token side when fixed by the pipeline (FLUX packs 2x2), else None.
        pipelines: diffusers pipeline class per task (txt2img, img2img, inpaint), as AutoPipeline maps them;
            a family that edits by instruction (`diffcli edit`) also names "edit" (and "edit-inpaint", the
            pipeline of an edit with --mask, where it has one).
        one_task: pipeline classes of models made for a single task, used as they are for it.
        references: for each pipeline (by its key in `pipelines`) that takes reference images beside its
            input (`diffcli edit -r`): (the call's argument, how many it takes).
        sampler_rule: whether --scheduler is checked against the family (flow or not) before loading.
        guidance: what --cfg drives: "cfg" (classifier-free), "embedded" (a guidance embedding), "none".
        cfg_meaning: what --cfg means for people (docs, `models info`).
        cfg_argument: the keyword of the pipelines' call that takes --cfg ("guidance_scale"; Qwen-Image's
            true classifier-free guidance: "true_cfg_scale").
        options: the options of OPTIONS the family takes ("image-cfg": an edit's --image-cfg, the
            pipeline's image_guidance_scale).
        tiny_decoder: the hub repo of its tiny VAE decoder (TAESD), if one exists.
        inpainting_models: its dedicated inpainting models, best first (outpaint uses one present).
        controlnets: ControlNet short name (seg, canny, ...) -> the family's default ControlNet.
        single_file: what its single-file checkpoints hold: "checkpoint" (every component, original
            LDM layout), "transformer" (the denoiser only; the rest from --base) or None.
        native_size: image side of its single-file checkpoints (they have no config to read it from).
        config_repo: the diffusers repo whose tokenizers and configs complete a single-file checkpoint.
        base_examples: for a transformer single file, which models to name with --base.
        upscale_strength: the tiled upscale's default strength for its models (None: upscale's own).
        mag_ratios: the magnitude ratios MagCache needs for it: the name of diffusers' own in
            diffusers.hooks.mag_cache (FLUX.1), or the ratios per step, calibrated here (bench/mag_ratios.py).
        base_sigmas: for a flow-matching family whose pipelines choose their own sigmas (FLUX.1's
            linspace(1, 1/N)), those sigmas for N steps: what --shift shifts (diffcli.timesteps.flow_sigmas);
            None: the scheduler's own (SD 3.x).
        cache_params: the parameter of each transformer cache (fbc, taylorseer, magcache) its models take when
            `--cache` names none, where measured on a model of it (tiny-flux: bench/cache_quality.py); else
            diffusers' defaults (diffcli.cache.TRANSFORMER_CACHES).
        call_kwargs: keyword arguments its pipelines are always called with (the bundled FLUX.1-architecture
            model `tiny-flux`: max_sequence_length 32, the T5 length it was trained at).
        needs: Python packages (import names) its pipelines need beyond diffcli's own dependencies
            (Qwen-Image-Edit's processor: torchvision); a model of it is refused with one line without them.
        aliases: short names for its well-known hub repos.
    """

    name: str
    label: str
    order: int = 0
    variant_of: str | None = None
    detect: Callable[[Configs], bool] | None = None
    matches: Callable[[Configs], bool] | None = None
    detect_keys: Callable[[list[str]], bool] | None = None
    defaults: dict = field(default_factory=dict)
    flow: bool = False
    denoiser: str = "unet"
    bf16: bool = False
    sample_size: int | None = None
    patch_size: int | None = None
    pipelines: dict = field(default_factory=dict)
    one_task: dict = field(default_factory=dict)
    references: dict = field(default_factory=dict)
    sampler_rule: bool = True
    guidance: str = "cfg"
    cfg_meaning: str = "classifier-free guidance scale"
    cfg_argument: str = "guidance_scale"
    options: frozenset = frozenset({"negative", "cfg-cutoff", "lora", "quantize"})
    tiny_decoder: str | None = None
    inpainting_models: tuple = ()
    controlnets: dict = field(default_factory=dict)
    single_file: str | None = None
    native_size: int | None = None
    config_repo: str | None = None
    base_examples: str | None = None
    upscale_strength: float | None = None
    mag_ratios: str | tuple | None = None
    base_sigmas: Callable[[int], list[float]] | None = None
    cache_params: dict = field(default_factory=dict)
    call_kwargs: dict = field(default_factory=dict)
    needs: tuple = ()
    aliases: dict = field(default_factory=dict)

    def takes(self, option: str) -> bool:
        """Whether the family takes OPTION (one of OPTIONS)."""
        if option not in OPTIONS:
            raise ValueError(f"unknown family option {option!r}; one of {', '.join(OPTIONS)}")
        return option in self.options


def linspace_sigmas(steps: int) -> list[float]:
    """linspace(1, 1/STEPS, STEPS) in float64: the sigmas FLUX.1's pipelines (and Chroma's, Qwen-Image's,
    FLUX.2's) pass their scheduler when given none (Family.base_sigmas)."""
    import numpy as np

    return [float(u) for u in np.linspace(1.0, 1 / steps, steps)]
