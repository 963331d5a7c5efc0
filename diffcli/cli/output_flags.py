"""The output flags --json, --quiet and --debug: spelt here once for every command that takes one (its help
may say what the flag means there), and decided in one place each: the reporter by progress.make_reporter
(--json, --quiet; the generation commands, batch and its launched processes, upscale, distill), tracebacks
by debug_enabled (--debug, for every command, in app.DiffcliGroup).

Light on purpose (typer and the standard library): commands that load no model import it too.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

OUTPUT_FLAGS = {"json": ("--json",), "quiet": ("--quiet", "-q"), "debug": ("--debug",)}


def output_flag(name: str, help: str, **settings):
    """The flag NAME of OUTPUT_FLAGS (a boolean) with HELP (and Typer's SETTINGS, e.g. rich_help_panel)."""
    return Annotated[bool, typer.Option(*OUTPUT_FLAGS[name], help=help, **settings)]


def debug_enabled() -> bool:
    """`--debug` anywhere on the command line, or DIFFCLI_DEBUG=1, shows tracebacks."""
    return "--debug" in sys.argv[1:] or os.environ.get("DIFFCLI_DEBUG", "") not in ("", "0")
