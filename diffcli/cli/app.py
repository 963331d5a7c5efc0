"""The `diffcli` Typer application: registers the commands and turns errors into exit codes.

Nothing here imports torch or diffusers; commands import them only when they load a model.
"""

from __future__ import annotations

import os
import sys

import typer
from typer.core import TyperGroup

from diffcli import __version__
from diffcli.errors import EXIT_FAILURE, EXIT_INTERRUPTED, DiffcliError


def debug_enabled() -> bool:
    """`--debug` anywhere on the command line, or DIFFCLI_DEBUG=1, shows tracebacks."""
    return "--debug" in sys.argv[1:] or os.environ.get("DIFFCLI_DEBUG", "") not in ("", "0")


def print_error(message: str) -> None:
    sys.stderr.write(f"diffcli: error: {message}\n")
    sys.stderr.flush()


# Typer may vendor its own click: take the exception base from Typer's own classes.
_CLICK_EXCEPTION = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
_PASS_THROUGH = (typer.Exit, typer.Abort, _CLICK_EXCEPTION)


class DiffcliGroup(TyperGroup):
    """Maps our exceptions to one stderr line and a documented exit code."""

    def invoke(self, ctx):
        debug = debug_enabled() or bool(ctx.params.get("debug"))
        try:
            return super().invoke(ctx)
        except _PASS_THROUGH:
            raise
        except DiffcliError as exc:
            if debug:
                raise
            print_error(str(exc))
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            if debug:
                raise
            print_error("interrupted")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except Exception as exc:  # noqa: BLE001 - the last line of defence
            if debug:
                raise
            print_error(f"{type(exc).__name__}: {exc} (run with --debug for the traceback)")
            raise typer.Exit(EXIT_FAILURE) from None


app = typer.Typer(
    cls=DiffcliGroup,
    name="diffcli",
    help="Generate and edit images with diffusion models. Results go to stdout, everything else to stderr.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"diffcli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Generate and edit images with diffusion models."""


def _register() -> None:
    from diffcli.cli import distill, generate, inspect_cmds, models, upscale

    generate.register(app)
    inspect_cmds.register(app)
    upscale.register(app)
    distill.register(app)
    app.add_typer(models.app, name="models")


_register()


def main() -> None:
    """Console-script entry point."""
    app(prog_name="diffcli")
