"""Running one Job: resolve the model, check everything, load once, denoise, save, report.

Everything that can be decided without the model (flags, inputs, output paths) is decided before
torch is imported, so bad input fails in milliseconds.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from diffcli import families, hires, schema
from diffcli.errors import UsageError
from diffcli.jobs import (
    Job,
    check_limits,
    check_max_pixels,
    check_model_settings,
    check_size_for_model,
    settings_source,
    size_multiple,
    validate,
    with_seed,
)
from diffcli.pipelines import LoadOptions
from diffcli.settings import model_defaults
from diffcli.settings import settle as settle_settings
from diffcli.sink import Sink, model_record
from diffcli.upscale import task as upscale_task


@dataclass(frozen=True)
class RunOptions:
    """How a job runs, beside what it makes. A request to a server may set the fields that have a wire
    type (diffcli.schema) and LoadOptions' likewise, except those declared schema.LOCAL."""

    out: str | None = None
    fmt: str | None = None
    overwrite: bool = False
    json: bool = False
    save_partial: bool = False
    offline: bool = False
    # --max-pixels: the generation tasks' limit on one denoising batch (width x height x batch size; None:
    # jobs.default_max_pixels()), upscale's on its output image (None: upscale.rules.DEFAULT_MAX_PIXELS)
    max_pixels: int | None = None
    replay_model: str | None = None  # the model named by a --from image (not by the user): never fetched
    # the components (vae_decoder, control, base) that only a --from image names, not a flag: looked up on
    # this machine only, never fetched, left out where absent (a client settles before it sends a job to a
    # server, so this stays with the command)
    from_record: frozenset[str] = field(default=frozenset(), metadata=schema.LOCAL)
    # a request that may name no file (the HTTP API): its model is judged by its text alone (a name, never a
    # path relative to the working directory) and its LoRAs come from the LoRA folder only
    names_only: bool = field(default=False, metadata=schema.LOCAL)
    # the job's scheduler was named by its AUTOMATIC1111 sampler name (an A1111 request): settle takes the
    # entry of that name that fits the model ("Euler" on SD 3.x / FLUX.1 is flow-euler); else names are strict
    a1111_sampler: bool = field(default=False, metadata=schema.LOCAL)
    # diffcli batch: the job's key, recorded so a rerun recognises the file
    batch_key: str | None = field(default=None, metadata=schema.LOCAL)
    results: object = None  # callable taking each result line (path or JSON); None: stdout
    load: LoadOptions = LoadOptions()


@dataclass
class Prepared:
    """A job with every default filled in, its inputs read, and its outputs planned."""

    job: Job
    ref: object
    layout: object
    paths: list[Path]
    fmt: str
    init_image: object = None
    mask: object = None
    sources: dict = field(default_factory=dict)  # field -> where its value came from (diffcli.settings)
    references: list = field(default_factory=list)  # an edit's reference images (-r), read
    plan: object = None  # what a task module settled beyond the job (upscale: its tiles, upscale.task.Plan)


# Tasks with a module of their own, each with the same small interface: settle its inputs, make its
# pipeline calls, compose its output (see diffcli.upscale.task). The generation tasks (txt2img, img2img,
# inpaint, outpaint) are this module's own.
TASK_MODULES = {"upscale": upscale_task}


def _check_task(job: Job, ref, layout) -> None:
    from diffcli import family_checks

    if job.task == "edit":  # the family's edit pipeline (and what it takes), or a line naming models that edit
        family_checks.edit_pipeline(job, ref, layout)
        return
    if family_checks.single_task(layout) == "edit":
        raise UsageError(f"{job.model}: is an instruction-editing model; use `diffcli edit IMAGE INSTRUCTION`")
    if layout is None:  # a single-file checkpoint: its family says what it is
        if (ref.family or "").endswith("-inpaint") and job.task not in ("inpaint", "outpaint"):
            raise UsageError(f"{job.model}: is an inpainting model; use `diffcli inpaint` or `diffcli outpaint`")
        return
    if layout.is_upscaler:
        raise UsageError(f"{job.model}: is an upscaler model; use `diffcli upscale`")
    if layout.is_inpaint and job.task not in ("inpaint", "outpaint"):
        raise UsageError(f"{job.model}: is an inpainting model; use `diffcli inpaint` or `diffcli outpaint`")
    lacking = family_checks.lacking_pipeline(layout.pipeline_class, "inpaint" if job.task == "outpaint" else job.task)
    if lacking is not None:  # before the model loads (pipelines.task_pipeline says the same after)
        raise UsageError(f"this model cannot do {job.task}: {lacking}")
    if job.task == "txt2img" and hires.is_on(job):  # its second pass is an img2img
        lacking = family_checks.lacking_pipeline(layout.pipeline_class, "img2img")
        if lacking is not None:
            raise UsageError(f"--hires runs an img2img pass, which this model cannot do: {lacking}")


def prepare(job: Job, opts: RunOptions, reporter) -> Prepared:
    """All checks that need no weights: flags, model name, inputs, size, output paths."""
    return plan_outputs(settle(job, opts, reporter), opts)


