"""What the settings of a job mean for its model's family, checked before any model loads (no torch).

Each family declares what it takes (diffcli.families): whether --scheduler is checked against it
(flow-matching families take only flow-matching samplers; --shift multiplies the model's own timestep
shift, diffcli.timesteps.flow_sigmas), what --cfg drives (classifier-free guidance; a guidance
embedding, one pass per step, for FLUX.1 dev and Fill; nothing for schnell) and which options apply
(negative prompt, cfg cutoff, DeepCache, LoRA, quantization). A model of no known family is not checked.
"""

from __future__ import annotations

from diffcli import families
from diffcli.errors import RuntimeFailure, UsageError


def _flow(family: str | None) -> bool:
    spec = families.get(family)
    return spec is not None and spec.flow


def _sampler_rule(family: str | None) -> bool:
    spec = families.get(family)
    return spec is not None and spec.sampler_rule


def a1111_sampler(job, ref, layout):
    """JOB with its sampler read as AUTOMATIC1111 names samplers (an A1111 request): the entry of that
    name that fits the model's family (schedulers.by_a1111_name: "Euler" on SD 3.x / FLUX.1 is flow-euler)."""
    from dataclasses import replace

    from diffcli.schedulers import by_a1111_name

    family = families.of(ref, layout)
    if job.scheduler is None or not _sampler_rule(family):
        return job
    return replace(job, scheduler=by_a1111_name(job.scheduler, _flow(family), ref.name))


def sampler_fits(name: str, ref, layout) -> bool:
    """Whether sampler NAME can sample the model (a flow-matching sampler a flow-matching model, and so on);
    True for a family whose samplers are not checked."""
    from diffcli.schedulers import spec

    family = families.of(ref, layout)
    return not _sampler_rule(family) or spec(name).flow == _flow(family)


def is_flow(ref, layout) -> bool:
    """Whether the model is sampled with flow-matching schedulers."""
    return _flow(families.of(ref, layout))


def check(job, ref, layout) -> None:
    """Usage errors for settings the model's family cannot honour (the job has every default decided)."""
    from diffcli.schedulers import check_applies

    family = families.of(ref, layout)
    if job.scheduler is not None and _sampler_rule(family):
        check_applies(job.scheduler, _flow(family), ref.name)
    from diffcli.quantize import check as check_quantize

    check_quantize(job, ref)
    from diffcli.cache import check as check_cache

    check_cache(job, family, ref.name)
    spec = families.get(family)
    if spec is None:
        return
    if job.cfg_cutoff and not spec.takes("cfg-cutoff"):
        why = (
            f"{spec.label} is guidance-distilled, each step is one pass whatever --cfg is, so there is no "
            "guidance to stop"
            if spec.guidance != "cfg"
            else f"{spec.label} models take no guidance cutoff"
        )
        raise UsageError(f"--cfg-cutoff does not apply to {ref.name}: {why}")
    if job.lora and not spec.takes("lora"):
        raise UsageError(f"--lora does not apply to {ref.name}: diffcli loads no LoRA files into {spec.label} models")
    if job.quantize not in (None, "none") and not spec.takes("quantize"):
        raise UsageError(f"--quantize does not apply to {ref.name}: {spec.label} models are not quantized")


def notes(job, ref, layout) -> list[str]:
    """Warnings about settings the model's family ignores."""
    spec = families.get(families.of(ref, layout))
    out = []
    if spec is not None and job.negative and not spec.takes("negative"):
        out.append(f"{ref.name} is a {spec.label} model, which takes no negative prompt; --negative is ignored")
    settings = families.get(layout.settings_family) if layout is not None else None
    if settings is not None and settings.guidance == "none" and job.cfg:
        out.append(f"{ref.name} is {settings.label}-like (no guidance embedding); --cfg {job.cfg:g} has no effect")
    return out


def _settings_spec(ref, layout):
    """The family (or variant: InstructPix2Pix of SD 1.x, FLUX.1 Kontext) whose settings the model takes."""
    return families.get(layout.settings_family if layout is not None else families.of(ref, layout))


def _edits(family: str | None) -> bool:
    spec = families.get(family)
    return spec is not None and "edit" in spec.pipelines


