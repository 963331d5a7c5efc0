"""The hires fix (txt2img `--hires SCALE`): generate at the job's size, upscale the result, then redraw it
with an img2img pass, as AUTOMATIC1111's "Hires. fix" does. One job, one image per seed, one record.

This module holds what needs no model and no torch: the checks of the Job's hires fields, the size of the
second pass, the upscalers' names (ours and A1111's), and the image-space upscale (PIL). The engine's part
(the second pipeline call) is diffcli.run's. See docs/cli.md (flags) and docs/metadata.md (the record).
"""

from __future__ import annotations

import math

from diffcli.errors import UsageError
from diffcli.limits import MAX_SIDE, MAX_STEPS

MAX_SCALE = 4.0  # as A1111's slider: 1 < scale <= 4
# what upscales the first pass's result: a resample of the decoded image (lanczos, nearest), or of the
# latents before decoding (latent: bilinear, A1111's "Latent")
UPSCALERS = ("lanczos", "nearest", "latent")
DEFAULT_UPSCALER = "lanczos"  # a plain resample of the decoded image: every model family takes it
DEFAULT_STRENGTH = 0.7  # A1111's default denoising strength of the hires pass
# A1111's names (its hr_upscaler, its "Hires upscaler" field) of ours, and ours of those it may send
A1111_NAMES = {"lanczos": "Lanczos", "nearest": "Nearest", "latent": "Latent"}
FROM_A1111 = {"latent": "latent", "lanczos": "lanczos", "nearest": "nearest", "none": "lanczos"}


def is_on(job) -> bool:
    """Whether JOB asks for the hires pass (--hires or --hires-size)."""
    return job.hires is not None or job.hires_size is not None


def parse_size(text: str) -> tuple[int, int]:
    """--hires-size "WxH" as (W, H); one side may be 0: it follows the first pass's aspect (A1111's
    hr_resize_x/hr_resize_y)."""
    parts = str(text).lower().split("x")
    try:
        width, height = (int(p) for p in parts) if len(parts) == 2 else (None, None)
    except ValueError:
        width = height = None
    if width is None or width < 0 or height < 0 or width == height == 0:
        raise UsageError(f"--hires-size must be WIDTHxHEIGHT, e.g. 1024x1024 (one side may be 0) (got '{text}')")
    for name, value in (("width", width), ("height", height)):
        if value and not 8 <= value <= MAX_SIDE:
            raise UsageError(f"--hires-size {name} must be between 8 and {MAX_SIDE} pixels (got {value})")
    return width, height


def check_job(job) -> None:
    """The hires fields' values and combinations, without a model (jobs.validate calls it)."""
    names = ("hires_strength", "hires_steps", "hires_upscaler")
    if not is_on(job):
        given = [n for n in names if getattr(job, n) is not None]
        if given:
            flags = ", ".join("--" + n.replace("_", "-") for n in given)
            raise UsageError(f"{flags} set the hires pass; add --hires SCALE or --hires-size WxH")
        return
    if job.hires is not None and job.hires_size is not None:
        raise UsageError("give --hires SCALE or --hires-size WxH, not both")
    if job.hires is not None and not (math.isfinite(job.hires) and 1 < job.hires <= MAX_SCALE):
        raise UsageError(f"--hires must be a scale over 1 and at most {MAX_SCALE:g} (got {job.hires:g})")
    if job.hires_size is not None:
        parse_size(job.hires_size)
    if job.hires_strength is not None and not 0 < job.hires_strength <= 1:
        raise UsageError(f"--hires-strength must be in (0, 1] (got {job.hires_strength:g})")
    if job.hires_steps is not None and not 1 <= job.hires_steps <= MAX_STEPS:
        raise UsageError(f"--hires-steps must be between 1 and {MAX_STEPS} (got {job.hires_steps})")
    if job.hires_upscaler is not None and job.hires_upscaler not in UPSCALERS:
        raise UsageError(f"--hires-upscaler must be one of {', '.join(UPSCALERS)} (got '{job.hires_upscaler}')")
    if job.control:
        raise UsageError("--hires does not work with --control yet; use one or the other")


