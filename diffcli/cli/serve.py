"""`diffcli serve`: a resident engine that keeps models loaded (docs/serve.md)."""

from __future__ import annotations

import json as jsonlib
import re
import sys
from typing import Annotated, Optional

import typer

from diffcli.cli.output_flags import output_flag
from diffcli.errors import EXIT_FAILURE, UsageError

HELP = """Keep models loaded in a background engine; txt2img/img2img/inpaint/outpaint use it by themselves.

While a server runs for you, generation commands send their jobs to it instead of loading torch and
the model again: same output, files and exit codes, much less waiting. --no-server on a command
runs it by itself. Jobs run one at a time, in order.

Examples:

  diffcli serve                      (foreground; Ctrl-C stops it)

  diffcli serve --detach --idle 30m  (background; stops after 30 minutes without work)

  diffcli serve --status

  diffcli serve --stop

  diffcli serve --http 127.0.0.1:7860   (also an AUTOMATIC1111- and OpenAI-style HTTP API)
"""

Detach = Annotated[
    bool, typer.Option("--detach", help="Run in the background; the log goes beside the socket (server.log).")
]
Status = Annotated[bool, typer.Option("--status", help="Say whether a server runs, and what it holds (exit 1: none).")]
Stop = Annotated[bool, typer.Option("--stop", help="Stop the running server once its queued jobs are done.")]
Keep = Annotated[
    int, typer.Option("--keep", help="Keep at most this many models loaded (least recently used go first).", min=1)
]
MaxMemory = Annotated[
    Optional[str],
    typer.Option(
        "--max-memory",
        help=(
            "Keep the weights of loaded models within this size (e.g. 6G, 1.5GiB, 800M): least recently used go "
            "first; the model just used always stays."
        ),
        show_default=False,
    ),
]
Idle = Annotated[str, typer.Option("--idle", help="Stop after this long without work: e.g. 90s, 10m, 1h; 0 = never.")]
Http = Annotated[
    Optional[str],
    typer.Option("--http", help="Also serve the HTTP API on HOST:PORT (e.g. 127.0.0.1:7860).", show_default=False),
]
ApiKey = Annotated[
    Optional[str],
    typer.Option(
        "--api-key",
        envvar="DIFFCLI_API_KEY",
        help=(
            "HTTP: require 'Authorization: Bearer KEY' (or KEY as the HTTP Basic password); without --api-key or "
            "--api-auth the API on loopback is open to every local user. Better from DIFFCLI_API_KEY: a command "
            "line is visible to other users."
        ),
        show_default=False,
    ),
]
ApiAuth = Annotated[
    Optional[str],
    typer.Option(
        "--api-auth",
        envvar="DIFFCLI_API_AUTH",
        metavar="USER:PASSWORD",
        help=(
            "HTTP: require HTTP Basic USER:PASSWORD, as AUTOMATIC1111's --api-auth (webuiapi's set_auth). Better "
            "from DIFFCLI_API_AUTH."
        ),
        show_default=False,
    ),
]
AllowPull = Annotated[
    bool,
    typer.Option("--allow-pull", help="HTTP: let requests name models that are not present yet (they are downloaded)."),
]
OutputDir = Annotated[
    Optional[str],
    typer.Option(
        "--output-dir",
        help="HTTP: where images made over HTTP are written (default: ./outputs/http).",
        show_default=False,
    ),
]
Json = output_flag("json", "--status: one JSON object.")
Compile = Annotated[
    bool,
    typer.Option(
        "--compile",
        help=(
            "torch.compile each model's UNet or transformer when it loads: the first image of each size pays the "
            "compile once (reported), later ones run faster. Pixels differ by float rounding only. See "
            "docs/device.md."
        ),
    ),
]
Debug = output_flag("debug", "Show tracebacks.")


def parse_duration(text: str) -> float | None:
    """Seconds in '90', '90s', '10m', '1h30m'; None for 0/never/off."""
    value = text.strip().lower()
    if value in ("0", "never", "off", "none"):
        return None
    parts = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?", value)
    if not value or parts is None or not any(parts.groups()):
        raise UsageError(f"invalid --idle '{text}'; use e.g. 90s, 10m, 1h or 0 (never)")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in parts.groups())
    total = hours * 3600 + minutes * 60 + seconds
    return total or None


