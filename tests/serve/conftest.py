"""Fixtures: servers on sockets in short private temp dirs (see serving.py)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from serving import RunningServer, server_env


@pytest.fixture
def sock_dir():
    """A private directory with a short path (Unix socket paths are limited to about 100 bytes)."""
    directory = Path(tempfile.mkdtemp(prefix="dcs", dir="/tmp"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def start_server(sock_dir, tmp_path_factory):
    """Start a server of one's own: start_server("--idle", "2s")."""
    started = []

    def start(*args: str) -> RunningServer:
        server = RunningServer(sock_dir, server_env(tmp_path_factory.mktemp("serverhome")), ["--idle", "5m", *args])
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server shared by a test module (models stay loaded between its tests)."""
    directory = Path(tempfile.mkdtemp(prefix="dcs", dir="/tmp"))
    running = RunningServer(directory, server_env(tmp_path_factory.mktemp("serverhome")), ["--idle", "10m"])
    yield running
    running.stop()
    shutil.rmtree(directory, ignore_errors=True)
