"""Commands that load no model: `schedulers`, `info`, `device`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]


def schedulers(json_out: JsonFlag = False) -> None:
    """List the sampler names --scheduler accepts."""
    from diffcli.schedulers import SCHEDULERS

    if json_out:
        rows = [{"name": s.name, "class": s.cls, "a1111": s.a1111, "summary": s.summary, "options": s.options}
                for s in SCHEDULERS.values()]
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("name", "diffusers class", "A1111 name", "notes", box=None, header_style="bold")
    for s in SCHEDULERS.values():
        table.add_row(s.name, s.cls, s.a1111, s.summary)
    Console(soft_wrap=True).print(table)


def info(
    image: Annotated[Path, typer.Argument(help="An image made by diffcli (or AUTOMATIC1111).", show_default=False)],
    json_out: JsonFlag = False,
) -> None:
    """Show the generation parameters recorded in an image."""
    from diffcli.errors import UsageError
    from diffcli.metadata import read

    params, record = read(image)
    if params is None and record is None:
        raise UsageError(f"{image}: no generation parameters recorded in this image")
    if json_out:
        typer.echo(json.dumps(record if record is not None else {"parameters": params}, indent=2))
        return
    if params:
        typer.echo(params)
    if record:
        job = record.get("job", {})
        model = record.get("model", {})
        typer.echo(f"Task: {job.get('task')}, Model source: {model.get('source')}, Device: {record.get('device')}, "
                   f"Dtype: {record.get('dtype')}")


def device(
    device: Annotated[str, typer.Option("--device", help="What to check: auto, cpu, cuda, cuda:N or mps.")] = "auto",
    dtype: Annotated[str, typer.Option("--dtype", help="auto, float32, float16 or bfloat16.")] = "auto",
    json_out: JsonFlag = False,
) -> None:
    """Show what --device/--dtype auto pick on this machine, and why."""
    from diffcli.device import choose, validate

    validate(device, dtype)
    choice = choose(device, dtype)
    import torch

    facts = {
        "device": choice.device,
        "dtype": choice.dtype,
        "reason": choice.reason,
        "torch": torch.__version__,
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "mps": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()),
        "cpu_threads": torch.get_num_threads(),
    }
    if json_out:
        typer.echo(json.dumps(facts, indent=2))
        return
    for key, value in facts.items():
        sys.stdout.write(f"{key}: {value}\n")


def register(app: typer.Typer) -> None:
    app.command("schedulers")(schedulers)
    app.command("info")(info)
    app.command("device")(device)