def editors() -> str:
    """The models that edit by instruction, as a message names them: the shipped ones (tiny-edit) installed here,
    then the aliases of the families that do."""
    from diffcli.bundled import MODEL_NAMES, family, model_dir

    shipped = [n for n in MODEL_NAMES if (model_dir(n) / "model_index.json").is_file() and _edits(family(n))]
    aliased = [name for name, alias in families.aliases().items() if _edits(alias.family)]
    return ", ".join(shipped + aliased) or "none known"


def edits(ref, layout) -> bool:
    """Whether the model edits by instruction (its family has an edit pipeline)."""
    spec = _settings_spec(ref, layout)
    return spec is not None and "edit" in spec.pipelines


def single_task(layout) -> str | None:
    """The one task a diffusers folder's model is made for (its family says so: InstructPix2Pix edits)."""
    return families.single_task(layout.pipeline_class) if layout is not None else None


def edit_pipeline(job, ref, layout) -> str:
    """The key (in its family's `pipelines`) of the pipeline that runs JOB, an edit: "edit", or with --mask
    "edit-inpaint"; usage errors for a model that does not edit and for settings its family does not take
    (--image-cfg, --mask, more reference images than its pipeline takes)."""
    from diffcli.text import shown

    spec = _settings_spec(ref, layout)
    if spec is None or "edit" not in spec.pipelines:
        what = f"{spec.label} models do not edit" if spec is not None else "not a model that edits"
        raise UsageError(f"{shown(ref.name)} cannot edit by instruction ({what}); use one that can: {editors()}")
    key = "edit-inpaint" if job.mask else "edit"
    if key not in spec.pipelines:
        raise UsageError(f"--mask does not apply to {shown(ref.name)}: {spec.label} edits the whole image")
    if job.image_cfg is not None and not spec.takes("image-cfg"):
        raise UsageError(
            f"--image-cfg does not apply to {shown(ref.name)}: {spec.label} takes no image guidance "
            f"(--cfg is its {spec.cfg_meaning})"
        )
    _, most = spec.references.get(key, (None, 0))
    count = len(job.references or ())
    if count > most:
        pipeline = spec.pipelines[key]
        if most:
            raise UsageError(f"{spec.label}'s {pipeline} takes at most {most} reference image(s); got {count} (-r)")
        others = [k for k, (_, n) in spec.references.items() if n]
        hint = " (with --mask, its inpainting pipeline takes one)" if others and not job.mask else ""
        raise UsageError(
            f"-r/--reference does not apply to {shown(ref.name)}: {spec.label}'s {pipeline} takes the one "
            f"input image, no reference images{hint}"
        )
    return key


def reference_argument(job, ref, layout) -> str | None:
    """The pipeline call's argument an edit's reference images go to (None: its pipeline takes none)."""
    spec = _settings_spec(ref, layout)
    return spec.references.get("edit-inpaint" if job.mask else "edit", (None, 0))[0] if spec is not None else None


def missing_packages(ref, layout) -> None:
    """A RuntimeFailure naming the Python packages the model's family needs (Family.needs) that are not
    installed here, before anything loads."""
    import importlib.util

    spec = _settings_spec(ref, layout)
    missing = [name for name in (spec.needs if spec is not None else ()) if importlib.util.find_spec(name) is None]
    if missing:
        names = " ".join(missing)
        raise RuntimeFailure(
            f"{spec.label} models need {names}, which is not installed: pip install {names} "
            "(the build that matches your torch, from the same index)"
        )


def lacking_pipeline(pipeline_class: str, task: str) -> str | None:
    """Why a model whose pipeline is PIPELINE_CLASS cannot do TASK (txt2img, img2img, inpaint) when its family
    declares pipelines for some of those but not for TASK (FLUX.2 [klein]: no img2img; diffusers' AutoPipeline
    would pick a pipeline that takes no strength); None otherwise."""
    family = families.family_of_pipeline(pipeline_class)
    kinds = ("txt2img", "img2img", "inpaint")
    tasks = [t for t in kinds if family is not None and t in family.pipelines]
    if not tasks or task in tasks or task not in kinds:
        return None
    edits = "; `diffcli edit` edits an image with them" if "edit" in family.pipelines else ""
    return f"{family.label} models have no {task} pipeline (they do {', '.join(tasks)}{edits})"
