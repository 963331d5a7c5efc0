"""A real `diffcli mcp` subprocess driven by the MCP SDK's own client (stdio_client + ClientSession), usable
from plain synchronous tests: the session lives in an event loop on a thread of its own (anyio's blocking
portal), so one server can answer every test of a module."""

from __future__ import annotations

import base64
import functools
import io
import os
import sys
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
from anyio.from_thread import start_blocking_portal
from mcp import ClientSession, StdioServerParameters, stdio_client
from PIL import Image


def isolated_env(home: Path, **extra: str) -> dict:
    """This environment with diffcli's and the hub's directories in HOME and no server of the user's
    (as tests/conftest.py's isolated_home does for the test process itself)."""
    env = {k: v for k, v in os.environ.items() if k not in ("DIFFCLI_MODEL", "DIFFCLI_SERVER", "HF_HUB_OFFLINE")}
    env.update(
        DIFFCLI_HOME=str(home / "diffcli"),
        HF_HOME=str(home / "hf"),
        HF_HUB_CACHE=str(home / "hf" / "hub"),
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        DIFFCLI_SERVER_SOCKET=str(home / "run" / "server.sock"),
        **extra,
    )
    return env


@asynccontextmanager
async def _session(params: StdioServerParameters, errlog):
    async with stdio_client(params, errlog=errlog) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            yield session


class McpServer:
    """`python -m diffcli mcp ARGS` with ENV, and an initialized client session with it."""

    def __init__(self, args: list[str], env: dict, log: Path) -> None:
        self.log_path = log
        self._log = open(log, "w")
        self._portal_cm = start_blocking_portal()
        self.portal = self._portal_cm.__enter__()
        params = StdioServerParameters(command=sys.executable, args=["-m", "diffcli", "mcp", *args], env=env)
        self._session_cm = self.portal.wrap_async_context_manager(_session(params, self._log))
        try:
            self.session = self._session_cm.__enter__()
        except BaseException:
            self._portal_cm.__exit__(None, None, None)
            raise

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def list_tools(self):
        return self.portal.call(self.session.list_tools).tools

    def call(self, name: str, arguments: dict, progress: list | None = None):
        """The CallToolResult of tool NAME; with PROGRESS (a list), a progress token is sent and each
        notification's (progress, total, message) is appended to it."""
        callback = None
        if progress is not None:

            async def callback(value, total, message):
                progress.append((value, total, message))

        call = functools.partial(self.session.call_tool, name, arguments, progress_callback=callback)
        return self.portal.call(call)

    def close(self) -> None:
        try:
            self._session_cm.__exit__(None, None, None)
        finally:
            self._portal_cm.__exit__(None, None, None)
            self._log.close()


def texts(result) -> list[str]:
    return [c.text for c in result.content if c.type == "text"]


def images(result) -> list[np.ndarray]:
    """The image contents of RESULT as RGB pixel arrays (int16, as helpers.pixels reads files)."""
    out = []
    for c in result.content:
        if c.type == "image":
            assert c.mime_type == "image/png"
            with Image.open(io.BytesIO(base64.b64decode(c.data))) as img:
                assert img.format == "PNG"
                out.append(np.asarray(img.convert("RGB"), dtype=np.int16))
    return out
