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
        [_positional("prompt", Prompt, None)],
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
    elif job.prompt is None and job.image:
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
