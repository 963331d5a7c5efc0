"""`diffcli mcp`: the engine as tools for AI agents, over the Model Context Protocol on stdio (docs/mcp.md).

A front door like the commands: a tool's arguments are Job fields, their JSON Schema derived from the Job
declaration (diffcli.schema), converted and checked by the typed layer every door uses; the Job then runs on
this user's running `diffcli serve` when there is one (none is started), else on the engine in this
process (models stay loaded between calls). A tool returns the written images as MCP image contents (PNG,
base64) and their paths as text; the engine's step events become MCP progress notifications (when the
client sends a progress token); an error is a tool error with the CLI's one-line message, never the end
of the server. Jobs run one at a time, in a worker thread, so the server keeps answering meanwhile.

The SDK (`pip install 'diffcli[mcp]'`) is imported only by serve(); the tool table and the conversion of
arguments into Jobs need neither it nor torch.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from diffcli import schema
from diffcli.errors import DiffcliError, UsageError
from diffcli.jobs import TASKS, Job, task_fields
from diffcli.progress import Reporter

# the Job fields an edit of an input image adds to text-to-image's, and those only outpaint takes
_INPUT_FIELDS = ("image", "mask", "mask_blur", "strength")
_OUTPAINT_FIELDS = ("extend", "anchor", "fill", "inpaint_model")

# what the schema says of the fields an agent most often sets (the others: their name and type)
_HELP = {
    "prompt": "What to draw.",
    "negative": "What not to draw.",
    "model": "Model: 'tiny' (bundled), a Hugging Face repo id, an alias (diffcli models list), or a path.",
    "steps": "Denoising steps (default: the model's).",
    "cfg": "Guidance scale (default: the model's).",
    "width": "Image width in pixels (default: the model's).",
    "height": "Image height in pixels (default: the model's).",
    "seed": "Seed; the same seed and settings give the same pixels (default: random, recorded).",
    "num_images": "How many images (seeds seed, seed+1, ...).",
    "scheduler": "Sampler name (diffcli schedulers).",
    "image": "Path of the input image (absolute, or relative to the server's working directory).",
    "strength": "How much to change the input, in (0, 1].",
    "scale": "Upscale factor: the output is exactly input x scale.",
    "method": "auto, model (an upscaler model), tiled (any text-to-image model) or lanczos (no model).",
}
_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean", list: "array", dict: "object"}


@dataclass(frozen=True)
class Tool:
    """One tool: the Job task it runs (None: it reads an image, `info`) and which Job fields it takes: the
    text-to-image ones, plus ADDS and the fields only its task takes (jobs.task_fields), less DROPS."""

    name: str
    task: str | None
    description: str
    adds: tuple[str, ...] = ()
    drops: tuple[str, ...] = ()
    required: tuple[str, ...] = ()

    def kinds(self) -> dict[str, schema.Wire]:
        """The arguments it takes, each with its type, in the Job's declaration order."""
        if self.task is None:
            return {"image": schema.Wire(str)}
        generation = {
            "task",
            *_INPUT_FIELDS,
            *_OUTPAINT_FIELDS,
            *(name for task in TASKS for name in task_fields(task)),
        }
        takes = set(self.adds) | set(task_fields(self.task))
        return {
            name: wire
            for name, wire in schema.wire_types(Job).items()
            if (name not in generation or name in takes) and name not in self.drops
        }

    def input_schema(self) -> dict:
        """Its arguments as JSON Schema, derived from the Job declaration (schema.wire_types)."""
        return {
            "type": "object",
            "properties": {name: _json_schema(name, wire) for name, wire in self.kinds().items()},
            "required": list(self.required),
            "additionalProperties": False,
        }


def _upscale_drops() -> tuple[str, ...]:
    """What an upscale does not take, or takes at one value only, and the size it decides itself."""
    from diffcli.upscale.rules import FIXED, NOT_TAKEN

    return ("width", "height", *NOT_TAKEN, *FIXED)


_TOOLS = (
    Tool("generate", "txt2img", "Generate images from a text prompt (diffcli txt2img).", required=("prompt",)),
    Tool(
        "img2img",
        "img2img",
        "Redraw an image guided by a prompt; strength says how much (diffcli img2img). Without a prompt: the "
        "one recorded in the image.",
        adds=("image", "strength"),
        required=("image",),
    ),
    # an instruction edit of an image: listed as soon as the engine has an `edit` task (jobs.TASKS); the
    # fields only that task takes come with it (declared with metadata only="edit", jobs.task_fields)
    Tool("edit", "edit", "Edit an image as the prompt says.", adds=("image",), required=("image", "prompt")),
    Tool(
        "upscale",
        "upscale",
        "Upscale an image to exactly input x scale, adding detail with a diffusion model (diffcli upscale).",
        adds=("image", "strength"),
        drops=_upscale_drops(),
        required=("image",),
    ),
    Tool(
        "info",
        None,
        "The generation parameters recorded in an image, as JSON (diffcli info --json).",
        required=("image",),
    ),
)


