"""The TCP transport (what platforms without Unix sockets use; DIFFCLI_SERVER_TRANSPORT=tcp forces it
here): 127.0.0.1 and a token file only the user can read; a connection without the token gets nothing."""

from __future__ import annotations

import json
import shutil
import socket
import stat
import tempfile
from pathlib import Path

import pytest

from diffcli.serve.protocol import TRANSPORT_ENV
from helpers import pixels
from serving import RunningServer, server_env


@pytest.fixture
def tcp_server(tmp_path_factory, monkeypatch):
    monkeypatch.setenv(TRANSPORT_ENV, "tcp")  # for this process's own status requests too
    directory = Path(tempfile.mkdtemp(prefix="dcs", dir="/tmp"))
    server = RunningServer(directory, {**server_env(tmp_path_factory.mktemp("serverhome")), TRANSPORT_ENV: "tcp"},
                           ["--idle", "5m"])
    yield server
    server.stop()
    shutil.rmtree(directory, ignore_errors=True)


def test_commands_use_a_tcp_server_and_strangers_get_nothing(tcp_server, tiny_sd, tmp_path):
    token_file = tcp_server.path.with_name("s.token")
    assert not tcp_server.path.exists() and stat.S_IMODE(token_file.stat().st_mode) == 0o600
    info = json.loads(token_file.read_text())
    args = ["txt2img", "castle", "-m", tiny_sd, "--seed", "4", "--steps", "2", "--dtype", "float32", "--quiet"]
    served = tcp_server.cli(*args, "-o", tmp_path / "a/")
    assert served.returncode == 0, served.stderr + tcp_server.log()
    assert tcp_server.status()["jobs_done"] == 1  # it went through the server (the same job as without one:
    assert pixels(served.stdout.strip()).ndim == 3  # test_serve_client checks the pixels)

    for first in ({"op": "auth", "token": "0" * 64}, {"op": "status"}):  # a wrong token, or none
        with socket.create_connection(("127.0.0.1", info["port"]), timeout=10) as sock:
            sock.sendall((json.dumps(first) + "\n").encode())
            assert sock.recv(4096) == b""  # closed without a word
    assert tcp_server.log().count("refused a connection without the token") == 2

    tcp_server.stop()
    assert not token_file.exists()  # clients run by themselves again