def settle(job: Job, opts: RunOptions, reporter) -> Prepared:
    """JOB with every default decided and checked, its model found and its inputs read; no outputs
    planned yet (Prepared.paths is empty) and no weights loaded."""
    from diffcli import family_checks
    from diffcli.images import load_mask, load_rgb, round_size
    from diffcli.output import check_output_dir

    validate(job)
    check_max_pixels(opts.max_pixels)
    if job.task in TASK_MODULES:
        return _settle_task(TASK_MODULES[job.task], job, opts, reporter)
    init = load_rgb(job.image) if job.image else None
    mask = load_mask(job.mask, init.size) if job.mask else None
    job, references = _read_references(job)
    check_output_dir(opts.out)  # before any download
    ref = _find_model(job, opts, reporter)
    if job.base and "base" in opts.from_record and ref.kind != "transformer_file":  # the record's, for its model
        job = replace(job, base=None)
    layout = layout_of(ref)
    painter = None  # outpaint: what --inpaint-model auto chose, said once every check has passed
    if job.task == "outpaint":  # the family's inpainting model paints, when it is here (--inpaint-model)
        from diffcli.inpaint_model import choose_model

        job, ref, layout, painter = choose_model(job, ref, layout)
    _check_task(replace(job, model=ref.name), ref, layout)
    multiple = size_multiple(layout, job.task)
    if "scheduler" in opts.from_record and not family_checks.sampler_fits(job.scheduler, ref, layout):
        reporter.warn(f"the --from image's scheduler '{job.scheduler}' does not apply to {ref.name}; using its own")
        job = replace(job, scheduler=None)
    check_model_settings(job, model_defaults(ref, layout), settings_source(ref))
    canvas = None
    if job.task == "outpaint":  # the canvas around the image: its size is the job's size
        from diffcli.outpaint import plan as plan_canvas

        canvas = plan_canvas(init.size, job.extend, job.width, job.height, job.anchor, multiple)
        job = replace(job, extend=canvas.extend, anchor=None, width=canvas.width, height=canvas.height)
    input_size = init.size if init is not None else None
    if init is not None and job.width is None and job.height is None:
        input_size = round_size(*init.size, multiple)
        if input_size != init.size:
            reporter.warn(
                f"input is {init.size[0]}x{init.size[1]}; using {input_size[0]}x{input_size[1]} "
                f"(a multiple of {multiple})"
            )
    job, sources = settle_settings(job, ref, layout, input_size)
    if opts.a1111_sampler:  # recorded as the sampler that ran, so --from replays it
        job = family_checks.a1111_sampler(job, ref, layout)
    job = with_seed(job)
    job = _absolute_paths(job, ref)
    job = _settle_loras(job, folder_only=opts.names_only)
    job = _settle_controls(job, ref, layout, opts, reporter)
    job = _settle_decoder(job, ref, layout, opts, reporter)
    check_size_for_model(job, multiple)
    check_limits(job, opts.max_pixels)
    if hires.is_on(job):  # the second pass's size, within --max-pixels; its upscaler fits the model
        width, height = hires.check_target(job, multiple)
        check_limits(replace(job, width=width, height=height), opts.max_pixels)
        hires.check_upscaler(job, family_checks.is_flow(ref, layout) or getattr(layout, "patch_size", 1) > 1)
    _check_family(job, ref, layout, opts, reporter)
    size = (job.width, job.height)
    if canvas is not None:
        from diffcli.outpaint import prepare as prepare_canvas

        init, mask = prepare_canvas(init, canvas, job.fill)
    if init is not None and init.size != size:
        from PIL import Image

        init = init.resize(size, Image.LANCZOS)
        mask = mask.resize(size, Image.LANCZOS) if mask is not None else None
    _warn_unknown_words(job, ref, reporter)
    if painter:
        reporter.info(painter)
    return Prepared(
        job=job,
        ref=ref,
        layout=layout,
        paths=[],
        fmt="",
        init_image=init,
        mask=mask,
        sources=sources,
        references=references,
    )


def _read_references(job: Job) -> tuple[Job, list]:
    """An edit's reference images (-r): read now, recorded by absolute path (and sha256, when saved)."""
    if not job.references:
        return job, []
    from diffcli.images import load_rgb
    from diffcli.references import absolute

    job = replace(job, references=absolute(job.references))
    return job, [load_rgb(path) for path in job.references]


def _settle_task(task, job: Job, opts: RunOptions, reporter) -> Prepared:
    """settle for a task with a module of its own (TASK_MODULES): the engine reads its input image, finds
    its model (when it runs one) and checks the settled job against the model's family; the task settles
    its own inputs and defaults."""
    from diffcli.images import load_rgb
    from diffcli.output import check_output_dir

    source = load_rgb(job.image)
    check_output_dir(opts.out)  # before any download
    job, ref, layout, plan, sources = task.settle(
        job,
        source,
        resolve=lambda j: _find_model(j, opts, reporter),
        layout_of=layout_of,
        max_pixels=opts.max_pixels,
        reporter=reporter,
    )
    job = _absolute_paths(job, ref)
    if ref is not None:
        _check_family(job, ref, layout, opts, reporter)
        _warn_unknown_words(job, ref, reporter)
    return Prepared(job=job, ref=ref, layout=layout, paths=[], fmt="", init_image=source, sources=sources, plan=plan)


def _find_model(job: Job, opts: RunOptions, reporter):
    """The job's model as a local ModelRef (_resolve); a warning where its name is the bundled model's and a
    folder here."""
    ref = _resolve(job, opts, reporter)
    if ref.source == "bundled" and job.model and not opts.names_only and Path(job.model).is_dir():
        reporter.warn(f"'{job.model}' is the bundled model; for the folder of that name, write ./{job.model}")
    return ref


