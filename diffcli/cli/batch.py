"""`diffcli batch`: run a list of jobs in one process (docs/batch.md)."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Annotated, Optional

import typer

from diffcli.cli.options import GEN, SHARED_GENERATION, Compile, keyword

BATCH = "Batch"

Source = Annotated[
    str,
    typer.Argument(
        help="Job list: JSON lines (.jsonl, one job object per line) or text (one prompt per line); - reads stdin.",
        metavar="JOBS",
        show_default=False,
    ),
]
Task = Annotated[
    str,
    typer.Option(
        "--task", help="Task of lines that name none: txt2img, img2img, inpaint, outpaint or edit.", rich_help_panel=GEN
    ),
]
KeepGoing = Annotated[
    bool,
    typer.Option(
        "--keep-going",
        help=(
            "Skip bad lines and failed jobs (reported on stderr) instead of stopping; exit 1 if any job failed or "
            "any line was bad."
        ),
        rich_help_panel=BATCH,
    ),
]
Shard = Annotated[
    Optional[str],
    typer.Option(
        "--shard",
        help=(
            "Run only share I of N (0-based I/N): every N-th job from the I-th, for job arrays. Under accelerate "
            "launch or torchrun each process takes its rank's share by itself."
        ),
        rich_help_panel=BATCH,
        show_default=False,
    ),
]
Launcher = Annotated[
    Optional[str],
    typer.Option(
        "--launcher",
        help=(
            "Spread the jobs over several processes: accelerate (this machine's GPUs, or CPU processes) or ray (a "
            "Ray cluster, or a local Ray); see docs/batch.md."
        ),
        rich_help_panel=BATCH,
        show_default=False,
    ),
]
Processes = Annotated[
    Optional[int],
    typer.Option(
        "--processes",
        help="With --launcher: how many processes (accelerate) or Ray workers. Default: one per GPU, else 1.",
        rich_help_panel=BATCH,
        show_default=False,
    ),
]
Address = Annotated[
    Optional[str],
    typer.Option(
        "--address",
        help=(
            "With --launcher ray: the Ray cluster to join (e.g. auto, or ray://head:10001). Default: RAY_ADDRESS, "
            "else a local Ray for this batch."
        ),
        rich_help_panel=BATCH,
        show_default=False,
    ),
]

HELP = """Run many jobs in one process: each model loads once, finished jobs are skipped on a rerun.

Examples:

  diffcli batch jobs.jsonl -o out/

  diffcli batch prompts.txt --model tiny-lcm -n 4 -o out/

  cat jobs.jsonl | diffcli batch - --json -o out/

  diffcli batch jobs.jsonl -o out/ --shard 2/8    (one task of a job array)

  diffcli batch jobs.jsonl -o out/ --launcher accelerate --processes 2

  diffcli batch jobs.jsonl -o /shared/out --launcher ray --address auto
"""

_EXCLUDED = {"from_image", "save_partial"}


def batch(**params) -> None:
    from diffcli.batch import read_lines, rejected_share, run_batch, shard_of
    from diffcli.errors import EXIT_FAILURE, UsageError
    from diffcli.flags import run_options
    from diffcli.jobs import Job
    from diffcli.launch import launched
    from diffcli.progress import make_reporter

    task = params["task"].lower()
    if task not in ("txt2img", "img2img", "inpaint", "outpaint", "edit"):
        raise UsageError(f"invalid --task '{params['task']}'; use txt2img, img2img, inpaint, outpaint or edit")
    if params.get("model") == "":
        raise UsageError("--model is empty; name a model, or leave the flag out for the default")
    base = Job(task=task, **{f.name: params.get(f.name) for f in dataclasses.fields(Job) if f.name != "task"})
    launcher = _launcher(params)
    if launcher is not None or launched():
        from diffcli.launch import launch_batch, rank_batch

        if launcher is not None:
            code = launch_batch(launcher, params, base, params["processes"], params["address"])
        else:
            shard_of(params["shard"])  # a bad --shard fails before the ranks meet
            code = rank_batch(params, base, run_options(params, base))
        if code:
            raise typer.Exit(code)
        return
    shard = shard_of(params["shard"])
    reporter = make_reporter(params["json"], params["quiet"])
    try:
        lines = read_lines(params["source"], base, params["keep_going"], reporter.warn)
        failed = run_batch(
            lines,
            params["out"],
            params["format"],
            run_options(params, base),
            reporter,
            params["keep_going"],
            shard,
            batch_size=params.get("batch_size") or 1,
            rejected=rejected_share(lines.rejected, shard),
        )
    finally:
        reporter.close()
    if failed:
        raise typer.Exit(EXIT_FAILURE)


def _launcher(params: dict) -> str | None:
    from diffcli.errors import UsageError
    from diffcli.launch import LAUNCHERS, launched

    name = params["launcher"].lower() if params["launcher"] is not None else None
    if name is not None and name not in LAUNCHERS:
        raise UsageError(f"invalid --launcher '{params['launcher']}'; use {' or '.join(LAUNCHERS)}")
    if name is not None and launched():
        raise UsageError("--launcher inside a launched process; give either --launcher or accelerate launch, not both")
    if params["processes"] is not None and params["processes"] < 1:
        raise UsageError(f"--processes must be at least 1 (got {params['processes']})")
    if params["processes"] is not None and name is None:
        raise UsageError("--processes needs --launcher accelerate or --launcher ray")
    if params["address"] is not None and name != "ray":
        raise UsageError("--address needs --launcher ray")
    return name


def register(app: typer.Typer) -> None:
    shared = [p for p in SHARED_GENERATION if p.name not in _EXCLUDED]
    signature = [
        inspect.Parameter("source", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Source),
        keyword("task", Task, "txt2img"),
        keyword("keep_going", KeepGoing, False),
        keyword("shard", Shard),
        keyword("launcher", Launcher),
        keyword("processes", Processes),
        keyword("address", Address),
        keyword("compile", Compile, False),
    ]
    batch.__signature__ = inspect.Signature(signature + shared)
    app.command(name="batch", help=HELP)(batch)
