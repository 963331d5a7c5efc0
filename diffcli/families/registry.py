"""The families diffcli knows: the built-in modules of this package, then those other installed
packages add through the `diffcli.families` entry-point group (each entry point names a module with a
FAMILIES tuple, or that tuple itself). Loaded once, on first use; no torch."""

from __future__ import annotations

import importlib
from functools import cache

from diffcli.errors import UsageError
from diffcli.families.spec import Alias, Configs, Family

# The built-in family modules, in the order people see their families and aliases listed.
BUILTIN = ("sd1", "sd2", "sdxl", "sd3", "flux", "chroma", "zimage", "qwen_image", "qwen_image21", "flux2")
BUILTIN += ("upscaler", "bundled", "lcm")
ENTRY_POINT_GROUP = "diffcli.families"
FALLBACK = "sd1"  # whose defaults a model of no known family gets


def _plugin_families() -> list[Family]:
    from importlib.metadata import entry_points

    found = []
    for point in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda p: p.name):
        try:
            loaded = point.load()
        except Exception as exc:  # noqa: BLE001 - a broken plugin is named, not a traceback
            raise UsageError(f"family plugin '{point.name}' ({point.value}) failed to load: {exc}") from None
        families = getattr(loaded, "FAMILIES", loaded)
        if isinstance(families, Family):
            families = (families,)
        if not all(isinstance(f, Family) for f in families):
            raise UsageError(f"family plugin '{point.name}' ({point.value}) gives no diffcli Family records")
        found.extend(families)
    return found


@cache
def families() -> dict[str, Family]:
    """Every known family and variant by name: the built-in ones, then plugins' (a plugin may not take a
    built-in name)."""
    table: dict[str, Family] = {}
    for module in BUILTIN:
        for family in importlib.import_module(f"diffcli.families.{module}").FAMILIES:
            table[family.name] = family
    for family in _plugin_families():
        if family.name in table:
            raise UsageError(f"family plugin: the family name '{family.name}' is taken")
        table[family.name] = family
    return table


def get(name: str | None) -> Family | None:
    """The family (or variant) called NAME; None for no name or one diffcli does not know ("unknown")."""
    if not name:
        return None
    return families().get(name) or families().get(name.removesuffix("-inpaint"))


def defaults(name: str | None) -> dict:
    """NAME's recommended steps, cfg and scheduler; the fallback family's for a name diffcli does not know
    (or one with no settings of its own, like the SDXL refiner)."""
    family = get(name)
    return dict((family if family is not None and family.defaults else families()[FALLBACK]).defaults)


def _in_order(*, variants: bool) -> list[Family]:
    return sorted((f for f in families().values() if (f.variant_of is not None) == variants), key=lambda f: f.order)


def detect(configs: Configs) -> str:
    """The family of a diffusers folder from its configs: the first family, lowest order first, that
    recognises it; "unknown" when none does."""
    for family in _in_order(variants=False):
        if family.detect is not None and family.detect(configs):
            return family.name
    return "unknown"


def variant(name: str, configs: Configs) -> str:
    """The family whose settings a model of family NAME uses: the first of its variants (and of the variants
    of any family, like LCM) that matches its configs, else NAME itself."""
    for family in _in_order(variants=True):
        if family.variant_of in (name, "*") and family.matches is not None and family.matches(configs):
            return family.name
    return name


def detect_keys(names: list[str]) -> str | None:
    """The family of a single-file checkpoint from its tensor names (None when no family recognises them)."""
    for family in _in_order(variants=False):
        if family.detect_keys is not None and family.detect_keys(names):
            return family.name
    return None


def aliases() -> dict[str, Alias]:
    """Every family's aliases, in the order of the families."""
    out: dict[str, Alias] = {}
    for family in families().values():
        for name, alias in family.aliases.items():
            if name in out:
                raise UsageError(f"family {family.name}: the alias '{name}' is taken")
            out[name] = alias
    return out


def controlnet_kinds() -> dict[str, dict[str, str]]:
    """ControlNet short name -> {family: its default ControlNet}, short names in the order first declared."""
    out: dict[str, dict[str, str]] = {}
    for family in families().values():
        for kind, repo in family.controlnets.items():
            out.setdefault(kind, {})[family.name] = repo
    return out


def family_of_pipeline(pipeline_class: str) -> Family | None:
    """The family whose pipelines include PIPELINE_CLASS, or whose one-task models run it (FLUX.1 Fill:
    FLUX.1); None if none does."""
    for family in families().values():
        if pipeline_class in family.pipelines.values() or pipeline_class in family.one_task:
            return family
    return None


def family_of_pipe(pipe) -> Family | None:
    """The family of a loaded pipeline PIPE: the one its model folder's diffcli.json names, where that family
    runs PIPE's class (the bundled models: `tiny-flux` is "bundled-flux" on FLUX.1's pipelines), else
    family_of_pipeline of its class."""
    pipeline_class = type(pipe).__name__
    named = get(_folder_family(str(pipe.config.get("_name_or_path") or "")))
    if named is not None and (pipeline_class in named.pipelines.values() or pipeline_class in named.one_task):
        return named
    return family_of_pipeline(pipeline_class)


@cache
def _folder_family(path: str) -> str | None:
    """The family a model folder's diffcli.json names (None: no folder, no such file, no family in it)."""
    import json
    from pathlib import Path

    try:
        return json.loads((Path(path) / "diffcli.json").read_text()).get("family") if path else None
    except (OSError, ValueError, AttributeError):
        return None


def pipeline_class_for(base_class: str, task: str) -> str | None:
    """The class name of TASK's pipeline in the family whose pipelines include BASE_CLASS (None if none, and
    for a model made for one task: its components fit no other pipeline)."""
    family = family_of_pipeline(base_class)
    if family is None or base_class in family.one_task:
        return None
    return family.pipelines.get(task)


def single_task(pipeline_class: str) -> str | None:
    """The one task a model of PIPELINE_CLASS is made for (FLUX.1 Fill: inpaint), else None."""
    for family in families().values():
        if pipeline_class in family.one_task:
            return family.one_task[pipeline_class]
    return None


def of(ref, layout) -> str | None:
    """A model's family: from its layout (a diffusers folder), else what resolving it found (a single
    file's, an alias's; "-inpaint" dropped)."""
    if layout is not None:
        return layout.family
    return (getattr(ref, "family", None) or "").replace("-inpaint", "") or None
