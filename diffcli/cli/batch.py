"""`diffcli batch`: run a list of jobs in one process (docs/batch.md)."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Annotated, Optional

import typer

from diffcli.cli.options import GEN, OUT, SHARED_GENERATION, keyword

BATCH = "Batch"

Source = Annotated[str, typer.Argument(help="Job list: JSON lines (.jsonl, one job object per line) or text (one prompt per line); - reads stdin.", metavar="JOBS", show_default=False)]
Task = Annotated[str, typer.Option("--task", help="Task of lines that name none: txt2img, img2img or inpaint.", rich_help_panel=GEN)]
KeepGoing = Annotated[bool, typer.Option("--keep-going", help="Skip bad lines and failed jobs (reported on stderr) instead of stopping; exit 1 if any failed.", rich_help_panel=BATCH)]
Shard = Annotated[Optional[str], typer.Option("--shard", help="Run only share I of N (0-based I/N): every N-th job from the I-th, for job arrays. Under accelerate launch or torchrun each process takes its rank's share by itself.", rich_help_panel=BATCH, show_default=False)]

HELP = """Run many jobs in one process: each model loads once, finished jobs are skipped on a rerun.

Examples:

  diffcli batch jobs.jsonl -o out/

  diffcli batch prompts.txt --model tiny-lcm -n 4 -o out/

  cat jobs.jsonl | diffcli batch - --json -o out/

  diffcli batch jobs.jsonl -o out/ --shard 2/8    (one task of a job array)

  accelerate launch --num_processes 2 -m diffcli batch jobs.jsonl -o out/
"""

_EXCLUDED = {"from_image", "save_partial"}


def batch(**params) -> None:
    from diffcli.batch import read_lines, run_batch, shard_of
    from diffcli.cli.generate import run_options
    from diffcli.errors import EXIT_FAILURE, UsageError
    from diffcli.jobs import Job
    from diffcli.progress import make_reporter

    task = params["task"].lower()
    if task not in ("txt2img", "img2img", "inpaint"):
        raise UsageError(f"invalid --task '{params['task']}'; use txt2img, img2img or inpaint")
    if params.get("model") == "":
        raise UsageError("--model is empty; name a model, or leave the flag out for the default")
    base = Job(task=task, **{f.name: params.get(f.name) for f in dataclasses.fields(Job) if f.name != "task"})
    shard = shard_of(params["shard"])
    reporter = make_reporter(params["json"], params["quiet"])
    try:
        lines = read_lines(params["source"], base, params["keep_going"], reporter.warn)
        failed = run_batch(lines, params["out"], params["format"], run_options(params, base), reporter,
                           params["keep_going"], shard)
    finally:
        reporter.close()
    if failed:
        raise typer.Exit(EXIT_FAILURE)


def register(app: typer.Typer) -> None:
    shared = [p for p in SHARED_GENERATION if p.name not in _EXCLUDED]
    signature = [inspect.Parameter("source", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Source),
                 keyword("task", Task, "txt2img"), keyword("keep_going", KeepGoing, False), keyword("shard", Shard)]
    batch.__signature__ = inspect.Signature(signature + shared)
    app.command(name="batch", help=HELP)(batch)
