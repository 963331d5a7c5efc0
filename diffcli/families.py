"""What the settings of a job mean for each model family, checked before any model loads (no torch).

SD 1.x/2.x/SDXL and SD 3.x use classifier-free guidance: --cfg scales it, --negative steers away.
FLUX.1 dev and Fill are guidance-distilled: --cfg is the value given to the transformer's guidance
embedding (one pass per step; nothing to cut off, no negative prompt); schnell has no guidance input
and ignores --cfg. SD 3.x and FLUX.1 are flow-matching models: only flow-matching samplers apply,
and --shift multiplies the model's own timestep shift (diffcli.timesteps.flow_sigmas).
"""

from __future__ import annotations

from diffcli.errors import UsageError

CFG_MEANING = {
    "sd3": "classifier-free guidance scale",
    "flux": "guidance embedding value (guidance-distilled; no negative prompt)",
    "flux-schnell": "ignored (FLUX.1 schnell takes no guidance)",
    "flux-fill": "guidance embedding value (guidance-distilled; no negative prompt)",
}


def family_of(ref, layout) -> str | None:
    """The model's family: from its layout (a diffusers folder), else what resolving it found."""
    if layout is not None:
        return layout.family
    return (getattr(ref, "family", None) or "").replace("-inpaint", "") or None


_NO_SAMPLER_RULE = (None, "bundled", "unknown", "upscaler")  # families whose samplers are not checked here


def a1111_sampler(job, ref, layout):
    """JOB with its sampler read as AUTOMATIC1111 names samplers (an A1111 request): the entry of that
    name that fits the model's family (schedulers.by_a1111_name: "Euler" on SD 3.x / FLUX.1 is flow-euler)."""
    from dataclasses import replace

    from diffcli.models.layout import FLOW_FAMILIES
    from diffcli.schedulers import by_a1111_name

    family = family_of(ref, layout)
    if job.scheduler is None or family in _NO_SAMPLER_RULE:
        return job
    return replace(job, scheduler=by_a1111_name(job.scheduler, family in FLOW_FAMILIES, ref.name))


def check(job, ref, layout) -> None:
    """Usage errors for settings the model's family cannot honour (the job has every default decided)."""
    from diffcli.models.layout import FLOW_FAMILIES
    from diffcli.schedulers import check_applies

    family = family_of(ref, layout)
    if job.scheduler is not None and family not in _NO_SAMPLER_RULE:
        check_applies(job.scheduler, family in FLOW_FAMILIES, ref.name)
    from diffcli.quantize import check as check_quantize

    check_quantize(job, ref)
    from diffcli.cache import check as check_cache

    check_cache(job, family, ref.name)
    if family == "flux" and job.cfg_cutoff:
        raise UsageError(
            f"--cfg-cutoff does not apply to {ref.name}: FLUX.1 is guidance-distilled, each step is "
            "one pass whatever --cfg is, so there is no guidance to stop"
        )


def notes(job, ref, layout) -> list[str]:
    """Warnings about settings the model's family ignores."""
    family = family_of(ref, layout)
    out = []
    if family == "flux" and job.negative:
        out.append(f"{ref.name} is a FLUX.1 model, which takes no negative prompt; --negative is ignored")
    if layout is not None and layout.settings_family == "flux-schnell" and job.cfg:
        out.append(f"{ref.name} is FLUX.1 schnell-like (no guidance embedding); --cfg {job.cfg:g} has no effect")
    return out