def target_size(job, multiple: int = 8) -> tuple[int, int]:
    """The second pass's width and height for a settled JOB: its size times --hires rounded down to
    MULTIPLE (as A1111's latent size does), or --hires-size (one side 0: from the first pass's aspect,
    rounded down to MULTIPLE)."""
    if job.hires is not None:
        width, height = int(job.width * job.hires), int(job.height * job.hires)
        return max(multiple, width - width % multiple), max(multiple, height - height % multiple)
    width, height = parse_size(job.hires_size)
    if width and height:
        return width, height
    if not height:
        height = width * job.height // job.width
        return width, max(multiple, height - height % multiple)
    width = height * job.width // job.height
    return max(multiple, width - width % multiple), height


def check_target(job, multiple: int) -> tuple[int, int]:
    """The second pass's size (target_size), refused where it is not a multiple of the model's MULTIPLE or
    over the largest side."""
    width, height = target_size(job, multiple)
    for name, value in (("width", width), ("height", height)):
        if value > MAX_SIDE:
            raise UsageError(f"the hires {name} {value} is over {MAX_SIDE} pixels; use a smaller --hires")
        if value % multiple:
            raise UsageError(
                f"--hires-size {name} {value} is not valid for this model: use a multiple of {multiple}"
                f" (e.g. {max(multiple, value - value % multiple)})"
            )
    return width, height


def check_upscaler(job, transformer: bool) -> None:
    """--hires-upscaler latent resamples 4-channel UNet latents (SD 1.x/2.x/SDXL); a TRANSFORMER model's
    (SD 3.x, FLUX.1) are another shape: refused there, before the model loads."""
    if job.hires_upscaler == "latent" and transformer:
        raise UsageError("--hires-upscaler latent works with UNet models (SD 1.x/2.x/SDXL); use lanczos or nearest")


def upscale_image(image, size: tuple[int, int], upscaler: str):
    """The decoded first-pass IMAGE resampled to SIZE (lanczos or nearest). A size of another aspect
    covers it and is cut from its centre, as A1111's hires resize does."""
    from PIL import Image

    resample = Image.NEAREST if upscaler == "nearest" else Image.LANCZOS
    width, height = size
    cover = max(width / image.width, height / image.height)
    full = (max(width, round(image.width * cover)), max(height, round(image.height * cover)))
    out = image.resize(full, resample)
    if full != size:
        left, top = (full[0] - width) // 2, (full[1] - height) // 2
        out = out.crop((left, top, left + width, top + height))
    return out


def upscale_latents(latents, size: tuple[int, int], vae_factor: int):
    """The first pass's LATENTS resampled (bilinear, as A1111's "Latent" upscaler) to SIZE in pixels."""
    import torch.nn.functional as F

    return F.interpolate(latents, size=(size[1] // vae_factor, size[0] // vae_factor), mode="bilinear")


def a1111_fields(job: dict) -> dict:
    """The `parameters` fields A1111 writes for a hires image of the recorded JOB (metadata.a1111_parameters)."""
    fields = {"Denoising strength": job.get("hires_strength")}
    if job.get("hires") is not None:
        fields["Hires upscale"] = f"{job['hires']:g}"
    else:
        fields["Hires resize"] = job.get("hires_size")
    fields["Hires steps"] = job.get("hires_steps") or job.get("steps")  # unset: the job's steps (A1111's 0)
    upscaler = job.get("hires_upscaler")
    fields["Hires upscaler"] = A1111_NAMES.get(upscaler, upscaler)
    return fields


def from_a1111(name) -> str | None:
    """Our upscaler for an A1111 hr_upscaler NAME (None: the default); unknown names a UsageError."""
    if name is None or name == "":
        return None
    ours = FROM_A1111.get(str(name).lower())
    if ours is None:
        known = ", ".join(sorted({"Latent", "Lanczos", "Nearest", "None"}))
        raise UsageError(f"hr_upscaler '{str(name)[:60]}' is not supported; use one of: {known}")
    return ours
