"""The Job: one description of a generation, used for flags, PNG metadata, `--from` and batch lines.

Validation here needs no model and no torch, so bad input fails in milliseconds.
"""

from __future__ import annotations

import math
import os
import secrets
import types
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from diffcli import schema
from diffcli.errors import UsageError
from diffcli.guidance import check_cutoff
from diffcli.limits import BYTES_PER_PIXEL, MAX_IMAGES, MAX_PIXELS_CAP, MAX_SEED, MAX_SIDE, MAX_STEPS
from diffcli.timesteps import check_shift

TASKS = ("txt2img", "img2img", "inpaint", "outpaint", "edit", "upscale")
PROMPT_SYNTAXES = ("a1111", "plain")


# the metadata of a Job field that only upscale takes (task_fields)
UPSCALE_ONLY = types.MappingProxyType({"only": "upscale"})
# ... and of one that only txt2img takes (the hires fix, diffcli.hires)
TXT2IMG_ONLY = types.MappingProxyType({"only": "txt2img"})
# ... and of one that only edit takes (instruction editing, `diffcli edit`)
EDIT_ONLY = types.MappingProxyType({"only": "edit"})


@dataclass(frozen=True)
class Job:
    """Everything that decides the pixels of a generation (None = "use the default").

    Every door takes these fields by their declared types (diffcli.schema); schema.PER_JOB marks those
    the jobs denoised in one batch may differ in (run.batch_signature)."""

    task: str = "txt2img"
    prompt: str | None = field(default=None, metadata=schema.PER_JOB)
    negative: str | None = field(default=None, metadata=schema.PER_JOB)
    model: str | None = None
    base: str | None = None  # a transformer-only model file's other components (SD 3.x, FLUX.1): a diffusers model
    quantize: str | None = (
        None  # denoiser weights: none | int8 (torchao) | nf4 (bitsandbytes, CUDA), see diffcli.quantize
    )
    steps: int | None = None
    cfg: float | None = None
    cfg_cutoff: float | None = None  # guidance only while timestep >= cfg_cutoff * T (0 = every step)
    shift: float | None = None  # timestep shift of the sampler's steps (1 = unchanged), see diffcli.timesteps
    width: int | None = None
    height: int | None = None
    seed: int | None = field(default=None, metadata=schema.PER_JOB)
    num_images: int | None = field(default=None, metadata=schema.PER_JOB)
    batch_size: int | None = field(default=None, metadata=schema.PER_JOB)
    scheduler: str | None = None
    device: str | None = None
    dtype: str | None = None
    strength: float | None = field(default=None, metadata=schema.PER_JOB)
    image: str | None = field(default=None, metadata=schema.PER_JOB)  # input image (img2img, inpaint, outpaint)
    mask: str | None = field(default=None, metadata=schema.PER_JOB)  # inpaint mask, white = repaint
    mask_blur: int | None = field(default=None, metadata=schema.PER_JOB)
    # outpaint: pixels added "L,T,R,B" (or "25%"; a JSON integer: that many on every side); settled: pixels,
    # see diffcli.outpaint
    extend: str | None = field(default=None, metadata=schema.meta(per_job=True, also=(int,)))
    # outpaint to a width x height: where the image sits (center, top-left, ...)
    anchor: str | None = field(default=None, metadata=schema.PER_JOB)
    # outpaint: what the new area holds before denoising (edge, blur, noise)
    fill: str | None = field(default=None, metadata=schema.PER_JOB)
    # outpaint: auto | on | off (the family's inpainting model); settled: on | off
    inpaint_model: str | None = field(default=None, metadata=schema.PER_JOB)
    lora: tuple[str, ...] | None = None  # LoRA files "NAME_OR_PATH[:WEIGHT]"; settled: "ABSOLUTE_PATH:WEIGHT"
    prompt_syntax: str | None = None  # "a1111": (word:1.3), [word], BREAK, <lora:name:w>, long prompts; "plain"
    control: tuple[str, ...] | None = None  # ControlNets "KIND:IMAGE[:SCALE[:START:END]]"; settled: see diffcli.control
    control_preprocess: str | None = None  # what makes the control maps from the control images: none, canny, seg
    cache: str | None = None  # step caching: none | deepcache[:N]; settled: "none" or "deepcache:N", see diffcli.cache
    vae_decoder: str | None = None  # full | tiny | AutoencoderTiny repo/folder; settled: see diffcli.vae_decoder
    # txt2img only: the hires fix (diffcli.hires; defaults in diffcli.settings): None unless asked for, and then
    # left out of to_dict(), so other jobs' records and resume keys stay as they were
    hires: float | None = field(default=None, metadata=TXT2IMG_ONLY)  # second pass at width/height x this
    hires_size: str | None = field(default=None, metadata=TXT2IMG_ONLY)  # or at "WxH" (one side may be 0)
    hires_upscaler: str | None = field(default=None, metadata=TXT2IMG_ONLY)  # lanczos | nearest | latent
    hires_strength: float | None = field(default=None, metadata=TXT2IMG_ONLY)  # the second pass's strength
    hires_steps: int | None = field(default=None, metadata=TXT2IMG_ONLY)  # the second pass's steps (x strength run)
    # edit only (instruction editing; what a model family takes: diffcli.families): None on every other task's
    # job, and then left out of to_dict(). The instruction is the job's prompt.
    image_cfg: float | None = field(default=None, metadata=EDIT_ONLY)  # image guidance (InstructPix2Pix)
    # reference images beside the input, where the family's edit pipeline takes some; settled: absolute paths
    references: tuple[str, ...] | None = field(default=None, metadata=EDIT_ONLY)
    # upscale only (diffcli.upscale; values and defaults in diffcli.upscale.rules): None on every other task's
    # job, and then left out of to_dict(), so other tasks' records and resume keys stay as they were
    scale: int | None = field(default=None, metadata=UPSCALE_ONLY)  # output = input x scale
    method: str | None = field(default=None, metadata=UPSCALE_ONLY)  # auto | model | tiled | lanczos
    noise_level: int | None = field(default=None, metadata=UPSCALE_ONLY)  # x4 upscaler: noise on the input
    tile_size: int | None = field(default=None, metadata=UPSCALE_ONLY)  # pixels the model sees per tile
    overlap: int | None = field(default=None, metadata=UPSCALE_ONLY)  # pixels neighbouring tiles share
    fidelity: str | None = field(default=None, metadata=UPSCALE_ONLY)  # none | lowpass | backproject

    def __post_init__(self):
        if self.lora is not None and not isinstance(self.lora, tuple):  # a list from flags or JSON
            object.__setattr__(self, "lora", tuple(self.lora) or None)
        if self.control is not None and not isinstance(self.control, tuple):
            object.__setattr__(self, "control", tuple(self.control) or None)
        if self.references is not None and not isinstance(self.references, tuple):
            object.__setattr__(self, "references", tuple(self.references) or None)

    def to_dict(self) -> dict:
        """The job as plain data; a field only one task takes (task_fields) only where it is set."""
        return {k: v for k, v in asdict(self).items() if v is not None or k not in _ONE_TASK}

    @classmethod
    def from_dict(cls, data: dict, source: str = "the job") -> "Job":
        """A Job from plain data (a recorded job, a batch line); wrong types are usage errors naming SOURCE."""
        if not isinstance(data, dict):
            raise UsageError(f"{source}: a job must be a JSON object, not {schema.kind_of(data)}")
        return cls(**schema.checked(data, schema.wire_types(cls), says=FIELD_MESSAGE, source=source))

    def merged_over(self, base: "Job") -> "Job":
        """This job's explicit (non-None) values win over BASE's."""
        explicit = {k: v for k, v in asdict(self).items() if v is not None and k != "task"}
        merged = replace(base, **explicit, task=self.task)
        if self.task == "txt2img":  # an edit's inputs do not carry over to txt2img
            merged = replace(merged, image=None, mask=None, strength=None, mask_blur=None)
        elif self.task == "img2img":
            merged = replace(merged, mask=None, mask_blur=None)
        if self.task != "upscale":
            merged = replace(merged, **dict.fromkeys(task_fields("upscale")))
        if self.task != "edit":
            merged = replace(merged, **dict.fromkeys(task_fields("edit")))
        elif base.task != "edit":  # edit an image made by another task: not its strength, mask or size
            merged = replace(
                merged, strength=None, mask=self.mask, mask_blur=None, width=self.width, height=self.height
            )
        if self.task != "txt2img":
            merged = replace(merged, **dict.fromkeys(task_fields("txt2img")))
        elif self.hires is not None or self.hires_size is not None:  # a new --hires replaces the recorded --hires-size
            merged = replace(merged, hires=self.hires, hires_size=self.hires_size)
        if self.task != "outpaint":
            merged = replace(merged, extend=None, anchor=None, fill=None, inpaint_model=None)
        elif base.task != "outpaint":  # outpaint an image made by another task: not its size, mask or strength
            merged = replace(
                merged,
                mask=None,
                width=self.width,
                height=self.height,
                strength=self.strength,
                mask_blur=self.mask_blur,
            )
        elif self.width is not None or self.height is not None or self.anchor is not None:
            merged = replace(merged, extend=self.extend)  # a new --to canvas replaces the recorded one
        elif self.extend is not None:
            merged = replace(merged, width=None, height=None)
        if self.model is not None and self.inpaint_model is None:  # another model: its painter is decided anew
            merged = replace(merged, inpaint_model=None)
        if self.model is not None and self.vae_decoder is None and base.vae_decoder not in (None, "full"):
            from diffcli.vae_decoder import is_family_decoder

            if is_family_decoder(base.vae_decoder):  # a family's TAESD: the new model's family's
                merged = replace(merged, vae_decoder="tiny")
        return merged

    def seeds(self) -> list[int]:
        """The documented seed sequence: seed, seed+1, … (wrapping at 2**32)."""
        assert self.seed is not None and self.num_images is not None
        return [(self.seed + i) % (MAX_SEED + 1) for i in range(self.num_images)]


