"""Fixtures for the model-manager tests: a fake hub on 127.0.0.1 and isolated caches."""

from __future__ import annotations

import socket

import pytest

from .fakehub import FakeHub, sd_repo_files


@pytest.fixture
def fakehub(monkeypatch, isolated_home):
    hub = FakeHub().start()
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1")
    yield hub
    hub.stop()


@pytest.fixture
def sd_repo(fakehub):
    fakehub.add_repo("acme/tiny-sd", sd_repo_files())
    return "acme/tiny-sd"


@pytest.fixture
def no_network(monkeypatch):
    """Call the returned function to make any attempt to open a connection fail the test."""
    attempts = []

    def refuse(self, address, *args, **kwargs):
        attempts.append(address)
        raise AssertionError(f"network access attempted: {address}")

    def block():
        monkeypatch.setattr(socket.socket, "connect", refuse)
        monkeypatch.setattr(socket.socket, "connect_ex", refuse)
        return attempts

    return block
