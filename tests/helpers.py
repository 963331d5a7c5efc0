"""Small helpers shared by the tests: running the CLI in-process and as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from diffcli.cli.app import app

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, input: str | None = None):
    """Run diffcli in-process; returns click's Result (stdout and stderr kept apart)."""
    return CliRunner().invoke(app, [str(a) for a in args], input=input, catch_exceptions=False)


def subprocess_cli(*args: str, env: dict | None = None, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """Run `python -m diffcli ...` as a user would."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "diffcli", *map(str, args)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        cwd=kwargs.pop("cwd", None),
        **kwargs,
    )


def default_sigint() -> None:
    """Popen preexec_fn: SIGINT back to its default, so Python installs its handler in the child even
    when the test run itself was started in the background (where a shell ignores SIGINT)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def pixels(path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.int16)


def written(result) -> list[Path]:
    return [Path(line) for line in result.stdout.splitlines() if line.strip()]


_HEAVY_PROBE = """
import sys
from diffcli.cli.app import main
sys.argv = ["diffcli", *{args!r}]
try:
    main()
except SystemExit:
    pass
heavy = sorted(m for m in ("torch", "diffusers", "transformers", "accelerate", "numpy") if m in sys.modules)
sys.stderr.write("HEAVY=" + ",".join(heavy) + "\\n")
"""


def heavy_imports(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `diffcli ARGS` in a fresh interpreter; its stderr ends with HEAVY=<heavy modules it imported>
    (an empty list reads "HEAVY=\\n")."""
    code = _HEAVY_PROBE.format(args=list(args))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)


def wait_for_first_step(stderr, timeout: float = 60) -> None:
    """Read a running command's JSON-lines STDERR until its first denoising step (it is mid-job then)."""
    import time

    deadline = time.time() + timeout
    for line in stderr:
        if '"event": "step"' in line:
            return
        assert time.time() < deadline, "no step event in time"
    raise AssertionError("the command ended before its first step")


def sigmas_passed(pipe, **call) -> list[float]:
    """The sigmas a flow-matching PIPE passes its scheduler's set_timesteps in a call with CALL (latent output)."""
    import functools

    seen = []
    original = pipe.scheduler.set_timesteps

    @functools.wraps(original)  # (diffusers reads its signature: does it take sigmas)
    def spy(*args, **kwargs):
        seen.append(kwargs.get("sigmas"))
        return original(*args, **kwargs)

    pipe.scheduler.set_timesteps = spy
    try:
        pipe(**call, output_type="latent")
    finally:
        pipe.scheduler.set_timesteps = original
    assert seen and seen[0] is not None, "the pipeline passed no sigmas"
    return [float(s) for s in seen[0]]