def task_fields(task: str) -> tuple[str, ...]:
    """The Job fields only TASK takes (their metadata says so), in declaration order."""
    return tuple(f.name for f in fields(Job) if f.metadata.get("only") == task)


_ONE_TASK = {f.name for f in fields(Job) if f.metadata.get("only")}


# a recorded job's or a job line's field of the wrong type (schema.convert)
FIELD_MESSAGE = "{source}: '{name}' must be {want}, not {got} ({shown})"


def default_max_pixels() -> int:
    """Pixels one denoising batch may hold by default: what fits in this machine's memory, at most
    4096x4096. Overridable with --max-pixels."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows): assume a 16 GiB machine
        memory = 16 * 2**30
    return int(min(MAX_PIXELS_CAP, max(512 * 512, memory // BYTES_PER_PIXEL)))


def check_max_pixels(max_pixels: int | None) -> None:
    """--max-pixels (None: this machine's default): at least 1."""
    if max_pixels is not None and max_pixels < 1:
        raise UsageError(f"--max-pixels must be at least 1 (got {max_pixels})")


def check_limits(job: Job, max_pixels: int | None) -> None:
    """Refuse sizes that would exhaust memory (width x height x batch size over MAX_PIXELS, default
    default_max_pixels()), and sides out of range taken from an input image. Runs on the job with every
    default filled in, before the model loads."""
    limit = max_pixels or default_max_pixels()
    if job.width is None or job.height is None:
        return
    if job.task != "upscale" and not (8 <= job.width <= MAX_SIDE and 8 <= job.height <= MAX_SIDE):
        # (a size given is checked by validate; this one was taken from the input image)
        raise UsageError(
            f"the image would be {job.width}x{job.height}, the input's size: each side must be between 8 and "
            f"{MAX_SIDE} pixels; resize the input or give --width and --height"
        )
    batch = min(job.batch_size or 1, job.num_images or 1)
    pixels = job.width * job.height * batch
    if pixels > limit:
        per = f" x batch {batch}" if batch > 1 else ""
        raise UsageError(
            f"{job.width}x{job.height}{per} = {pixels} pixels is over the limit of {limit} for one "
            f"batch on this machine; use a smaller size or --batch-size, or pass --max-pixels {pixels}"
        )


def with_seed(job: Job) -> Job:
    """Give a job without a seed a random one, so every image's seed is recorded."""
    return job if job.seed is not None else replace(job, seed=secrets.randbelow(MAX_SEED + 1))


def validate(job: Job) -> None:
    """Checks that need no model: ranges and combinations of flags."""
    if job.task not in TASKS:
        raise UsageError(f"unknown task '{job.task}'")
    if job.task == "upscale":  # its own fields first, as the command always checked them
        from diffcli.upscale.rules import check_job as check_upscale

        check_upscale(job)
    elif any(getattr(job, name) is not None for name in task_fields("upscale")):
        names = task_fields("upscale")
        raise UsageError(f"{', '.join(names[:-1])} and {names[-1]} are upscale settings; {job.task} does not take them")
    if job.task == "txt2img":
        from diffcli.hires import check_job as check_hires

        check_hires(job)
    elif any(getattr(job, name) is not None for name in task_fields("txt2img")):
        raise UsageError(f"the hires fix (--hires ...) is for txt2img; {job.task} does not take it")
    if job.quantize is not None:
        from diffcli.quantize import check_name

        check_name(job.quantize)
    if job.steps is not None and not 1 <= job.steps <= MAX_STEPS:
        raise UsageError(f"--steps must be between 1 and {MAX_STEPS} (got {job.steps})")
    if job.cfg is not None and not (math.isfinite(job.cfg) and job.cfg >= 0):
        raise UsageError(f"--cfg must be a finite number, 0 or more (got {job.cfg})")
    _check_schedule_settings(job.cfg_cutoff, job.shift)
    for name in ("width", "height"):  # (an upscale's are its output's: input x scale, within --max-pixels)
        value = getattr(job, name)
        if value is not None and not 8 <= value <= MAX_SIDE and job.task != "upscale":
            raise UsageError(f"--{name} must be between 8 and {MAX_SIDE} pixels (got {value})")
    if job.num_images is not None and not 1 <= job.num_images <= MAX_IMAGES:
        raise UsageError(f"--num-images must be between 1 and {MAX_IMAGES} (got {job.num_images})")
    if job.batch_size is not None and job.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1 (got {job.batch_size})")
    if job.seed is not None and not 0 <= job.seed <= MAX_SEED:
        raise UsageError(f"--seed must be between 0 and {MAX_SEED} (got {job.seed})")
    if job.strength is not None and not 0 < job.strength <= 1:
        raise UsageError(f"--strength must be in (0, 1] (got {job.strength})")
    if job.mask_blur is not None and not 0 <= job.mask_blur <= MAX_SIDE:
        raise UsageError(f"--mask-blur must be between 0 and {MAX_SIDE} pixels (got {job.mask_blur})")
    if job.cache is not None:
        from diffcli.cache import parse as parse_cache

        parse_cache(job.cache)
    if job.vae_decoder is not None:
        from diffcli.vae_decoder import check_name as check_decoder

        check_decoder(job.vae_decoder)
    if job.prompt_syntax is not None and job.prompt_syntax not in PROMPT_SYNTAXES:
        raise UsageError(f"--prompt-syntax must be one of {', '.join(PROMPT_SYNTAXES)} (got '{job.prompt_syntax}')")
    if job.control or job.control_preprocess is not None:
        from diffcli.control import check_job as check_controls

        check_controls(job)
    if job.lora:
        from diffcli.models.lora import split_spec

        for spec in job.lora:
            split_spec(spec)
    if job.task in ("img2img", "inpaint", "outpaint", "edit") and not job.image:
        raise UsageError(f"{job.task} needs an input image")
    _check_edit(job)
    if job.task == "inpaint" and not job.mask:
        raise UsageError("inpaint needs --mask")
    if job.task == "outpaint":
        from diffcli.outpaint import check_job

        check_job(job)
    elif job.extend is not None or job.anchor is not None or job.fill is not None or job.inpaint_model is not None:
        raise UsageError(f"extend, anchor, fill and inpaint_model are outpaint settings; {job.task} does not take them")
    if job.scheduler is not None:
        from diffcli.schedulers import spec

        spec(job.scheduler)
    if job.device is not None or job.dtype is not None:
        from diffcli.device import validate as validate_device

        validate_device(job.device or "auto", job.dtype or "auto")


def _check_edit(job: Job) -> None:
    """An edit's own settings (what its model's family takes is checked once the model is known:
    family_checks.edit_pipeline); no other task takes them."""
    if job.task != "edit":
        if any(getattr(job, name) is not None for name in task_fields("edit")):
            raise UsageError(f"--image-cfg and --reference are edit settings; {job.task} does not take them")
        return
    if not job.prompt:
        raise UsageError('edit needs an instruction (what to change, e.g. "make it winter")')
    if job.strength is not None:
        raise UsageError("edit takes no --strength: the model reads the whole input image (--image-cfg, where taken)")
    if job.image_cfg is not None and not (math.isfinite(job.image_cfg) and job.image_cfg >= 0):
        raise UsageError(f"--image-cfg must be a finite number, 0 or more (got {job.image_cfg})")


def _check_schedule_settings(cfg_cutoff: float | None, shift: float | None, names=("--cfg-cutoff", "--shift")) -> None:
    check_cutoff(cfg_cutoff, names[0])
    check_shift(shift, names[1])


def check_model_settings(job: Job, defaults: dict, source: str) -> None:
    """The cutoff and shift a model's own settings (SOURCE, e.g. its diffcli.json) bring, where the
    job leaves them to the model, must be in range; the error names SOURCE, not a flag."""
    used = {k: defaults.get(k) if getattr(job, k) is None else None for k in ("cfg_cutoff", "shift")}
    _check_schedule_settings(used["cfg_cutoff"], used["shift"], (f"{source}: cfg_cutoff", f"{source}: shift"))


def settings_source(ref) -> str:
    """Where a model's own settings come from, for error messages: its (or its LoRA's) diffcli.json."""
    own = Path(getattr(ref, "lora", None) or ref.path) / "diffcli.json"
    return str(own) if own.is_file() else f"the settings of {ref.name}"


def size_multiple(layout, task: str) -> int:
    """What width and height must be multiples of: the VAE's scale factor, and for txt2img and inpaint
    also 8, which diffusers' SD/SDXL text-to-image and inpainting pipelines require (their
    check_inputs; img2img takes any multiple of the VAE factor). A transformer denoiser (SD 3.x, FLUX.1)
    also needs whole patches: the VAE factor times its patch size, for every task."""
    vae = layout.vae_scale_factor if layout is not None else 8
    patch = getattr(layout, "patch_size", 1) if layout is not None else 1
    if patch > 1:
        return math.lcm(vae * patch, 8)
    return vae if task == "img2img" else math.lcm(vae, 8)


def check_size_for_model(job: Job, multiple: int) -> None:
    """Width and height must be multiples of the model's size multiple (Layout.size_multiple)."""
    for name in ("width", "height"):
        value = getattr(job, name)
        if value is not None and value % multiple:
            raise UsageError(
                f"--{name} {value} is not valid for this model: use a multiple of {multiple}"
                f" (e.g. {max(multiple, value - value % multiple)})"
            )