def tools() -> dict[str, Tool]:
    """The tools this engine offers, by name: those whose task it has."""
    return {t.name: t for t in _TOOLS if t.task is None or t.task in TASKS}


def _json_schema(name: str, wire: schema.Wire) -> dict:
    if wire.kind is schema.STRINGS:  # a list of strings; one string is a list of one
        out: dict = {"type": ["array", "string"], "items": {"type": "string"}}
    else:
        kinds = [_JSON_TYPES[wire.kind], *(_JSON_TYPES[k] for k in wire.also if k in _JSON_TYPES)]
        out = {"type": kinds[0] if len(kinds) == 1 else kinds}
    if wire.choices:
        out["enum"] = list(wire.choices)
    if name in _HELP:
        out["description"] = _HELP[name]
    return out


# a tool argument of the wrong type (schema.convert)
ARGUMENT_MESSAGE = "{tool}: '{name}' must be {want}, not {got} ({shown})"


def arguments_of(tool: Tool, arguments: dict | None) -> dict:
    """ARGUMENTS of a call of TOOL converted to their types by the typed layer (None values left out);
    unknown and missing ones refused."""
    if arguments is not None and not isinstance(arguments, dict):
        raise UsageError(f"{tool.name}: the arguments must be an object, not {schema.kind_of(arguments)}")
    values = schema.checked(
        arguments or {},
        tool.kinds(),
        says=ARGUMENT_MESSAGE,
        unknown="{tool}: unknown argument '{name}'",
        tool=tool.name,
    )
    missing = [name for name in tool.required if values.get(name) is None]
    if missing:
        raise UsageError(f"{tool.name}: missing argument {', '.join(repr(m) for m in missing)}")
    return values


def job_for(tool: Tool, arguments: dict | None) -> Job:
    """The Job a call of TOOL (not info) describes; ranges and combinations are the engine's to check
    (run.settle), as for any command."""
    values = arguments_of(tool, arguments)
    if values.get("model") == "":
        raise UsageError("--model is empty; name a model, or leave the flag out for the default")
    job = Job(task=tool.task, **values)
    if job.prompt is None and job.image and tool.task != "upscale":  # as the commands: the recorded prompt
        from dataclasses import replace

        from diffcli.metadata import recorded_prompt

        job = replace(job, prompt=recorded_prompt(job.image))
    return job


def info(tool: Tool, arguments: dict | None) -> str:
    """What `diffcli info --json IMAGE` prints."""
    from diffcli.metadata import read

    image = arguments_of(tool, arguments)["image"]
    params, record = read(image)
    if params is None and record is None:
        raise UsageError(f"{image}: no generation parameters recorded in this image")
    return json.dumps(record if record is not None else {"parameters": params}, indent=2)


# ---------------------------------------------------------------- running a job


class Cancelled(KeyboardInterrupt):
    """The client cancelled the call: raised in the engine where Ctrl-C would be, so the same clean-up runs."""


class Progress(Reporter):
    """The engine's events for one call: each denoising step a progress notification (SEND(progress,
    total, message), progress counting every step of the job), warnings kept for the result; raises
    Cancelled at the next step or phase once CANCELLED is set."""

    def __init__(self, send, cancelled: threading.Event) -> None:
        super().__init__()
        self.send = send
        self.cancelled = cancelled
        self.steps_done = 0  # steps so far, of every batch (not `done`: Reporter.done())
        self.before = 0  # steps before this batch
        self.batches = 1  # this batch and those still to come
        self.warnings: list[str] = []

    def _check(self) -> None:
        if self.cancelled.is_set():
            raise Cancelled()

    def phase(self, name: str, **data) -> None:
        self._check()

    def begin_batch(self, first_image: int, count: int, steps: int) -> None:
        self._check()
        self.before = self.steps_done
        self.batches = math.ceil(max(self.total_images - first_image + 1, count) / max(count, 1))

    def step(self, step: int, steps: int) -> None:
        """STEPS: this batch's (an img2img's fewer than the job's, by its strength)."""
        self.steps_done += 1
        total = max(self.before + steps * self.batches, self.steps_done)
        self.send(self.steps_done, total, f"step {step}/{steps}")
        self._check()

    def warn(self, message: str) -> None:
        self.warnings.append(message)


@dataclass(frozen=True)
class Door:
    """How this server runs jobs: OUT (absolute, the --out of every job), OFFLINE, and whether it may use
    a running `diffcli serve` (USE_SERVER)."""

    out: str
    offline: bool = False
    use_server: bool = True


_ONE_AT_A_TIME = threading.Lock()


