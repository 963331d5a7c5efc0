"""`diffcli mcp` with a running `diffcli serve`: its tools' jobs run there (models loaded once, for every
client), with the same pixels and progress as in its own process; with DIFFCLI_SERVER=auto it still starts
no server of its own."""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("mcp")

from helpers import pixels  # noqa: E402
from mcp_session import McpServer, images, texts  # noqa: E402

ARGS = {"prompt": "red house on the left", "model": "tiny", "steps": 2, "seed": 5}


def test_a_tool_job_runs_on_the_running_server(start_server, tmp_path):
    served = start_server()
    before = served.status()
    assert before["jobs_done"] == 0 and before["models"] == []
    mcp = McpServer(["--out", str(tmp_path / "out")], served.env, tmp_path / "mcp.log")
    try:
        progress: list = []
        result = mcp.call("generate", ARGS, progress=progress)
        assert not result.is_error, (texts(result), mcp.log(), served.log())
        status = served.status()
        assert status["jobs_done"] == 1 and len(status["models"]) == 1  # it ran there, and its model stays loaded
        assert [(p, t) for p, t, _ in progress] == [(1, 2), (2, 2)]  # the server's steps, as notifications
        (path,) = texts(result)
        assert os.path.dirname(path) == str(tmp_path / "out")
        assert np.array_equal(images(result)[0], pixels(path))
    finally:
        mcp.close()
    alone = McpServer(["--out", str(tmp_path / "alone"), "--no-server"], served.env, tmp_path / "alone.log")
    try:  # the same job in the MCP server's own process: the same pixels, and nothing more on the server
        here = alone.call("generate", ARGS)
        assert not here.is_error, texts(here)
        assert np.array_equal(images(here)[0], images(result)[0])
        assert served.status()["jobs_done"] == 1
    finally:
        alone.close()


def test_it_starts_no_server(sock_dir, tmp_path):
    from serving import server_env

    env = {**server_env(tmp_path / "home"), "DIFFCLI_SERVER_SOCKET": str(sock_dir / "s.sock"), "DIFFCLI_SERVER": "auto"}
    mcp = McpServer(["--out", str(tmp_path / "out")], env, tmp_path / "mcp.log")
    try:
        result = mcp.call("upscale", {"image": str(_image(tmp_path)), "scale": 2, "method": "lanczos"})
        assert not result.is_error, texts(result)
    finally:
        mcp.close()
    assert not (sock_dir / "s.sock").exists()  # ran in its own process; `diffcli serve` was not started


def _image(tmp_path):
    from PIL import Image

    path = tmp_path / "in.png"
    Image.new("RGB", (16, 16), (200, 30, 30)).save(path)
    return path
