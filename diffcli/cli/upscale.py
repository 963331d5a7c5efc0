"""`diffcli upscale`: make an image larger, adding detail with a diffusion model (docs/upscale.md).

A front door like the generation commands: its flags become a Job of task "upscale" and RunOptions
(flags.run_options), which the engine runs (diffcli.run, or a running `diffcli serve`)."""

from __future__ import annotations

from typing import Annotated

import typer

from diffcli.cli import options as o
from diffcli.cli.options import UPSCALE, job_flag

Scale = Annotated[
    job_flag("scale"),
    typer.Option(
        "--scale",
        "-s",
        help="Integer factor: the output is exactly input x scale (default: the upscaler model's own factor, else 2).",
        rich_help_panel=UPSCALE,
    ),
]
Method = Annotated[
    str,
    typer.Option(
        "--method",
        help=(
            "auto, model (a dedicated upscaler model), tiled (img2img over tiles with any text-to-image model) or "
            "lanczos (no model). auto: model if --model is an upscaler, else tiled."
        ),
        rich_help_panel=UPSCALE,
    ),
]
# the prompt is an option here (the generation commands take it as an argument), defaulting to the input's
UpscalePrompt = Annotated[
    job_flag("prompt"),
    typer.Option(
        "--prompt",
        "-p",
        help="What the image shows (default: the prompt recorded in the input image, if any).",
        rich_help_panel=UPSCALE,
    ),
]
# Job.strength, as tiled upscaling uses it (its default is upscale's, not img2img's)
TiledStrength = Annotated[
    job_flag("strength"),
    typer.Option(
        "--strength",
        help="tiled: how much each tile may change, in (0, 1] (default 0.3; 0.1 for the bundled model).",
        rich_help_panel=UPSCALE,
    ),
]
NoiseLevel = Annotated[
    job_flag("noise_level"),
    typer.Option(
        "--noise-level",
        help="x4 upscaler: noise added to the low-resolution input (default 20).",
        rich_help_panel=UPSCALE,
    ),
]
TileSize = Annotated[
    job_flag("tile_size"),
    typer.Option(
        "--tile-size",
        help=(
            "Size of the tiles the model processes, in pixels it sees: output pixels for tiled (default: the "
            "model's native size), input pixels for model."
        ),
        rich_help_panel=UPSCALE,
    ),
]
Overlap = Annotated[
    job_flag("overlap"),
    typer.Option(
        "--overlap",
        help="Pixels shared by neighbouring tiles, blended (default: tile size / 4, at most 64).",
        rich_help_panel=UPSCALE,
    ),
]
Fidelity = Annotated[
    job_flag("fidelity"),
    typer.Option(
        "--fidelity",
        help=(
            "How tiles are tied to the input: backproject (default: correct each tile until, downsampled, it "
            "matches the input); none; lowpass (keep the model's detail, take colours and shading from the "
            "lanczos-resampled input)."
        ),
        rich_help_panel=UPSCALE,
    ),
]


def upscale(
    image: o.InputImage,
    scale: Scale = None,
    method: Method = "auto",
    prompt: UpscalePrompt = None,
    strength: TiledStrength = None,
    noise_level: NoiseLevel = None,
    tile_size: TileSize = None,
    overlap: Overlap = None,
    max_pixels: o.OutputMaxPixels = None,
    fidelity: Fidelity = None,
    model: o.Model = None,
    negative: o.Negative = None,
    steps: o.Steps = None,
    cfg: o.Cfg = None,
    seed: o.TileSeed = None,
    scheduler: o.Scheduler = None,
    shift: o.Shift = None,
    device: o.Device = None,
    dtype: o.Dtype = None,
    offload: o.Offload = None,
    vae_tiling: o.VaeTiling = False,
    attention_slicing: o.AttentionSlicing = False,
    offline: o.Offline = False,
    allow_pickle: o.AllowPickle = False,
    out: o.Out = None,
    format: o.Format = None,
    overwrite: o.Overwrite = False,
    json: o.Json = False,
    quiet: o.Quiet = False,
    debug: o.Debug = False,
    no_server: o.NoServer = False,
) -> None:
    """Upscale an image: exactly input x --scale, with detail added by a diffusion model, in tiles."""
    params = dict(locals())  # the flags, by parameter name (flags.run_options reads the options among them)
    from diffcli.flags import run_options
    from diffcli.jobs import Job
    from diffcli.progress import make_reporter
    from diffcli.run import run

    job = Job(
        task="upscale",
        image=image,
        scale=scale,
        method=method.lower(),
        model=model,
        prompt=prompt,
        negative=negative,
        strength=strength,
        noise_level=noise_level,
        tile_size=tile_size,
        overlap=overlap,
        steps=steps,
        cfg=cfg,
        seed=seed,
        scheduler=scheduler,
        shift=shift,
        device=device,
        dtype=dtype,
        fidelity=fidelity.lower() if fidelity else None,
    )
    opts = run_options(params, job)  # --max-pixels: the output's pixels (upscale.rules, RunOptions.max_pixels)
    reporter = make_reporter(json, quiet)
    try:
        from diffcli.serve.client import connect  # a running `diffcli serve` runs it, with models loaded

        if not no_server and (client := connect(reporter)) is not None:
            client.run(job, opts, reporter)
            return
        run(job, opts, reporter)
    finally:
        reporter.close()


def register(app: typer.Typer) -> None:
    app.command(name="upscale")(upscale)