def model_edits(name: str | None) -> bool:
    """Whether the model NAME (None: the default model) is on this machine and edits by instruction (its family
    has an edit pipeline); judged by its name alone, never fetched (the HTTP API's OpenAI edits ask this)."""
    from diffcli import family_checks
    from diffcli.models.resolve import resolve

    try:
        # None: the default model of the task asked (img2img's `tiny`): a start image stays an img2img there
        ref = resolve(name, offline=True, pull=False, progress="quiet", paths=name is None)
        return family_checks.edits(ref, layout_of(ref))
    except UsageError:
        return False


def layout_of(ref):
    """A found model's layout: its folder's, a transformer file's base's; None for a single-file checkpoint."""
    from diffcli.models.layout import read_layout

    if ref.kind not in ("diffusers", "transformer_file"):
        return None
    return read_layout(ref.path if ref.kind == "diffusers" else ref.base)


def _check_family(job: Job, ref, layout, opts: RunOptions, reporter) -> None:
    """Usage errors for settings the model's family cannot honour (every task, once its job is settled),
    then warnings about those it ignores."""
    from diffcli import family_checks
    from diffcli.timesteps import check_denoising_steps, check_sampler

    check_sampler(job.scheduler, job.shift)
    family_checks.check(job, ref, layout)
    check_denoising_steps(job, family_checks.is_flow(ref, layout))
    if job.cache not in (None, "none") and opts.load.compile:  # compiled code would not see diffcli.cache's hooks
        raise UsageError(f"--cache {job.cache} does not work with --compile; use one or the other")
    family_checks.missing_packages(ref, layout)  # (after the usage errors: they say more)
    for note in family_checks.notes(job, ref, layout):
        reporter.warn(note)


def plan_outputs(prepared: Prepared, opts: RunOptions) -> Prepared:
    """Decide and reserve the output path of every image of a settled job."""
    from diffcli.output import plan_paths

    job, ref = prepared.job, prepared.ref
    seeds = job.seeds() if job.seed is not None else [None]  # no seed: no noise drawn (upscale --method lanczos)
    values = [
        {
            "seed": s if s is not None else job.method,
            "prompt": job.prompt,
            "model": Path(str(ref.name)).name if ref is not None else job.method,  # no model: its method
            "steps": job.steps,
            "cfg": job.cfg,
            "task": job.task,
        }
        for s in seeds
    ]
    paths, fmt = plan_paths(opts.out, opts.fmt, values, opts.overwrite)
    return replace(prepared, paths=paths, fmt=fmt)


def _here(name: str) -> bool:
    """Whether component NAME (a folder or file, a URL, a hub repo id[@revision]) is on this machine; looked
    up in the caches only, never on the network."""
    from diffcli.models import hub, names, urls

    if name.lower().startswith(("http://", "https://")):
        return urls.find_local(name) is not None
    try:
        if Path(name).expanduser().exists():
            return True
    except OSError:
        return False
    repo_id, _, revision = name.partition("@")
    try:
        names.validate_repo_id(repo_id)
        return hub.find_local(repo_id, revision or None, allow_pickle=True, name=name) is not None
    except UsageError:
        return False


def _not_fetched(what: str, flag: str, value: str) -> str:
    from diffcli.text import escape

    return escape(
        f"the --from image names {what}, which is not on this machine; not used (nothing named only "
        f"inside an image is fetched): pass {flag} {value} to fetch and use it"
    )


def _resolve(job: Job, opts: RunOptions, reporter):
    """The job's model as a local ModelRef, with its --base when it is a transformer-only file (a base
    named only in a --from image, like its model, is never fetched: it must be here, or named by --base)."""
    from diffcli.models.resolve import attach_base, needs_base, resolve
    from diffcli.progress import download_progress

    ref = _resolve_model(job, opts, reporter)
    recorded = "base" in opts.from_record
    if recorded and job.base and needs_base(ref):
        try:
            resolve(job.base, offline=True, pull=False, allow_pickle=opts.load.allow_pickle, progress="quiet")
        except UsageError:
            from diffcli.text import escape

            raise UsageError(
                f"the --from image names --base {escape(job.base)}, which is not on this machine; "
                f"nothing named only inside an image is fetched: pass --base {escape(job.base)} to "
                f"fetch and use it"
            ) from None
    if recorded and not needs_base(ref):
        return ref  # the record's base was its model's; this model takes none
    return attach_base(
        ref,
        job.base,
        offline=opts.offline or recorded,
        allow_pickle=opts.load.allow_pickle,
        progress=download_progress(reporter),
    )


def _resolve_model(job: Job, opts: RunOptions, reporter):
    """The job's model as a local ModelRef. A model named only inside a --from image is never downloaded
    nor looked up on the network: it must already be here, or the user names it with --model."""
    from diffcli.models import resolve
    from diffcli.progress import download_progress

    progress = download_progress(reporter)
    if opts.names_only:  # (no model named: the server's own default, which may be a path)
        return resolve(
            job.model,
            offline=opts.offline,
            allow_pickle=opts.load.allow_pickle,
            progress=progress,
            paths=job.model is None,
            task=job.task,
        )
    if opts.replay_model is None or job.model != opts.replay_model:
        return resolve(
            job.model, offline=opts.offline, allow_pickle=opts.load.allow_pickle, progress=progress, task=job.task
        )
    try:
        return resolve(job.model, offline=True, allow_pickle=opts.load.allow_pickle, progress=progress, task=job.task)
    except UsageError:
        from diffcli.text import shown

        raise UsageError(
            f"the --from image names model {shown(job.model)}, which is not present here; replay does "
            f"not fetch models named inside images: pass --model {shown(job.model)} to fetch and use "
            f"it, or --model with another model"
        ) from None


