"""What an upscale Job may ask, checked before anything is read (no torch, no model): the values of its
own fields (jobs.Job's scale, method, noise_level, tile_size, overlap, fidelity), their defaults, and the
generation fields it does not take. A leaf: jobs.validate and settings use it, and it imports neither."""

from __future__ import annotations

from diffcli.errors import UsageError

METHODS = ("auto", "model", "tiled", "lanczos")
FIDELITIES = ("none", "lowpass", "backproject")
DEFAULT_METHOD = "auto"
DEFAULT_SCALE = 2  # a text-to-image model's (tiled) and lanczos'; an upscaler model does its own factor only
MAX_SCALE = 16
DEFAULT_MAX_PIXELS = 8192 * 8192  # 64 Mpx: below Pillow's decompression-bomb limit, so outputs read back
DEFAULT_STRENGTH = 0.3  # the usual "SD upscale" strength for SD-family models on 512-px tiles (a family may say)
DEFAULT_NOISE_LEVEL = 20  # StableDiffusionUpscalePipeline's own default
DEFAULT_FIDELITY = "backproject"  # best PSNR of the three on 3 of 4 measured pairs (docs/upscale.md)

# Generation fields an upscale does not take (refused when set), and those it takes at one value only:
# what settle gives every upscale (settings.TASK_BUILTIN); a settled job sent on to a server carries them.
NOT_TAKEN = (
    "base",
    "quantize",
    "mask",
    "mask_blur",
    "extend",
    "anchor",
    "fill",
    "inpaint_model",
    "lora",
    "control",
    "control_preprocess",
)
FIXED = {"num_images": 1, "batch_size": 1, "prompt_syntax": "plain", "cache": "none", "vae_decoder": "full"}


def check_job(job) -> None:
    """Usage errors for an upscale JOB's own fields, and for generation fields it does not take."""
    if job.method is not None and job.method not in METHODS:
        raise UsageError(f"unknown --method '{job.method}'; use one of {', '.join(METHODS)}")
    if job.fidelity is not None and job.fidelity not in FIDELITIES:
        raise UsageError(f"unknown --fidelity '{job.fidelity}'; use one of {', '.join(FIDELITIES)}")
    if job.scale is not None and not 2 <= job.scale <= MAX_SCALE:
        raise UsageError(f"--scale must be between 2 and {MAX_SCALE} (got {job.scale})")
    if job.noise_level is not None and job.noise_level < 0:
        raise UsageError(f"--noise-level must be 0 or more (got {job.noise_level})")
    if job.tile_size is not None and job.tile_size < 1:
        raise UsageError(f"--tile-size must be positive (got {job.tile_size})")
    if job.overlap is not None and job.overlap < 0:
        raise UsageError(f"--overlap must be 0 or more (got {job.overlap})")
    if job.tile_size is not None and job.overlap is not None and job.overlap >= job.tile_size:
        raise UsageError(f"--overlap {job.overlap} must be smaller than --tile-size {job.tile_size}")
    if not job.image:
        raise UsageError("upscale needs an input image")
    refused = [name for name in NOT_TAKEN if getattr(job, name) is not None]
    if refused:
        raise UsageError(f"{', '.join(refused)}: not taken by upscale")
    for name, value in FIXED.items():
        if getattr(job, name) not in (None, value):
            raise UsageError(f"upscale takes {name} {value!r} only (got {getattr(job, name)!r})")
