"""Model families as data: one module per family (sd1, sd2, sdxl, sd3, flux, upscaler, bundled, lcm),
each declaring everything diffcli knows about it (spec.Family); plugins add more through the
`diffcli.families` entry-point group. The engine asks these, never a family's name (docs/families.md)."""

from diffcli.families.registry import (
    FALLBACK,
    aliases,
    controlnet_kinds,
    defaults,
    detect,
    detect_keys,
    families,
    family_of_pipe,
    family_of_pipeline,
    get,
    of,
    pipeline_class_for,
    single_task,
    variant,
)
from diffcli.families.spec import OPTIONS, Alias, Configs, Family

__all__ = [
    "FALLBACK",
    "OPTIONS",
    "Alias",
    "Configs",
    "Family",
    "aliases",
    "controlnet_kinds",
    "defaults",
    "detect",
    "detect_keys",
    "families",
    "family_of_pipe",
    "family_of_pipeline",
    "get",
    "of",
    "pipeline_class_for",
    "single_task",
    "variant",
]