def _absolute_paths(job: Job, ref) -> Job:
    """Record local files by absolute path, so `--from` works from any directory (REF None: no model)."""
    changes = {k: str(Path(v).resolve()) for k in ("image", "mask") if (v := getattr(job, k))}
    if getattr(ref, "lora", None) is not None:
        changes["model"] = str(ref.lora)
    elif ref is not None and ref.source in ("local", "file"):
        changes["model"] = str(ref.path)
    if getattr(ref, "base", None) is not None and Path(job.base).is_dir():
        changes["base"] = str(ref.base)
    return replace(job, **changes)


def _settle_loras(job: Job, folder_only: bool = False) -> Job:
    """The job's LoRA files (--lora, and `<lora:NAME:W>` tags taken out of an A1111-syntax prompt) found
    and recorded as "ABSOLUTE_PATH:WEIGHT"; a usage error for one that is not there. FOLDER_ONLY: names of
    LoRAs in the LoRA folder only, never a path."""
    from diffcli.models.lora import resolve_specs

    specs, prompt = list(job.lora or ()), job.prompt
    if job.prompt_syntax == "a1111" and prompt and "<lora:" in prompt:
        from diffcli.prompts import take_lora_tags

        prompt, tags = take_lora_tags(prompt)
        specs += tags
    return replace(job, prompt=prompt, lora=resolve_specs(specs, folder_only=folder_only) or None) if specs else job


def _settle_controls(job: Job, ref, layout, opts: RunOptions, reporter) -> Job:
    """The job's ControlNets found (a short name becomes the family's model) and their images checked; a
    ControlNet named only inside a --from image is never fetched: one that is not here is left out, and a
    line says how to get it."""
    if not job.control:
        return job
    from diffcli import control
    from diffcli.models.controlnets import BUNDLED_CONTROLNETS
    from diffcli.progress import download_progress

    recorded = "control" in opts.from_record
    if recorded:
        kept = []
        for spec in job.control:
            name = control.model_name(spec, ref, layout)
            if name in BUNDLED_CONTROLNETS or _here(name):
                kept.append(spec)
            else:
                reporter.warn(_not_fetched(f"ControlNet {name}", "--control", spec))
        job = replace(job, control=tuple(kept) or None)
        if not job.control:
            return replace(job, control_preprocess=None)
    return control.settle(
        job,
        ref,
        layout,
        offline=opts.offline or recorded,
        allow_pickle=opts.load.allow_pickle,
        progress=download_progress(reporter),
    )


def _settle_decoder(job: Job, ref, layout, opts: RunOptions, reporter) -> Job:
    """The job's --vae-decoder found (tiny: the family's TAESD) and checked against the model's VAE; a
    decoder named only inside a --from image is never fetched: one that is not here is left out (the model's
    VAE decodes), and a line says how to get it."""
    from diffcli import vae_decoder
    from diffcli.progress import download_progress

    recorded = "vae_decoder" in opts.from_record and job.vae_decoder not in (None, vae_decoder.FULL)
    if recorded:
        name = vae_decoder.name_of(job.vae_decoder, ref, layout)
        if name is None:
            from diffcli.text import escape

            reporter.warn(
                escape(
                    f"the --from image names --vae-decoder {job.vae_decoder}; there is none for "
                    f"{ref.name}'s family: its own VAE decodes"
                )
            )
            job = replace(job, vae_decoder=vae_decoder.FULL)
        elif not _here(name):
            what = f"--vae-decoder {job.vae_decoder}" + (f" ({name} for this model)" if name != job.vae_decoder else "")
            reporter.warn(_not_fetched(what, "--vae-decoder", job.vae_decoder))
            job = replace(job, vae_decoder=vae_decoder.FULL)
    return vae_decoder.settle(job, ref, layout, offline=opts.offline or recorded, progress=download_progress(reporter))


def _warn_unknown_words(job: Job, ref, reporter) -> None:
    if ref.source != "bundled":
        return
    from diffcli.bundled import unknown_words_warning

    prompt = job.prompt
    if job.prompt_syntax == "a1111" and prompt:  # the words, not the weights and BREAKs
        from diffcli.prompts import words

        prompt = words(prompt)
    if job.task == "edit":  # tiny-edit knows the words of its instructions ("make it night")
        from diffcli.bundled.words import EDIT_WORDS

        prompt = " ".join(w for w in (prompt or "").split() if w.lower().strip(".,;:!") not in EDIT_WORDS)
    message = unknown_words_warning(prompt, from_image=job.task != "txt2img")
    if message:
        reporter.warn(message)


def composite(original, generated, mask, blur: int):
    """Repainted pixels inside the (feathered) mask, the original's exactly everywhere else."""
    from PIL import Image, ImageChops, ImageFilter

    hard = mask.point(lambda v: 255 if v > 0 else 0)
    soft = mask.filter(ImageFilter.GaussianBlur(blur)) if blur else mask
    feather = ImageChops.multiply(soft, hard)  # never reaches outside the mask
    return Image.composite(generated.resize(original.size), original, feather)


