"""Every default of a generation, decided in one place, with where each value came from.

Layers, lowest first: built-in < the model family's < the model's native size < its alias's
recommendations < its own diffcli.json (for a LoRA folder: the base's diffcli.json < the LoRA's) <
the input image's size (img2img, inpaint) < the job itself (flags, a --from record, a batch line).
No torch, no weights: only JSON files already read into a Layout and a ModelRef.
"""

from __future__ import annotations

from dataclasses import fields, replace

from diffcli import families, hires
from diffcli.jobs import Job, task_fields
from diffcli.limits import DEEPCACHE_INTERVAL
from diffcli.upscale.rules import FIXED as UPSCALE_FIXED

# Values no model or family decides.
BUILTIN = {
    "prompt": "",
    "negative": "",
    "cfg_cutoff": 0.0,
    "shift": 1.0,
    "num_images": 1,
    "batch_size": 1,
    "device": "auto",
    "dtype": "auto",
    "prompt_syntax": "a1111",  # weights work as AUTOMATIC1111 users expect; a prompt without syntax is unchanged
    "cache": "none",  # step caching is asked for (--cache), never on by itself
    "vae_decoder": "full",
}  # the model's own VAE decodes; a tiny one only when asked (--vae-decoder)
TASK_BUILTIN = {
    "img2img": {"strength": 0.6},
    "inpaint": {"strength": 1.0, "mask_blur": 4},
    "outpaint": {
        "strength": 0.9,
        "mask_blur": 4,
        "fill": "blur",  # measured: docs/benchmarks.md
        "inpaint_model": "auto",
    },  # the family's inpainting model when present (inpaint_model.py)
    "upscale": UPSCALE_FIXED,  # its prompt as it is; one image; no step cache, no other decoder
}
# the hires fix's defaults (diffcli.hires), taken only by a job that asks for it (--hires, --hires-size); its
# steps stay unset: the job's steps, as A1111's hr_second_pass_steps 0 means
HIRES_BUILTIN = {"hires_upscaler": hires.DEFAULT_UPSCALER, "hires_strength": hires.DEFAULT_STRENGTH}
SINGLE_FILE_SIZE = 512  # a single-file checkpoint has no config to read its native size from
_FIELDS = {f.name for f in fields(Job)}
# what a default may set: never the job's LoRA files (a LoRA student's diffcli.json "lora" describes its base),
# nor a field only one task takes (its task decides it: diffcli.upscale.task; the hires fix's: HIRES_BUILTIN)
_DEFAULTABLE = _FIELDS - {"lora"} - set(task_fields("upscale")) - set(task_fields("txt2img"))
# an edit's settings (--image-cfg) come from the family and model layers, for an edit job only
_EDIT_ONLY = set(task_fields("edit"))


def settings_family(ref, layout) -> str:
    """The family whose settings the model takes: its layout's variant (lcm, flux-schnell, ...), else what resolving
    it found (a single file's, an alias's), else the fallback family."""
    if layout is not None:
        return layout.settings_family
    return getattr(ref, "family", None) or families.FALLBACK


def model_layers(ref, layout) -> list[tuple[str, dict]]:
    """(source, values) for what the model says, lowest first."""
    if layout is None:
        family = settings_family(ref, layout)
        return [
            (f"family {family}", families.defaults(family)),
            ("native size", {"width": SINGLE_FILE_SIZE, "height": SINGLE_FILE_SIZE}),
            (f"settings of {ref.name}", dict(ref.defaults)),
        ]
    layers = layout.layers()  # family defaults, native size, the steps of its own sigmas
    own = ("diffcli.json", layout.own_settings())
    if getattr(ref, "lora", None) is not None:  # the LoRA's own settings (ref.defaults) beat its base's
        return [*layers, own, ("LoRA's diffcli.json", dict(ref.defaults))]
    return [*layers, (f"alias {ref.name}", dict(ref.defaults)), own]


def model_defaults(ref, layout) -> dict:
    """What the model recommends, every layer merged (upscale's tiled method reads it too)."""
    merged: dict = {}
    for _, values in model_layers(ref, layout):
        merged.update(values)
    return merged


def settle(job: Job, ref, layout, input_size: tuple[int, int] | None = None) -> tuple[Job, dict[str, str]]:
    """JOB with every value still None decided, and {field: where its value came from}."""
    layers = [("built-in", {**BUILTIN, **TASK_BUILTIN.get(job.task, {})})]
    if job.task == "txt2img" and hires.is_on(job):
        layers.append(("built-in hires", HIRES_BUILTIN))
    if ref is not None:  # (no model: upscale --method lanczos)
        layers += model_layers(ref, layout)
    if input_size is not None:
        if job.width is None and job.height is None:
            layers.append(("input image", {"width": input_size[0], "height": input_size[1]}))
        else:  # one side given: the other follows the input
            layers.append(("input image", {"width": job.width or input_size[0], "height": job.height or input_size[1]}))
    # the hires fix's settings: from the built-in layer and any layer below it that names them (a family's
    # measured hires strength: the bundled models'), for a job that asks for the hires pass only
    hires_on = job.task == "txt2img" and hires.is_on(job)
    value: dict = {}
    source: dict[str, str] = {}
    for name, values in layers:
        for key, v in values.items():
            if key in _EDIT_ONLY and job.task != "edit":
                continue
            if (key in _DEFAULTABLE or (hires_on and key in HIRES_BUILTIN)) and v is not None:
                value[key], source[key] = v, name
    chosen = {}
    for key in _FIELDS:
        if getattr(job, key) is not None:
            source[key] = "job"
        elif key in value:
            chosen[key] = value[key]
    settled = replace(job, **chosen)
    if settled.cache is not None:  # recorded with its interval, so a later default does not change a replay
        from diffcli.cache import settled as settled_cache

        family = families.get(settings_family(ref, layout))
        params = family.cache_params if family is not None else {}
        settled = replace(settled, cache=settled_cache(settled.cache, DEEPCACHE_INTERVAL, params))
    return settled, {k: v for k, v in source.items() if k in _FIELDS}
