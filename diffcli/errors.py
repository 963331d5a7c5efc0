"""Error types and the exit codes they map to (documented in docs/exit-codes.md), and how an error is printed."""

from __future__ import annotations

import sys

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT)
EXIT_TERMINATED = 143  # SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would be, so the same clean-up runs (temp files, partial saves)."""


class DiffcliError(Exception):
    """An error with a one-line message for the user and an exit code."""

    exit_code = EXIT_FAILURE


class UsageError(DiffcliError):
    """Bad input from the user: flags, paths, images, model names (exit 2)."""

    exit_code = EXIT_USAGE


class RuntimeFailure(DiffcliError):
    """Valid input, but the work failed: a load, a download, a write (exit 1)."""

    exit_code = EXIT_FAILURE


def print_error(message: str) -> None:
    """`diffcli: error: MESSAGE` on stderr, control characters escaped."""
    from diffcli.text import escape

    try:
        sys.stderr.write(f"diffcli: error: {escape(message)}\n")
        sys.stderr.flush()
    except (OSError, AttributeError):  # stderr closed too: the exit code says it
        pass