def run(job: Job, opts: RunOptions, reporter) -> list[Path]:
    """Generate every image of JOB; returns the written paths (also printed on stdout)."""
    from diffcli.output import release_reservations

    try:
        return _run(job, opts, reporter)
    finally:
        release_reservations()


def _run(job: Job, opts: RunOptions, reporter) -> list[Path]:
    t0 = time.perf_counter()
    return execute(prepare(job, opts, reporter), opts, reporter, t0)


def execute(prepared: Prepared, opts: RunOptions, reporter, t0: float | None = None) -> list[Path]:
    """Load the model (once per process, see pipelines.load_base), denoise, save and report every
    image of a planned job; returns the written paths (also printed on stdout)."""
    t0 = time.perf_counter() if t0 is None else t0
    job = prepared.job
    if job.task in TASK_MODULES:
        return _execute_task(TASK_MODULES[job.task], prepared, opts, reporter, t0)
    reporter.start(job.task, job.num_images, job.steps)
    pipe, choice, model = _load(prepared, opts, reporter)
    sink = _sink(prepared, opts, reporter)
    t_loaded = time.perf_counter()

    written: list[Path] = []
    seeds = job.seeds()
    for start in range(0, len(seeds), job.batch_size):
        chunk = seeds[start : start + job.batch_size]
        images = _denoise(pipe, prepared, chunk, start, opts, reporter, choice, model)
        reporter.phase("save")
        for offset, (seed, image) in enumerate(zip(chunk, images)):
            index = start + offset
            _save(sink, image, prepared.paths[index], index, prepared, seed, choice, model)
            written.append(prepared.paths[index])
    reporter.done(images=len(written), load_s=round(t_loaded - t0, 3), total_s=round(time.perf_counter() - t0, 3))
    return written


def _execute_task(task, prepared: Prepared, opts: RunOptions, reporter, t0: float) -> list[Path]:
    """execute for a task with a module of its own (TASK_MODULES): the engine loads the model on the
    device and dtype for its family, the task makes the image, the engine saves it through its Sink with
    the record the task composes."""
    from diffcli.metadata import build_record

    job = prepared.job
    reporter.start(job.task, job.num_images, task.total_steps(prepared))
    pipe, choice, model = None, None, {}
    if prepared.ref is not None:  # (no model: upscale --method lanczos)
        from diffcli.pipelines import load_base, set_scheduler

        reporter.phase("load")
        choice = device_choice(prepared)
        base = load_base(prepared.ref, choice, load_options(prepared, opts.load), warn=reporter.warn)
        pipe = task.pipeline(base, prepared)
        set_scheduler(pipe, job.scheduler)
        model = model_record(prepared.ref)
    t_loaded = time.perf_counter()
    image = task.make(pipe, prepared, reporter)
    reporter.phase("save")
    recorded, extra, result = task.record(prepared)
    device, dtype = (choice.device, choice.dtype) if choice is not None else ("cpu", None)  # no model: PIL, on the CPU
    record = build_record(recorded, model, device, dtype, extra)
    _sink(prepared, opts, reporter).write(image, prepared.paths[0], record, result, 1)
    reporter.done(images=1, load_s=round(t_loaded - t0, 3), total_s=round(time.perf_counter() - t0, 3))
    return [prepared.paths[0]]


def load_options(prepared: Prepared, load: LoadOptions) -> LoadOptions:
    """The load options a settled job's model loads with: the run's LOAD with the job's --quantize
    (pipelines.options_for), as its task loads it (TASK_MODULES); also what the key of its loaded
    pipeline holds (serve.models)."""
    from diffcli.pipelines import options_for

    load = options_for(prepared.job, load)
    task = TASK_MODULES.get(prepared.job.task)
    return task.load_options(prepared, load) if task is not None else load


def device_choice(prepared: Prepared):
    """The device and dtype a settled job runs on (its model's family decides `--dtype auto` on CUDA);
    also what the key of its loaded pipeline holds (serve.models)."""
    from diffcli.device import choose

    job = prepared.job
    return choose(job.device or "auto", job.dtype or "auto", families.of(prepared.ref, prepared.layout))


def _load(prepared: Prepared, opts: RunOptions, reporter):
    """(task pipeline with the job's sampler, device choice, model record) for a planned job; the
    model itself is loaded once per process (pipelines.load_base)."""
    from diffcli.pipelines import activate_loras, is_loaded, load_base, set_scheduler, task_pipeline

    job = prepared.job
    choice = device_choice(prepared)
    load = load_options(prepared, opts.load)
    reporter.phase("load", cached=is_loaded(prepared.ref, choice, load))
    base = load_base(prepared.ref, choice, load, warn=reporter.warn)
    activate_loras(base, job.lora)  # per job, unfused: the cached base stays the base
    pipe = task_pipeline(base, _pipeline_key(prepared))
    if job.control:  # the task's ControlNet pipeline, on the same loaded components
        from diffcli import control

        pipe = control.pipeline(
            base,
            "inpaint" if job.task == "outpaint" else job.task,
            [control.parse_spec(s).model for s in job.control],
            choice,
        )
    set_scheduler(pipe, job.scheduler)
    _warn_zero_snr(pipe, job.scheduler, reporter)
    _warn_long_prompt(pipe, job, reporter)
    model = model_record(prepared.ref)
    if job.lora:
        from diffcli.models.lora import lora_records

        model = {**model, "loras": lora_records(job.lora)}
    if job.control:
        from diffcli.control import records

        model = {**model, "controlnets": records(job)}
    return pipe, choice, model


