"""The `diffcli` Typer application: registers the commands and turns errors into exit codes.

Nothing here imports torch or diffusers; commands import them only when they load a model.
"""

from __future__ import annotations

import errno
import os
import signal
import sys

import typer
from typer.core import TyperGroup

from diffcli import __version__
from diffcli.cli.output_flags import debug_enabled
from diffcli.errors import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    EXIT_USAGE,
    DiffcliError,
    Terminated,
    print_error,
)


def _stdout_gone() -> None:
    """The reader of stdout went away (`| head -1`): stop quietly, as Unix tools do."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush cannot fail again
    except (OSError, AttributeError, ValueError):
        pass


def _release_outputs() -> None:
    """Name reservations and empty output folders of this command go, whatever ended it."""
    if "diffcli.output" in sys.modules:
        sys.modules["diffcli.output"].release_reservations()


# Typer may vendor its own click: take the exception base from Typer's own classes.
_CLICK_EXCEPTION = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
_PASS_THROUGH = (typer.Exit, typer.Abort, _CLICK_EXCEPTION)


class DiffcliGroup(TyperGroup):
    """Maps our exceptions to one stderr line and a documented exit code."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        """Click's own usage errors (unknown option or command, bad value) get our one-line format too."""
        try:
            code = super().main(
                args=args, prog_name=prog_name, complete_var=complete_var, standalone_mode=False, **extra
            )
        except _CLICK_EXCEPTION as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # bare `diffcli`: the help, as a request for it
                sys.stdout.write(exc.ctx.get_help() + "\n")
                code = 0
            else:
                print_error(_usage_message(exc))
                code = getattr(exc, "exit_code", EXIT_USAGE)
        except typer.Abort:
            print_error("aborted")
            code = EXIT_FAILURE
        code = code if isinstance(code, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code

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
        except KeyboardInterrupt as exc:
            if debug:
                raise
            terminated = isinstance(exc, Terminated)
            print_error("terminated" if terminated else "interrupted")
            raise typer.Exit(EXIT_TERMINATED if terminated else EXIT_INTERRUPTED) from None
        except BrokenPipeError:
            _stdout_gone()
            raise typer.Exit(EXIT_FAILURE) from None
        except Exception as exc:  # noqa: BLE001 - the last line of defence
            if debug:
                raise
            if isinstance(exc, OSError) and exc.errno == errno.EPIPE:
                _stdout_gone()
                raise typer.Exit(EXIT_FAILURE) from None
            print_error(f"{type(exc).__name__}: {exc} (DIFFCLI_DEBUG=1 shows the traceback)")
            raise typer.Exit(EXIT_FAILURE) from None
        finally:
            _release_outputs()


def _usage_message(exc) -> str:
    """Click's message, with the command it concerns and a pointer to --help."""
    ctx = getattr(exc, "ctx", None)
    where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    name, possible = getattr(exc, "option_name", None), getattr(exc, "possibilities", None)
    if name and possible is not None:  # click lists every loosely similar option; name the closest one
        import difflib

        best = difflib.get_close_matches(name, sorted(possible), n=1, cutoff=0.6)
        hint = f"; did you mean {best[0]}?" if best else ""
        return f"no such option: {name}{hint}{where}"
    return f"{exc.format_message()}{where}"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"diffcli {__version__}")
        raise typer.Exit()


def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Generate and edit images with diffusion models."""


def _new_app() -> typer.Typer:
    new = typer.Typer(
        cls=DiffcliGroup,
        name="diffcli",
        help="Generate and edit images with diffusion models. Results go to stdout, everything else to stderr.",
        no_args_is_help=True,
        add_completion=True,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    new.callback()(_root)
    return new


# Which module of diffcli.cli adds each command (groups: their sub-app). A command line naming one of
# them builds only that module's commands: Typer turns every registered command's signature into click
# parameters on each run, which for all of them is a third of a served call's start-up.
_MODULES = {
    "txt2img": "generate",
    "img2img": "generate",
    "inpaint": "generate",
    "outpaint": "generate",
    "edit": "generate",
    "batch": "batch",
    "upscale": "upscale",
    "distill": "distill",
    "serve": "serve",
    "models": "models",
    "control": "control",
    "schedulers": "inspect_cmds",
    "info": "inspect_cmds",
    "device": "inspect_cmds",
    "mcp": "mcp",
}
_GROUPS = ("models", "control")
_ALL = ("generate", "batch", "inspect_cmds", "upscale", "distill", "serve", "mcp", "models", "control")


def _register(target: typer.Typer, modules=_ALL) -> typer.Typer:
    import importlib

    for name in modules:
        module = importlib.import_module(f"diffcli.cli.{name}")
        if name in _GROUPS:
            target.add_typer(module.app, name=name)
        else:
            module.register(target)
    return target


def app_for(argv: list[str]) -> typer.Typer:
    """The application for this command line: just the named command's module when the first word
    names one, else every command (help, completion, an unknown or misspelt command)."""
    module = _MODULES.get(argv[0]) if argv else None
    return _register(_new_app(), [module]) if module else _full_app()


_FULL: list[typer.Typer] = []


def _full_app() -> typer.Typer:
    if not _FULL:
        _FULL.append(_register(_new_app()))
    return _FULL[0]


def __getattr__(name: str):
    if name == "app":  # `from diffcli.cli.app import app`: every command, built on first use
        return _full_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _terminate(signum, frame) -> None:
    raise Terminated()


def main() -> None:
    """Console-script entry point."""
    if sys.stdout is None or not _is_open(1):  # started with stdout closed (`>&-`): no results could be reported
        print_error("standard output is closed; diffcli prints its results there (redirect it to a file or /dev/null)")
        sys.exit(EXIT_USAGE)
    signal.signal(signal.SIGTERM, _terminate)  # SIGTERM cleans up like Ctrl-C (exit 143)
    app_for(sys.argv[1:])(prog_name="diffcli")
