"""`diffcli models ...`: pull, list, aliases, info, rm, verify.

Results go to stdout (paths, tables, JSON); progress and prompts to stderr. None of these commands
imports torch or diffusers.
"""

from __future__ import annotations

import json
import sys
from typing import Optional

import typer
from typer.core import TyperGroup

from diffcli.cli.output_flags import output_flag
from diffcli.errors import RuntimeFailure, UsageError


class _ModelsGroup(TyperGroup):
    """File-system errors (an unreadable cache, a read-only home) become one clear line, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise fs_error(exc) from exc


def fs_error(exc: OSError) -> RuntimeFailure:
    from pathlib import Path

    from diffcli import paths
    from diffcli.models import hub, registry

    name = Path(str(exc.filename)) if exc.filename else None
    if name is not None:
        for root, make in ((hub.hub_cache_dir(), hub.cache_error), (paths.home(), registry.home_unusable)):
            if name == root or root in name.parents:
                return make(exc, name)
    why = (exc.strerror or type(exc).__name__).lower()
    hint = "; check its permissions" if isinstance(exc, PermissionError) else ""
    return RuntimeFailure(f"cannot access {name or 'a file'}: {why}{hint}")


app = typer.Typer(cls=_ModelsGroup, help="Fetch, list, inspect, verify and remove models.", no_args_is_help=True)

JsonFlag = output_flag("json", "Machine-readable output.")
Quiet = output_flag("quiet", "No progress bar.")
RepairQuiet = output_flag("quiet", "No progress bar when repairing.")
TOKEN_HELP = "Hugging Face token for private/gated repos (default: HF_TOKEN or your `hf auth login`). Never printed."


def _stdout_console():
    from rich.console import Console

    # not a terminal (a pipe, a file): rows are never cut to 80 columns
    return Console(file=sys.stdout, soft_wrap=True, width=None if sys.stdout.isatty() else 4096)


@app.command()
def pull(
    name: str = typer.Argument(..., help="Alias, org/name[@revision], .safetensors URL or path."),
    revision: Optional[str] = typer.Option(None, "--revision", help="Branch, tag or commit (hub models)."),
    variant: Optional[str] = typer.Option(
        None, "--variant", help="Weights variant, e.g. fp16 (falls back to the plain weights)."
    ),
    token: Optional[str] = typer.Option(None, "--token", help=TOKEN_HELP, show_default=False),
    sha256: Optional[str] = typer.Option(None, "--sha256", help="Expected sha256 of a URL checkpoint."),
    allow_pickle: bool = typer.Option(
        False, "--allow-pickle", help="Accept .bin/.ckpt pickle weights (loaded with weights_only=True)."
    ),
    trust_remote_code: bool = typer.Option(
        False,
        "--trust-remote-code",
        help=(
            "Download a repo that ships its own code anyway (its configs and weights only: diffcli never fetches "
            "or runs the code)."
        ),
    ),
    force: bool = typer.Option(False, "--force", help="Download again even if present."),
    quiet: Quiet = False,
) -> None:
    """Download a model (only the files its pipeline needs) and print where it lives."""
    from diffcli.models import hub, names, urls
    from diffcli.models.resolve import offline_requested, resolve

    src = names.parse(name)
    if src.kind in ("hub", "alias", "url") and offline_requested():
        raise UsageError(f"cannot pull {name}: offline mode is on (HF_HUB_OFFLINE=1); unset it and try again")
    if src.kind in ("hub", "alias"):
        rev = revision or src.revision
        if rev:
            names.validate_revision(rev)
        alias = src.name if src.kind == "alias" else None
        snap, _commit, _e = hub.pull(
            src.repo_id,
            rev,
            name=name,
            variant=variant,
            allow_pickle=allow_pickle,
            trust_remote_code=trust_remote_code,
            token=token,
            quiet=quiet,
            force=force,
            alias=alias,
        )
        typer.echo(str(snap))
        return
    if src.kind == "url":
        urls.pull(src.url, sha256=sha256, allow_pickle=allow_pickle, token=token, quiet=quiet, force=force)
    ref = resolve(name, allow_pickle=allow_pickle, token=token, quiet=quiet, trust_remote_code=trust_remote_code)
    if ref.kind == "single_file":
        from diffcli.models.resolve import needs_base
        from diffcli.models.single_file import config_dir_for, fetch_tokenizers

        if needs_base(ref):
            sys.stderr.write(
                f"note: {name} is a {ref.family} transformer: use it with --base, a diffusers {ref.family} "
                "model that supplies its text encoders and VAE\n"
            )
        elif config_dir_for(ref.family) is None:
            sys.stderr.write(f"warning: {name}: family '{ref.family}' has no built-in config; it cannot be loaded\n")
        else:
            fetch_tokenizers(ref.family, token=token, quiet=quiet)  # so that loading needs no network
    typer.echo(str(ref.path))


@app.command("list")
def list_(as_json: JsonFlag = False) -> None:
    """Models on this machine: name, source, family, size on disk, last used."""
    from diffcli.models import inventory

    items = inventory.items()
    if as_json:
        typer.echo(json.dumps([i.to_json() for i in items], indent=2))
        return
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for col in ("NAME", "SOURCE", "FAMILY", "SIZE", "LAST USED", "STATUS"):
        table.add_column(col, justify="right" if col == "SIZE" else "left")
    for i in items:
        table.add_row(
            i.name, i.source, i.family, inventory.human_size(i.size), inventory.human_time(i.last_used), i.status
        )
    _stdout_console().print(table)
    from diffcli.models.aliases import alias_names

    sys.stderr.write(f"pullable by alias: {alias_names()} (`diffcli models aliases` for details)\n")


@app.command()
def aliases(as_json: JsonFlag = False) -> None:
    """The short names `diffcli models pull` and --model accept, their hub repos and recommended settings."""
    from diffcli.models.aliases import ALIASES
    from diffcli.models.inventory import alias_downloaded

    rows = [
        {
            "name": n,
            "repo_id": a.repo_id,
            "family": a.family,
            "description": a.description,
            "defaults": dict(a.defaults),
            "gated": a.gated,
            "downloaded": alias_downloaded(n),
        }
        for n, a in ALIASES.items()
    ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for col in ("ALIAS", "REPO", "FAMILY", "STEPS", "CFG", "SCHEDULER", "SIZE", "GATED", "DOWNLOADED"):
        table.add_column(col)
    for r in rows:
        d = r["defaults"]
        size = f"{d['width']}" if d.get("width") == d.get("height") and d.get("width") else "-"
        table.add_row(
            r["name"],
            r["repo_id"],
            r["family"],
            str(d.get("steps", "-")),
            str(d.get("cfg", "-")),
            d.get("scheduler", "-"),
            size,
            "yes" if r["gated"] else "-",
            "yes" if r["downloaded"] else "-",
        )
    _stdout_console().print(table)


@app.command()
def info(
    name: str = typer.Argument(..., help="A model name as given to --model."),
    as_json: JsonFlag = False,
) -> None:
    """Family, components, dtypes, size, files, location and recommended settings of a local model."""
    from diffcli.models import inventory

    d = inventory.details(name)
    if as_json:
        typer.echo(json.dumps(d, indent=2))
        return
    out = [
        f"name:        {d['name']}",
        f"source:      {d['source']}",
        f"family:      {d['family']}",
        f"status:      {d['status']}" + (" (loads only with --allow-pickle)" if d["status"] == "pickle" else ""),
        f"path:        {d['path']}",
        f"size:        {inventory.human_size(d['size'])}",
    ]
    if d.get("revision"):
        out.append(f"revision:    {d['revision']}")
    if d.get("pipeline"):
        out.append(f"pipeline:    {d['pipeline']}")
    if d["components"]:
        out.append("components:  " + ", ".join(f"{k} ({v})" for k, v in d["components"].items()))
    out.append("dtypes:      " + (", ".join(d["dtypes"]) or "-"))
    rec = d.get("recommended") or {}
    if rec:
        out.append("recommended: " + ", ".join(f"{k}={_scalar(v)}" for k, v in rec.items()))
    out.append(f"last used:   {inventory.human_time(d['last_used'])}")
    for key, value in (d.get("extra") or {}).items():
        out += _readable(key.replace("_", " "), value, 0)
    out.append("files:")
    out += [f"  {inventory.human_size(f['size']):>9}  {f['file']}" for f in d["files"]]
    typer.echo("\n".join(out))


def _scalar(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _inline(value) -> str | None:
    """VALUE on one line when it is plain: a scalar, a list of scalars, or a dict of scalars; else None."""
    if isinstance(value, dict):
        if all(not isinstance(v, (dict, list)) for v in value.values()):
            return ", ".join(f"{k}={_scalar(v)}" for k, v in value.items()) or "-"
        return None
    if isinstance(value, list):
        if all(not isinstance(v, (dict, list)) for v in value):
            return ", ".join(_scalar(v) for v in value) or "-"
        return None
    return _scalar(value)


def _readable(key: str, value, depth: int = 0) -> list[str]:
    """`key: value` lines for a nested JSON value (no Python reprs): nested dicts indented under their key,
    plain lists and dicts of plain values on one line."""
    pad = "  " * depth
    if depth == 0 and not isinstance(value, dict) and _inline(value) is not None:
        return [f"{key}: {_inline(value)}"]
    if isinstance(value, dict):
        items = list(value.items())
    elif isinstance(value, list):
        items = [(f"[{i}]", v) for i, v in enumerate(value, 1)]
    else:
        return [f"{pad}{key}: {_scalar(value)}"]
    lines = [f"{pad}{key}:"]
    width = max((len(str(k)) for k, _ in items), default=0) + 1
    for k, v in items:
        flat = _inline(v)
        if flat is None:
            lines += _readable(str(k), v, depth + 1)
        else:
            lines.append(f"{pad}  {str(k) + ':':<{width}} {flat}")
    return lines


@app.command()
def rm(
    name: str = typer.Argument(..., help="A downloaded model (alias, org/name[@revision] or URL)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be removed, remove nothing."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Remove a downloaded model and reclaim its disk (other models' files are kept)."""
    from diffcli.models import inventory

    plan = inventory.plan_removal(name)
    asks = not (dry_run or yes)
    if asks and (not sys.stdin or not sys.stdin.isatty()):  # before anything is said of removing
        raise UsageError("refusing to remove without confirmation: pass -y (stdin is not a terminal)")
    sys.stderr.write(
        f"{'would remove' if dry_run else 'removing'} {name}: {len(plan.paths)} paths, "
        f"{inventory.human_size(plan.size)}\n"
    )
    for p in plan.paths:
        typer.echo(str(p))
    if dry_run:
        return
    if asks:
        if not typer.confirm(f"Remove {name} ({inventory.human_size(plan.size)})?", default=False, err=True):
            raise typer.Exit(1)
    plan.execute()
    sys.stderr.write(f"removed {name}, freed {inventory.human_size(plan.size)}\n")