def _pipeline_key(prepared: Prepared) -> str:
    """Which of the family's pipelines runs the job: its task's (outpaint: inpaint a canvas; an edit: the
    family's edit pipeline, with --mask its edit-inpaint one)."""
    job = prepared.job
    if job.task == "edit":
        from diffcli.family_checks import edit_pipeline

        return edit_pipeline(job, prepared.ref, prepared.layout)
    return "inpaint" if job.task == "outpaint" else job.task


# the Job's fields that the jobs of one denoising batch must agree on: all but those declared per job
SHARED_BY_A_BATCH = schema.names(Job, lacking="per_job")


def batch_signature(prepared: Prepared) -> tuple:
    """Jobs whose settled settings agree on these (text-to-image only) can be denoised together."""
    job = prepared.job
    if job.task != "txt2img":
        return ("alone", id(prepared))
    return (str(prepared.ref.path), *(getattr(job, k) for k in SHARED_BY_A_BATCH))


def execute_group(units: list[tuple[Prepared, RunOptions]], reporter, batch_size: int) -> list[list[Path]]:
    """Denoise the images of several planned jobs that share a batch_signature together, up to
    BATCH_SIZE images at a time; each image keeps its own seed, prompt, path and record. Returns each
    job's written paths."""
    t0 = time.perf_counter()
    first, opts = units[0]
    job = first.job
    total = sum(len(p.job.seeds()) for p, _ in units)
    reporter.start(job.task, total, job.steps)
    pipe, choice, model = _load(first, opts, reporter)
    for prepared, _ in units[1:]:  # _load warned about the first job's prompt
        _warn_long_prompt(pipe, prepared.job, reporter)
    t_loaded = time.perf_counter()
    images = [(k, i, seed) for k, (p, _) in enumerate(units) for i, seed in enumerate(p.job.seeds())]
    written: list[list[Path]] = [[] for _ in units]
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        prompts = [(units[k][0].job.prompt, units[k][0].job.negative) for k, _, _ in chunk]
        made = _denoise(pipe, first, [seed for _, _, seed in chunk], start, opts, reporter, choice, model, prompts)
        reporter.phase("save")
        for offset, ((k, i, seed), image) in enumerate(zip(chunk, made)):
            prepared, unit_opts = units[k]
            _save(
                _sink(prepared, unit_opts, reporter),
                image,
                prepared.paths[i],
                start + offset,
                prepared,
                seed,
                choice,
                model,
            )
            written[k].append(prepared.paths[i])
    reporter.done(images=total, load_s=round(t_loaded - t0, 3), total_s=round(time.perf_counter() - t0, 3))
    return written


def _warn_long_prompt(pipe, job: Job, reporter) -> None:
    """The text encoder reads a fixed window of tokens; diffusers cuts the rest off silently."""
    tokenizer = getattr(pipe, "tokenizer", None)
    window = getattr(tokenizer, "model_max_length", None)
    if tokenizer is None or not window or window > 100_000:
        return
    from diffcli.prompts import supports

    if job.prompt_syntax == "a1111" and supports(pipe):
        return  # read in chunks of the window, nothing is cut (diffcli.prompts)
    if any("T5" in type(getattr(pipe, n, None)).__name__ for n in ("tokenizer_2", "tokenizer_3")):
        return  # SD 3.x / FLUX.1: a T5 encoder reads the whole prompt (diffusers' max_sequence_length)
    for name, text in (("prompt", job.prompt), ("negative prompt", job.negative)):
        if text:
            count = len(tokenizer(text, truncation=False).input_ids)
            if count > window:
                reporter.warn(
                    f"the {name} is {count} tokens; this model's text encoder reads {window}, the rest is ignored"
                )


def _warn_zero_snr(pipe, name: str, reporter) -> None:
    from diffcli.schedulers import ORIGINAL_SCHEDULER, ignores_zero_snr, zero_snr_names

    if ignores_zero_snr(name, getattr(pipe, ORIGINAL_SCHEDULER, {})):
        reporter.warn(
            f"scheduler '{name}' cannot follow this model's zero-terminal-SNR schedule; images may be "
            f"off (these can: {', '.join(zero_snr_names())})"
        )


def _sink(prepared: Prepared, opts: RunOptions, reporter) -> Sink:
    extra = {"batch_key": opts.batch_key} if opts.batch_key else None
    return Sink(
        fmt=prepared.fmt,
        overwrite=opts.overwrite,
        as_json=opts.json,
        reporter=reporter,
        extra=extra,
        results=opts.results,
        public=opts.names_only,
    )


def _save(
    sink: Sink,
    image,
    path: Path,
    index: int,
    prepared: Prepared,
    seed: int,
    choice,
    model: dict,
    extra: dict | None = None,
) -> None:
    from diffcli.metadata import build_record

    job = prepared.job
    recorded = replace(job, seed=seed, num_images=1, batch_size=1)
    if job.references:  # each by path and sha256, as LoRA files are (--from finds them again: diffcli.references)
        from diffcli.references import records

        extra = {**(extra or {}), "references": records(job.references)}
    record = build_record(recorded.to_dict(), model, choice.device, choice.dtype, extra)
    width, height = image.size if hires.is_on(job) else (job.width, job.height)  # (hires: the second pass's)
    result = {"seed": seed, "width": width, "height": height, "task": job.task, "model": prepared.ref.name}
    if job.task == "outpaint":  # on: a dedicated inpainting model painted; off: the model with the mask
        result["inpaint_model"] = job.inpaint_model
    sink.write(image, path, record, result, index + 1)


