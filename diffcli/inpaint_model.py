"""`--inpaint-model`: which model paints the new area of an outpaint job (diffcli.outpaint makes the canvas)."""

from __future__ import annotations

from diffcli.errors import DiffcliError, UsageError


def choose_model(job, ref, layout):
    """(job, ref, layout, note) of the model that paints the new area, the job's `inpaint_model` settled to
    on (a dedicated inpainting model paints) or off (the model itself, with the mask); NOTE says what auto
    chose, for the user (None when nothing was chosen for them).

    auto (the default): a model that is itself an inpainting model paints; else the first inpainting model
    of its family (its Family.inpainting_models) present on this machine does, named in the job as its
    model (so the record and `--from` name what painted); else the model itself. on: as auto, but no
    inpainting model is a usage error; off: never another model. Nothing is fetched for it."""
    from dataclasses import replace

    from diffcli import families
    from diffcli.settings import TASK_BUILTIN
    from diffcli.text import shown

    policy = job.inpaint_model or TASK_BUILTIN["outpaint"]["inpaint_model"]
    family = families.of(ref, layout)
    if layout.is_inpaint if layout is not None else (getattr(ref, "family", None) or "").endswith("-inpaint"):
        if policy == "off":
            raise UsageError(
                f"--inpaint-model off: {shown(ref.name)} is itself an inpainting model; name a regular "
                f"model to paint with it and the mask"
            )
        return replace(job, inpaint_model="on"), ref, layout, None
    from diffcli.control import is_union

    union = is_union(job)  # a union ControlNet's inpaint pipeline takes 4 channels only
    found = None if policy == "off" or union or getattr(ref, "lora", None) is not None else _family_inpainting(family)
    if found is None:
        if policy == "on":
            have = _inpainting_models(family)
            raise UsageError(
                f"--inpaint-model on: no inpainting model of {shown(ref.name)}'s family ({family}) is "
                f"here"
                + (
                    f"; pull one (diffcli models pull {have[0]}) or pass it as --model"
                    if have
                    else "; diffcli knows none for this family"
                )
            )
        note = (
            (
                f"outpaint: {ref.name} paints the new area with the mask (no {family} inpainting model here, e.g. "
                f"{_inpainting_models(family)[0]})"
            )
            if policy == "auto" and _inpainting_models(family)
            else None
        )
        return replace(job, inpaint_model="off"), ref, layout, note
    from diffcli.models.layout import read_layout

    note = (
        (
            f"outpaint: {found.name}, the {family} inpainting model found here, paints the new area instead of "
            f"{ref.name} (--inpaint-model off keeps {ref.name})"
        )
        if policy == "auto"
        else None
    )
    return replace(job, model=found.name, inpaint_model="on"), found, read_layout(found.path), note


def _inpainting_models(family: str | None) -> tuple[str, ...]:
    """FAMILY's dedicated inpainting models (9-channel UNets), best first (diffcli.families)."""
    from diffcli import families

    spec = families.get(family)
    return spec.inpainting_models if spec is not None else ()


def _family_inpainting(family: str | None):
    """The ModelRef of the first inpainting model of FAMILY in the hub cache, or None (never fetched)."""
    from diffcli.models import hub, resolve

    for repo in _inpainting_models(family):
        try:
            if hub.find_local(repo, None) is not None:
                return resolve(repo, offline=True)
        except DiffcliError:  # e.g. only pickle weights there: not this one
            continue
    return None