@app.command()
def verify(
    name: Optional[str] = typer.Argument(None, help="A downloaded model; all of them when left out."),
    repair: bool = typer.Option(False, "--repair", help="Download damaged files again."),
    token: Optional[str] = typer.Option(None, "--token", help=TOKEN_HELP, show_default=False),
    as_json: JsonFlag = False,
    quiet: RepairQuiet = False,
) -> None:
    """Check every file's size and sha256 against what the source recorded. Exit 1 if damaged."""
    from diffcli.models import verify as verify_mod

    reports = verify_mod.verify(name, repair=repair, token=token, quiet=quiet)
    if as_json:
        typer.echo(json.dumps([r.to_json() for r in reports], indent=2))
    else:
        for r in reports:
            bad = r.damaged
            typer.echo(
                f"{r.name}: {'DAMAGED' if bad else 'ok'} ({len(r.checks)} files){' - ' + r.note if r.note else ''}"
            )
            for c in r.checks:
                if c.problem:
                    typer.echo(f"  {'repaired' if c.repaired else 'damaged '}  {c.file}: {c.problem}")
        if not reports:
            typer.echo("no downloaded models to verify")
    damaged = sum(len(r.damaged) for r in reports)
    if damaged:
        if all(r.source == "bundled" for r in reports if r.damaged):
            raise RuntimeFailure(
                f"{damaged} damaged file(s) in the bundled model; reinstall diffcli "
                "(pip install --force-reinstall diffcli)"
            )
        raise RuntimeFailure(
            f"{damaged} damaged file(s); run `diffcli models verify {name or ''} --repair`".replace("  ", " ")
        )