def _denoise(
    pipe,
    prepared: Prepared,
    seeds: list[int],
    start: int,
    opts: RunOptions,
    reporter,
    choice,
    model,
    prompts: list[tuple[str, str]] | None = None,
):
    """Denoise one batch: the images of SEEDS, all with PREPARED's job settings, each with its own
    (prompt, negative) from PROMPTS when given (a batch of several jobs), else the job's."""
    import torch

    from diffcli.pipelines import compile_pending
    from diffcli.prompts import chunk_groups

    job = prepared.job
    count = len(seeds)
    generators = [torch.Generator(device="cpu").manual_seed(s) for s in seeds]
    state = {"latents": None}
    compiling = compile_pending(pipe)  # --compile: this call's first step compiles the denoiser
    on_step_end = _step_callback(job, reporter, state, compiling)
    prompts = prompts or [(job.prompt, job.negative)] * count
    groups = chunk_groups(pipe, [p for p, _ in prompts], [n or "" for _, n in prompts], job.prompt_syntax)
    if len(groups) > 1:  # prompts read in different numbers of chunks: each group denoised as it would be alone
        return _denoise_groups(pipe, prepared, seeds, start, opts, reporter, choice, model, prompts, groups)
    kwargs = _call_kwargs(pipe, prepared, prompts, generators, on_step_end)
    if job.hires_upscaler == "latent":  # the hires fix upscales the latents, not the decoded image
        kwargs["output_type"] = "latent"
    reporter.begin_batch(start + 1, count, job.steps)
    reporter.phase("encode")
    images = _call_pipe(pipe, kwargs, prepared, seeds, start, opts, reporter, choice, model, state)
    if hires.is_on(job):
        images = _hires_pass(pipe, prepared, images, seeds, start, opts, reporter, choice, model, prompts)
    if job.task in ("inpaint", "outpaint"):
        images = [composite(prepared.init_image, im, prepared.mask, job.mask_blur) for im in images]
    return images


def _hires_pass(pipe, prepared: Prepared, images, seeds, start, opts, reporter, choice, model, prompts) -> list:
    """The hires fix's second pass (diffcli.hires): the first pass's IMAGES (or latents, --hires-upscaler
    latent) upscaled to the hires size and redrawn by the model's img2img pipeline (the same loaded
    components) at --hires-strength for --hires-steps (unset: the job's steps), each image's noise from a
    fresh generator of its own seed, as A1111 draws the second pass's noise from the image's seed."""
    import torch

    from diffcli.pipelines import set_scheduler, task_pipeline

    job = prepared.job
    size = hires.target_size(job, size_multiple(prepared.layout, job.task))
    steps = job.hires_steps or job.steps
    second = replace(job, task="img2img", width=size[0], height=size[1], steps=steps, strength=job.hires_strength)
    if job.hires_upscaler == "latent":
        init = hires.upscale_latents(images, size, pipe.vae_scale_factor)
    else:
        init = [hires.upscale_image(image, size, job.hires_upscaler) for image in images]
    img2img = task_pipeline(pipe, "img2img")
    set_scheduler(img2img, job.scheduler)
    generators = [torch.Generator(device="cpu").manual_seed(s) for s in seeds]
    state = {"latents": None, "size": size}
    stage = replace(prepared, job=second, init_image=init)
    kwargs = _call_kwargs(img2img, stage, prompts, generators, _step_callback(second, reporter, state, None))
    reporter.phase("hires", width=size[0], height=size[1])
    reporter.begin_batch(start + 1, len(seeds), steps)
    return _call_pipe(img2img, kwargs, prepared, seeds, start, opts, reporter, choice, model, state)


def _step_callback(job: Job, reporter, state: dict, compiling: str | None):
    """The per-step callback of _denoise: keeps the latents in STATE and reports steps (and the compile)."""

    def on_step_end(p, step_index, timestep, callback_kwargs):
        state["latents"] = callback_kwargs.get("latents")
        if compiling and step_index == 0:
            reporter.info(
                f"compiled the {compiling} in {time.perf_counter() - state['t0']:.1f} s (the first step, "
                f"compile included; later images of this size run compiled)"
            )
        total = getattr(p, "num_timesteps", None) or job.steps
        reporter.step(step_index + 1, total)
        if step_index + 1 < total and state["latents"] is not None and getattr(reporter, "wants_preview", bool)():
            from diffcli.preview import send_preview

            send_preview(p, state["latents"], (job.width, job.height), reporter, step_index + 1, total)
        if step_index + 1 >= total:
            reporter.phase("decode")

    return on_step_end


def _denoise_groups(pipe, prepared, seeds, start, opts, reporter, choice, model, prompts, groups) -> list:
    """_denoise for each group of indices in GROUPS on its own; the images back in the order of SEEDS."""
    images = [None] * len(seeds)
    for group in groups:
        made = _denoise(
            pipe,
            prepared,
            [seeds[i] for i in group],
            start,
            opts,
            reporter,
            choice,
            model,
            [prompts[i] for i in group],
        )
        for i, image in zip(group, made):
            images[i] = image
    return images


