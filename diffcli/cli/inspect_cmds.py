"""Commands that load no model: `schedulers`, `info`, `device`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from diffcli.cli.output_flags import output_flag

JsonFlag = output_flag("json", "Machine-readable output on stdout.")


def schedulers(json_out: JsonFlag = False) -> None:
    """List the sampler names --scheduler accepts, and the model families each applies to."""
    from diffcli.schedulers import SCHEDULERS

    if json_out:
        rows = [
            {
                "name": s.name,
                "class": s.cls,
                "a1111": s.a1111,
                "summary": s.summary,
                "options": s.options,
                "flow_matching": s.flow,
                "shift": s.custom_timesteps,
                "families": s.applies_to.split(", "),
            }
            for s in SCHEDULERS.values()
        ]
        typer.echo(json.dumps(rows, indent=2))
        return
    if not _stdout_is_terminal():
        # piped: one complete line per sampler, tab-separated (name, diffusers class, A1111 name, notes,
        # families), never wrapped or cut, so `cut -f1` and `grep` see every row whole
        for s in SCHEDULERS.values():
            sys.stdout.write(f"{s.name}\t{s.cls}\t{s.a1111}\t{s.summary}\t{s.applies_to}\n")
        sys.stdout.flush()
        return
    from rich.console import Console
    from rich.table import Column, Table

    # on a narrow terminal cells wrap (long class names fold) but nothing is cut off with "…"
    table = Table(
        Column("name", no_wrap=True),
        Column("diffusers class", overflow="fold"),
        "A1111 name",
        "notes",
        "families",
        box=None,
        header_style="bold",
    )
    for s in SCHEDULERS.values():
        table.add_row(s.name, s.cls, s.a1111, s.summary, s.applies_to)
    Console(soft_wrap=True).print(table)


def _stdout_is_terminal() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def info(
    image: Annotated[
        Path, typer.Argument(help="An image made by diffcli (or AUTOMATIC1111).", metavar="IMAGE", show_default=False)
    ],
    json_out: JsonFlag = False,
) -> None:
    """Show the generation parameters recorded in an image."""
    from diffcli.errors import UsageError
    from diffcli.metadata import read
    from diffcli.text import escape

    params, record = read(image)
    if params is None and record is None:
        raise UsageError(f"{image}: no generation parameters recorded in this image")
    if json_out:  # JSON escapes control characters itself
        typer.echo(json.dumps(record if record is not None else {"parameters": params}, indent=2))
        return
    if params:  # text from a file anyone could have made: never send its escape sequences to the terminal
        typer.echo(escape(params, keep_newlines=True))
    if record:
        job = record.get("job") if isinstance(record.get("job"), dict) else {}
        model = record.get("model") if isinstance(record.get("model"), dict) else {}
        typer.echo(
            escape(
                f"Task: {job.get('task')}, Model source: {model.get('source')}, "
                f"Device: {record.get('device')}, Dtype: {record.get('dtype')}"
            )
        )


def device(
    device: Annotated[str, typer.Option("--device", help="What to check: auto, cpu, cuda, cuda:N or mps.")] = "auto",
    dtype: Annotated[str, typer.Option("--dtype", help="auto, float32, float16 or bfloat16.")] = "auto",
    json_out: JsonFlag = False,
) -> None:
    """Show what --device/--dtype auto pick on this machine, and why."""
    from diffcli.device import choose, compile_freezing, memory_format, validate

    validate(device, dtype)
    choice = choose(device, dtype)
    import torch

    layout, layout_why = memory_format(choice.device, choice.dtype)
    frozen, frozen_why = compile_freezing(choice.device, choice.dtype)
    facts = {
        "device": choice.device,
        "dtype": choice.dtype,
        "reason": choice.reason,
        "memory_format": "channels_last" if layout else "contiguous",
        "memory_format_reason": layout_why,
        "compile": "frozen" if frozen else "plain",  # what batch/serve --compile does
        "compile_reason": frozen_why,
        "torch": torch.__version__,
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "mps": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()),
        "cpu_threads": torch.get_num_threads(),
    }
    facts.update(_memory_facts(choice, torch))
    if json_out:
        typer.echo(json.dumps(facts, indent=2))
        return
    for key, value in facts.items():
        if key != "fits":
            sys.stdout.write(f"{key}: {value}\n")
    sys.stdout.write(
        f"what fits in {facts['memory_gib']} GiB of {facts['memory_of']} at {choice.dtype} "
        f"(estimated from published parameter counts):\n"
    )
    for row in facts["fits"]:
        sys.stdout.write(
            f"  {row['model']:<24} {row['weights']:<10} {row['weights_gib']:>6.1f} GiB  {row['verdict']}\n"
        )


def _memory_facts(choice, torch) -> dict:
    """The chosen device's memory and which well-known models fit in it (diffcli.fit)."""
    import os

    from diffcli.fit import verdicts

    if choice.device.startswith("cuda"):
        index = int(choice.device.split(":")[1]) if ":" in choice.device else 0
        memory, of = torch.cuda.get_device_properties(index).total_memory, f"{choice.device} memory"
    else:
        try:
            memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (AttributeError, ValueError, OSError):
            memory = 0
        of = "system memory (shared with the GPU)" if choice.device == "mps" else "system memory"
    gib = round(memory / 2**30, 1)
    return {
        "memory_gib": gib,
        "memory_of": of,
        "fits": verdicts(gib, choice.dtype, can_offload=choice.device.startswith("cuda")),
    }


def register(app: typer.Typer) -> None:
    app.command("schedulers")(schedulers)
    app.command("info")(info)
    app.command("device")(device)
