"""A real `diffcli serve` in a subprocess, and CLI clients run as subprocesses with its environment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from diffcli.serve.client import request
from diffcli.serve.protocol import _COMPAT_PREFIXES


class RunningServer:
    def __init__(self, directory: Path, env: dict, args: list[str], cwd: Path | None = None) -> None:
        self.directory = directory
        self.path = directory / "s.sock"
        self.env = {**env, "DIFFCLI_SERVER_SOCKET": str(self.path)}
        self.env.pop("DIFFCLI_SERVER", None)
        self.log_path = directory / "server.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "diffcli", "serve", *args],
                env=self.env,
                stdout=log,
                stderr=log,
                start_new_session=True,
                cwd=cwd,
            )
        deadline = time.time() + 60
        while request("status", self.path) is None:
            assert self.proc.poll() is None, self.log()
            assert time.time() < deadline, self.log()
            time.sleep(0.05)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def status(self) -> dict | None:
        return request("status", self.path)

    def cli(self, *args, cwd=None, env=None, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "diffcli", *map(str, args)],
            capture_output=True,
            text=True,
            env={**self.env, **(env or {})},
            cwd=cwd,
            timeout=timeout,
            **kwargs,
        )

    def popen(self, *args, cwd=None, **kwargs) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "diffcli", *map(str, args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
            cwd=cwd,
            **kwargs,
        )

    def use_env(self, monkeypatch) -> None:
        """This test process's environment as the server's (for helpers that run with os.environ)."""
        for key in list(os.environ):
            if key.startswith(_COMPAT_PREFIXES) and key not in self.env:
                monkeypatch.delenv(key)
        for key, value in self.env.items():
            if key.startswith(_COMPAT_PREFIXES):
                monkeypatch.setenv(key, value)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def server_env(home: Path) -> dict:
    env = dict(os.environ)
    env.update(
        DIFFCLI_HOME=str(home / "diffcli"),
        HF_HOME=str(home / "hf"),
        HF_HUB_CACHE=str(home / "hf" / "hub"),
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
    )
    env.pop("DIFFCLI_MODEL", None)
    env.pop("HF_HUB_OFFLINE", None)
    return env
