"""`diffcli mcp`: serve the engine's tools to AI agents over the Model Context Protocol, on stdio (docs/mcp.md).

The MCP SDK is an optional extra (`pip install 'diffcli[mcp]'`), imported only when the command runs, so
`diffcli --help` stays light."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from diffcli.cli import options as o

HELP = """Serve diffcli's tools (generate, img2img, upscale, info) to an AI agent over MCP on stdin/stdout.

An MCP client (Claude Desktop, an IDE, an agent framework) starts it as a subprocess; docs/mcp.md has the
configuration snippet. Jobs run on a running `diffcli serve` when there is one (none is started), else in
this process, which keeps its models loaded between calls. Needs the MCP SDK: pip install 'diffcli[mcp]'.

Example (what a client runs):

  diffcli mcp --out ~/Pictures/diffcli
"""

McpOut = Annotated[
    Optional[str],
    typer.Option(
        "--out",
        "-o",
        help=(
            "Where every tool writes its images: a directory, or a file name template such as "
            "'shots/{seed}-{prompt}.png' (default: outputs/ in the working directory)."
        ),
        show_default=False,
    ),
]


def mcp_command(out: McpOut = None, offline: o.Offline = False, no_server: o.NoServer = False, debug: o.Debug = False):
    """Serve diffcli's tools to AI agents over the Model Context Protocol (stdio)."""
    from diffcli.errors import UsageError

    try:
        import mcp.server.lowlevel  # noqa: F401 - the SDK's presence, said before anything else
    except ImportError as exc:
        if not (getattr(exc, "name", None) or "mcp").startswith("mcp"):
            raise
        raise UsageError(
            "diffcli mcp needs the MCP Python SDK, which is not installed: pip install 'diffcli[mcp]' "
            "(or pip install mcp)"
        ) from None
    from diffcli.mcp_server import Door, absolute_out, serve

    serve(Door(out=absolute_out(out), offline=offline, use_server=not no_server))


def register(app: typer.Typer) -> None:
    app.command(name="mcp", help=HELP)(mcp_command)