def _call_kwargs(pipe, prepared: Prepared, prompts: list[tuple[str, str]], generators: list, on_step_end) -> dict:
    """The keyword arguments of PIPE's call for PREPARED's job with PROMPTS (text, schedule, guidance, inputs)."""
    import inspect

    from diffcli import guidance
    from diffcli.prompts import pipeline_kwargs as text_kwargs
    from diffcli.timesteps import schedule_kwargs

    job = prepared.job
    strength = None if job.task == "txt2img" else job.strength
    kwargs = dict(
        **text_kwargs(
            pipe,
            [p for p, _ in prompts],
            [n or "" for _, n in prompts] if any(n for _, n in prompts) else None,
            job.prompt_syntax,
        ),
        generator=generators,
        **schedule_kwargs(pipe, job.steps, job.shift),
        **guidance.pipeline_kwargs(
            pipe, job.cfg, job.cfg_cutoff, job.steps, strength, on_step=on_step_end, shift=job.shift
        ),
    )
    takes = inspect.signature(pipe.__call__).parameters
    family = families.family_of_pipe(pipe)
    if family is not None:  # what the family's pipelines are always called with (tiny-flux: its T5 length)
        kwargs.update({k: v for k, v in family.call_kwargs.items() if k in takes})
    if job.task == "txt2img":
        kwargs.update(width=job.width, height=job.height)
    elif job.task == "edit":
        kwargs.update(_edit_kwargs(pipe, prepared, takes))
    else:
        kwargs.update(image=prepared.init_image, strength=job.strength)
        if "width" in takes:  # SD 3.x, FLUX.1 img2img: else their native size
            kwargs.update(width=job.width, height=job.height)
    if job.task in ("inpaint", "outpaint"):
        kwargs.update(mask_image=prepared.mask, width=job.width, height=job.height)
    if "negative_prompt" not in takes:  # FLUX.1 Fill (family_checks.notes warns)
        kwargs.pop("negative_prompt", None)
    if family is not None and family.guidance == "none" and family.cfg_argument not in takes:
        kwargs.pop(family.cfg_argument, None)  # FLUX.2 [klein] KV: its pipeline takes no guidance at all
    if job.control:
        from diffcli import control

        kwargs.update(control.call_kwargs(job, control.control_images(job)))
    return kwargs


def _edit_kwargs(pipe, prepared: Prepared, takes) -> dict:
    """An edit's inputs to its pipeline's call (TAKES: the call's parameters): the input image (already at the
    job's size), the image guidance (InstructPix2Pix), the size (FLUX.1 Kontext: with max_area that size and
    _auto_resize off, so the pipeline keeps it rather than picking a trained resolution near 1024x1024; Qwen-Image
    2.1: output_resolution, the side of that area, at which it reads the input and references), the mask
    (an edit-inpaint pipeline) and the reference images (the argument the family names)."""
    from diffcli.family_checks import reference_argument

    job = prepared.job
    kwargs: dict = {"image": prepared.init_image}
    if job.image_cfg is not None and "image_guidance_scale" in takes:
        kwargs["image_guidance_scale"] = job.image_cfg
    if "width" in takes:
        kwargs.update(width=job.width, height=job.height)
    if "max_area" in takes:
        kwargs["max_area"] = job.width * job.height
    if "_auto_resize" in takes:
        kwargs["_auto_resize"] = False
    if "output_resolution" in takes:  # Qwen-Image 2.1: its condition images are read at this side's square area
        kwargs["output_resolution"] = round(math.sqrt(job.width * job.height))
    if job.mask:
        kwargs["mask_image"] = prepared.mask
    if prepared.references:
        argument = reference_argument(job, prepared.ref, prepared.layout)
        if argument == "image":  # one list of conditioning images, the input first (FLUX.2 [klein])
            kwargs["image"] = [prepared.init_image, *prepared.references]
        else:
            kwargs[argument] = prepared.references[0] if len(prepared.references) == 1 else prepared.references
    return kwargs


def _call_pipe(pipe, kwargs, prepared, seeds, start, opts, reporter, choice, model, state: dict) -> list:
    """PIPE(**KWARGS)'s images, with the job's decoder and cache on for this call; on Ctrl-C, --save-partial."""
    from diffcli.cache import active as cache_active
    from diffcli.pipelines import compiled_call
    from diffcli.timesteps import denoising_steps
    from diffcli.vae_decoder import active as decoder_active

    job = prepared.job
    state["t0"] = time.perf_counter()
    with decoder_active(pipe, job.vae_decoder, choice):  # this call only (--save-partial too): the VAE is shared
        try:
            steps = denoising_steps(job, prepared.layout is not None and prepared.layout.is_flow)
            with cache_active(pipe, job.cache, steps), compiled_call(pipe):  # this call only: shared by later jobs
                return pipe(**kwargs).images
        except KeyboardInterrupt:
            if opts.save_partial and state["latents"] is not None:
                _save_partial(pipe, state["latents"], prepared, seeds, start, choice, model, opts, reporter, state)
            raise


def _save_partial(pipe, latents, prepared, seeds, start, choice, model, opts, reporter, state=None) -> None:
    from diffcli.pipelines import decode_latents

    size = (state or {}).get("size") or (prepared.job.width, prepared.job.height)  # (the hires pass: its size)
    for offset, (seed, image) in enumerate(zip(seeds, decode_latents(pipe, latents, size))):
        final = prepared.paths[start + offset]
        path = final.with_name(f"{final.stem}-partial{final.suffix}")
        _save(
            _sink(prepared, opts, reporter),
            image,
            path,
            start + offset,
            prepared,
            seed,
            choice,
            model,
            extra={"partial": True},
        )