def parse_memory(text: str) -> int:
    """Bytes in '6G', '6GB', '1.5GiB', '800M', '800MiB' (powers of 1024), or a plain number of bytes."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?", text.strip().lower())
    if match is None:
        raise UsageError(f"invalid --max-memory '{text}'; use e.g. 6G, 1.5GiB or 800M")
    value = float(match.group(1)) * 1024 ** " kmgt".index(match.group(2) or " ")
    if value < 1:
        raise UsageError(f"--max-memory must be more than 0 (got '{text}')")
    return int(value)


def serve(
    ctx: typer.Context,
    detach: Detach = False,
    status: Status = False,
    stop: Stop = False,
    keep: Keep = 2,
    max_memory: MaxMemory = None,
    idle: Idle = "10m",
    http: Http = None,
    api_key: ApiKey = None,
    api_auth: ApiAuth = None,
    allow_pull: AllowPull = False,
    output_dir: OutputDir = None,
    compile: Compile = False,
    json: Json = False,
    debug: Debug = False,
) -> None:
    from diffcli.serve.protocol import socket_path

    if sum((detach, status, stop)) > 1:
        raise UsageError("use one of --detach, --status and --stop")
    path = socket_path()
    if status:
        _status(path, json)
        return
    if stop:
        _stop(path)
        return
    idle_s = parse_duration(idle)
    max_bytes = parse_memory(max_memory) if max_memory is not None else None
    front = None
    if http is not None:
        from diffcli.serve.http import check_settings

        # bad flags fail before anything starts
        front = check_settings(http, api_key, output_dir, allow_pull, api_auth)
    else:
        _http_flags_need_http(ctx)
    if detach:
        from diffcli.serve.client import request, start_detached

        if request("status", path) is not None:  # it would serve without these flags
            raise UsageError(
                f"a diffcli server is already running on {path} (`diffcli serve --status`, `diffcli serve --stop`)"
            )
        args = [
            "--keep",
            str(keep),
            "--idle",
            idle,
            *(["--http", http] if http else []),
            *(["--max-memory", str(max_bytes)] if max_bytes else []),
            *(["--allow-pull"] if allow_pull else []),
            *(["--output-dir", front.output_dir] if front else []),
            *(["--compile"] if compile else []),
            *(["--debug"] if debug else []),
        ]
        # the credentials travel in its environment (only this user can read it), never on a command line
        secrets = {
            "DIFFCLI_API_KEY": front.api_key if front else None,
            "DIFFCLI_API_AUTH": ":".join(front.api_auth) if front and front.api_auth else None,
        }
        info = start_detached(args, path, secrets=secrets, adopt=False)
        sys.stderr.write(f"diffcli server started (pid {info['pid']}) on {path}\n")
        return
    _foreground(path, keep, idle_s, front, max_bytes, compile)


def _http_flags_need_http(ctx: typer.Context) -> None:
    """Flags of the HTTP API typed without --http would reach nothing: refused (their variables,
    DIFFCLI_API_KEY and DIFFCLI_API_AUTH, may be set for other uses and are not)."""
    for name, flag in (
        ("api_key", "--api-key"),
        ("api_auth", "--api-auth"),
        ("allow_pull", "--allow-pull"),
        ("output_dir", "--output-dir"),
    ):
        source = ctx.get_parameter_source(name)  # (typer's own click: its ParameterSource, compared by name)
        if getattr(source, "name", None) == "COMMANDLINE":
            raise UsageError(f"{flag} is for the HTTP API; add --http HOST:PORT (e.g. 127.0.0.1:7860)")


def _foreground(
    path, keep: int, idle_s: float | None, front, max_bytes: int | None = None, compile: bool = False
) -> None:
    from diffcli.serve.server import Server

    server = Server(path, keep=keep, idle_s=idle_s, max_bytes=max_bytes, compile=compile)
    if front is not None:  # listening (and its imports) before the worker starts importing torch
        from diffcli.serve.http import HttpFrontDoor

        server.http = HttpFrontDoor(front, log=server.log)
    try:
        server.open()
    except BaseException:
        if server.http is not None:
            server.http.stop()
        raise
    if server.http is not None:
        server.http.start(server.worker)
    server.serve()


def _status(path, as_json: bool) -> None:
    from diffcli.serve.client import request

    answer = request("status", path)
    if answer is None:
        if as_json:
            sys.stdout.write(jsonlib.dumps({"running": False, "socket": str(path)}) + "\n")
        else:
            sys.stdout.write(f"not running (socket {path})\n")
        raise typer.Exit(EXIT_FAILURE)
    answer.pop("type", None)
    answer.pop("compat", None)
    if as_json:
        sys.stdout.write(jsonlib.dumps({"running": True, **answer}) + "\n")
        return
    current = answer.get("current")
    now = f"job {current['id']} running ({current['task']})" if current else "none running"
    lines = [
        f"running: pid {answer.get('pid')}, up {_ago(answer.get('uptime_s'))}, diffcli {answer.get('version')}",
        f"socket: {answer.get('socket')}",
        f"jobs: {answer.get('jobs_done')} done, {answer.get('jobs_failed')} failed, {now}, "
        f"{answer.get('queued')} queued",
    ]
    models = answer.get("models") or []
    lines.append(
        "models: "
        + (
            ", ".join(f"{m['model']} ({m['device']}, {m['dtype']}, {_mib(m.get('bytes'))})" for m in models)
            or "none loaded"
        )
    )
    idle_s = answer.get("idle_stop_s")
    budget = f" within {_mib(answer['max_memory'])}" if answer.get("max_memory") else ""
    lines.append(f"keeps {answer.get('keep')} models{budget}; stops after {_ago(idle_s) if idle_s else 'no'} idle time")
    if answer.get("http"):
        lines.append(f"HTTP on {answer['http']}: {answer.get('http_access') or 'protection unknown (older server)'}")
    if not answer.get("compatible", True):
        lines.append(
            "note: this shell's environment or diffcli differs from the server's; commands here run by themselves"
        )
    sys.stdout.write("\n".join(lines) + "\n")


def _mib(size) -> str:
    return f"{size / 2**20:.1f} MiB" if isinstance(size, (int, float)) else "?"


def _stop(path) -> None:
    from diffcli.serve.client import request, wait_gone

    answer = request("stop", path)
    if answer is None:
        sys.stderr.write(f"diffcli: no server is running (socket {path})\n")
        return
    left = (answer.get("queued") or 0) + (1 if answer.get("current") else 0)
    if left:
        sys.stderr.write(f"diffcli server (pid {answer.get('pid')}) stops after its {left} job(s)\n")
    if wait_gone(path, timeout=30 if not left else 5):
        sys.stderr.write(f"diffcli server (pid {answer.get('pid')}) stopped\n")


def _ago(seconds) -> str:
    from diffcli.serve.server import format_duration

    return format_duration(seconds) if seconds else "0s"


def register(app: typer.Typer) -> None:
    app.command(name="serve", help=HELP)(serve)
