"""`diffcli models ...`: pull, list, info, rm, verify."""

from __future__ import annotations

import typer

app = typer.Typer(help="Fetch, list, inspect, verify and remove models.", no_args_is_help=True)
