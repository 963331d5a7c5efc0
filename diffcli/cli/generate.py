"""`diffcli txt2img | img2img | inpaint | outpaint`: one implementation, four command signatures."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Annotated, Optional

import typer

from diffcli.cli.options import GEN, SHARED_GENERATION, Compile, InputImage, NoServer, job_flag, keyword
from diffcli.errors import UsageError
from diffcli.flags import option_values, run_options
from diffcli.jobs import Job

Prompt = Annotated[job_flag("prompt"), typer.Argument(help="What to draw.", metavar="PROMPT", show_default=False)]
Strength = Annotated[
    job_flag("strength"),
    typer.Option("--strength", help="How much to change the input, in (0, 1].", rich_help_panel=GEN),
]
Mask = Annotated[
    job_flag("mask"), typer.Option("--mask", help="Mask image: white = repaint, black = keep.", rich_help_panel=GEN)
]
MaskBlur = Annotated[
    job_flag("mask_blur"),
    typer.Option(
        "--mask-blur", help="Feather the mask edge by this many pixels (inside the mask).", rich_help_panel=GEN
    ),
]
Instruction = Annotated[
    job_flag("prompt"),
    typer.Argument(
        help='What to change, as an instruction ("make it winter"); optional with --from: the recorded one.',
        metavar="INSTRUCTION",
        show_default=False,
    ),
]
EditMask = Annotated[
    job_flag("mask"),
    typer.Option(
        "--mask",
        help="Edit only the masked (white) area (FLUX.1 Kontext: its inpainting pipeline).",
        rich_help_panel=GEN,
        show_default=False,
    ),
]
ImageCfg = Annotated[
    job_flag("image_cfg"),
    typer.Option(
        "--image-cfg",
        help="Image guidance: how closely the result keeps to the input (InstructPix2Pix; default 1.5).",
        rich_help_panel=GEN,
        show_default=False,
    ),
]
References = Annotated[
    job_flag("references"),
    typer.Option(
        "--reference",
        "-r",
        metavar="IMAGE",
        help="A reference image beside the input, where the model's edit pipeline takes one (repeatable).",
        rich_help_panel=GEN,
        show_default=False,
    ),
]
HIRES = "Hires fix"
Hires = Annotated[
    job_flag("hires"),
    typer.Option(
        "--hires",
        metavar="SCALE",
        help=(
            "Hires fix: generate at --width x --height, upscale the result by SCALE (over 1, at most 4) and redraw "
            "it with an img2img pass (--hires-strength, --hires-steps), as A1111's Hires. fix."
        ),
        rich_help_panel=HIRES,
        show_default=False,
    ),
]
HiresSize = Annotated[
    job_flag("hires_size"),
    typer.Option(
        "--hires-size",
        metavar="WxH",
        help="Hires fix to this size instead of a --hires scale; one side 0 follows the aspect (A1111's hr_resize).",
        rich_help_panel=HIRES,
        show_default=False,
    ),
]
HiresUpscaler = Annotated[
    job_flag("hires_upscaler"),
    typer.Option(
        "--hires-upscaler",
        metavar="lanczos|nearest|latent",
        help=(
            "What upscales the first pass: lanczos (default) or nearest resample the decoded image; latent "
            "resamples the latents (A1111's 'Latent'; UNet models)."
        ),
        rich_help_panel=HIRES,
        show_default=False,
    ),
]
HiresStrength = Annotated[
    job_flag("hires_strength"),
    typer.Option(
        "--hires-strength",
        help="How much the hires pass redraws, in (0, 1]; default: the model's (0.2 for the bundled models), "
        "else 0.7 (A1111's).",
        rich_help_panel=HIRES,
        show_default=False,
    ),
]
HiresSteps = Annotated[
    job_flag("hires_steps"),
    typer.Option(
        "--hires-steps",
        help="Steps of the hires pass (it runs steps x strength of them); default: --steps.",
        rich_help_panel=HIRES,
        show_default=False,
    ),
]
OutpaintImage = Annotated[
    job_flag("image"),
    typer.Argument(help="Input image (optional with --from: the recorded one).", metavar="IMAGE", show_default=False),
]
Extend = Annotated[
    job_flag("extend"),
    typer.Option(
        "--extend",
        metavar="L,T,R,B",
        help="Pixels to add: L,T,R,B, or one amount for every side; pixels or a percentage of the image (25%).",
        rich_help_panel=GEN,
        show_default=False,
    ),
]
To = Annotated[
    Optional[str],
    typer.Option(
        "--to",
        metavar="WxH",
        help="Canvas size WIDTHxHEIGHT (instead of --extend); --anchor places the image in it.",
        rich_help_panel=GEN,
        show_default=False,
    ),
]
Anchor = Annotated[
    job_flag("anchor"),
    typer.Option(
        "--anchor",
        metavar="WHERE",
        help=(
            "With --to: where the image sits: center (default), left, right, top, bottom, top-left, top-right, "
            "bottom-left, bottom-right."
        ),
        rich_help_panel=GEN,
        show_default=False,
    ),
]
InpaintModel = Annotated[
    job_flag("inpaint_model"),
    typer.Option(
        "--inpaint-model",
        metavar="auto|on|off",
        help=(
            "Who paints the new area: auto (default): the model family's inpainting model when it is on this "
            "machine, else --model with the mask; on: the inpainting model or an error; off: --model with the mask."
        ),
        rich_help_panel=GEN,
        show_default=False,
    ),
]
Fill = Annotated[
    job_flag("fill"),
    typer.Option(
        "--fill",
        metavar="HOW",
        help=(
            "What the new area holds before denoising: blur (default), edge or noise; used at --strength below 1 "
            "(default 0.9)."
        ),
        rich_help_panel=GEN,
        show_default=False,
    ),
]


def _positional(name: str, annotation, default=inspect.Parameter.empty) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default, annotation=annotation)


COMMANDS = {
    "txt2img": (
        "Generate images from a text prompt.",
        [
            _positional("prompt", Prompt, None),
            keyword("hires", Hires),
            keyword("hires_size", HiresSize),
            keyword("hires_upscaler", HiresUpscaler),
            keyword("hires_strength", HiresStrength),
            keyword("hires_steps", HiresSteps),
        ],
    ),
    "img2img": (
        "Redraw an image guided by a prompt (--strength says how much).",
        [_positional("image", InputImage), _positional("prompt", Prompt, None), keyword("strength", Strength)],
    ),
    "inpaint": (
        "Repaint the masked (white) region of an image; everything outside stays exactly as it was.",
        [
            _positional("image", InputImage),
            _positional("prompt", Prompt, None),
            keyword("mask", Mask),
            keyword("strength", Strength),
            keyword("mask_blur", MaskBlur),
        ],
    ),
    "edit": (
        "Edit an image as an instruction says (InstructPix2Pix, FLUX.1 Kontext); the output keeps its size.",
        [
            _positional("image", OutpaintImage, None),
            _positional("prompt", Instruction, None),
            keyword("references", References),
            keyword("image_cfg", ImageCfg),
            keyword("mask", EditMask),
        ],
    ),
    "outpaint": (
        "Extend the canvas of an image and paint the new area; the original pixels stay exactly as they were.",
        [
            _positional("image", OutpaintImage, None),
            _positional("prompt", Prompt, None),
            keyword("extend", Extend),
            keyword("to", To),
            keyword("anchor", Anchor),
            keyword("fill", Fill),
            keyword("strength", Strength),
            keyword("mask_blur", MaskBlur),
            keyword("inpaint_model", InpaintModel),
        ],
    ),
}


def build_job(task: str, params: dict) -> Job:
    """The Job described by the flags, laid over the one recorded in --from (explicit flags win).

    An edit without a prompt takes the one recorded in its input image, as upscale does."""
    if params.get("to") is not None:  # outpaint --to WxH: the canvas is the job's size
        from diffcli.outpaint import parse_size

        if params.get("width") is not None or params.get("height") is not None:
            raise UsageError("--to gives the canvas width and height; leave out --width/--height")
        if params.get("extend") is not None:
            raise UsageError("give --extend or --to, not both")
        params = {**params, **dict(zip(("width", "height"), parse_size(params["to"])))}
    job = Job(task=task, **{f.name: params.get(f.name) for f in dataclasses.fields(Job) if f.name != "task"})
    if job.model == "":
        raise UsageError("--model is empty; name a model, or leave the flag out for the default")
    if params.get("from_image"):
        from diffcli.metadata import job_from_image

        job = job.merged_over(job_from_image(params["from_image"]))
    elif job.prompt is None and task == "txt2img":
        raise UsageError("missing PROMPT (or --from IMAGE)")
    elif job.prompt is None and job.image and task != "edit":  # (an edit's instruction is never a recorded prompt)
        from diffcli.metadata import recorded_prompt

        job = dataclasses.replace(job, prompt=recorded_prompt(job.image))
    return job


def execute(task: str, params: dict) -> None:
    from diffcli.progress import make_reporter
    from diffcli.run import run

    option_values(params)  # the option flags (--offload's choices) are checked first
    if params.get("compile"):
        raise UsageError(
            "--compile pays off only over many images of one process: use `diffcli batch --compile` "
            "or `diffcli serve --compile` (a single command would pay the compile for one image)"
        )
    job = build_job(task, params)
    opts = run_options(params, job)
    reporter = make_reporter(params["json"], params["quiet"])
    try:
        from diffcli.serve.client import connect  # a running `diffcli serve` runs it, with models loaded

        if not params.get("no_server") and (client := connect(reporter)) is not None:
            return client.run(job, opts, reporter)
        run(job, opts, reporter)
    finally:
        reporter.close()


def _make(task: str, help_text: str, positional: list[inspect.Parameter]):
    def command(**params) -> None:
        execute(task, params)

    command.__name__ = task
    command.__doc__ = help_text
    command.__signature__ = inspect.Signature(
        positional + SHARED_GENERATION + [keyword("no_server", NoServer, False), keyword("compile", Compile, False)]
    )
    return command


def register(app: typer.Typer) -> None:
    for task, (help_text, positional) in COMMANDS.items():
        app.command(name=task, help=help_text)(_make(task, help_text, positional))