def run_job(door: Door, job: Job, reporter: Progress) -> list[Path]:
    """Run JOB on the running server (when there is one and DOOR may) or here; the written paths."""
    from diffcli.flags import build_options

    results: list[str] = []  # the engine's stdout lines: the paths come back from run() instead
    opts = build_options({"out": door.out, "offline": door.offline, "results": results.append})
    with _ONE_AT_A_TIME:
        reporter._check()
        if door.use_server:
            from diffcli.serve.client import connect

            client = connect(reporter, start=False)  # a server of this user's; never one started for us
            if client is not None:
                return [Path(p) for p in client.run(job, opts, reporter)]
        from diffcli.run import run

        return run(job, opts, reporter)


def image_content(path: Path) -> str:
    """The image at PATH as base64 PNG (a JPEG or WebP output is sent as PNG)."""
    data = path.read_bytes()
    if path.suffix.lower() != ".png":
        from PIL import Image

        with Image.open(io.BytesIO(data)) as img:
            buffer = io.BytesIO()
            img.save(buffer, format="PNG")
            data = buffer.getvalue()
    return base64.b64encode(data).decode("ascii")


def call(door: Door, name: str, arguments: dict | None, reporter: Progress) -> tuple[list[str], str]:
    """Run tool NAME with ARGUMENTS: (the written images as base64 PNGs, text: their paths, or info's JSON).
    Raises DiffcliError with the CLI's message."""
    tool = tools().get(name)
    if tool is None:
        raise UsageError(f"unknown tool '{name}'; use one of {', '.join(tools())}")
    if tool.task is None:
        return [], info(tool, arguments)
    paths = run_job(door, job_for(tool, arguments), reporter)
    return [image_content(Path(p)) for p in paths], "\n".join(str(p) for p in paths)


def attempt(door: Door, name: str, arguments: dict | None, reporter: Progress) -> tuple[list[str], str, bool]:
    """call(), with any failure as its text: (images, text, whether it is an error). Never raises: an error
    is the call's, never the server's."""
    try:
        images, text = call(door, name, arguments, reporter)
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - KeyboardInterrupt: Cancelled
        return [], error_text(exc), True
    return images, text, False


def error_text(exc: BaseException) -> str:
    """The one line the CLI would print for EXC (after `diffcli: error: `)."""
    if isinstance(exc, DiffcliError):
        return str(exc)
    if isinstance(exc, KeyboardInterrupt):
        return "cancelled"
    return f"{type(exc).__name__}: {exc}"


# ---------------------------------------------------------------- the MCP server (the SDK from here on)


def serve(door: Door) -> None:
    """Answer MCP requests on stdin/stdout until stdin closes."""
    import anyio

    anyio.run(_serve, door)


async def _serve(door: Door) -> None:
    from mcp.server.lowlevel import Server
    from mcp.server.stdio import stdio_server

    from diffcli import __version__

    async def list_tools(ctx, params):
        from mcp import types

        return types.ListToolsResult(
            tools=[
                types.Tool(name=t.name, description=t.description, input_schema=t.input_schema())
                for t in tools().values()
            ]
        )

    async def call_tool(ctx, params):
        return await _call_tool(door, ctx, params)

    server = Server(
        "diffcli",
        version=__version__,
        instructions=(
            "Image generation with diffusion models: generate, img2img and upscale write PNG files "
            f"(under {door.out}) and return each image and its path; info reads an image's recorded settings."
        ),
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )
    async with stdio_server() as (read_stream, write_stream):  # (fd 1 goes to stderr meanwhile)
        await server.run(read_stream, write_stream, server.create_initialization_options())


async def _call_tool(door: Door, ctx, params):
    """One tools/call: the job in a worker thread, its steps as progress, any error as a tool error."""
    import anyio
    import anyio.from_thread
    import anyio.to_thread
    from mcp import types

    cancelled = threading.Event()

    def send(progress: float, total: float | None, message: str) -> None:
        try:
            anyio.from_thread.run(ctx.session.report_progress, progress, total, message)
        except Exception:  # noqa: BLE001 - a lost notification never stops the job
            pass

    reporter = Progress(send, cancelled)
    try:
        images, text, failed = await anyio.to_thread.run_sync(
            attempt, door, params.name, params.arguments, reporter, abandon_on_cancel=True
        )
    except anyio.get_cancelled_exc_class():
        cancelled.set()  # the job stops at its next step (its thread goes on until then)
        raise
    content: list = [types.ImageContent(type="image", data=data, mime_type="image/png") for data in images]
    content.append(types.TextContent(type="text", text=text))
    if reporter.warnings:
        content.append(types.TextContent(type="text", text="\n".join(f"warning: {w}" for w in reporter.warnings)))
    return types.CallToolResult(content=content, is_error=failed)


def absolute_out(out: str | None) -> str:
    """The --out of every job, absolute (the CLI's default: outputs/ in the working directory)."""
    from diffcli.output import DEFAULT_DIR

    text = os.path.expanduser(out) if out else DEFAULT_DIR + os.sep
    keep_separator = text.endswith(("/", os.sep))
    absolute = os.path.abspath(text)
    return absolute + os.sep if keep_separator else absolute
