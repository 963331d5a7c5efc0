"""Shared fixtures: an isolated diffcli/HF home for every test and tiny models built once per session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import tiny_models  # noqa: E402


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory, monkeypatch):
    """Point diffcli's and huggingface_hub's directories at a fresh temp dir; never touch the network."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("DIFFCLI_HOME", str(home / "diffcli"))
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hf" / "hub"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    monkeypatch.delenv("DIFFCLI_MODEL", raising=False)
    monkeypatch.setenv("DIFFCLI_SERVER_SOCKET", str(home / "run" / "server.sock"))  # never a real user's server
    monkeypatch.delenv("DIFFCLI_SERVER", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return home


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory) -> Path:
    return tiny_models.build_sd(tmp_path_factory.mktemp("models") / "tiny-sd")


@pytest.fixture(scope="session")
def tiny_sdxl(tmp_path_factory) -> Path:
    return tiny_models.build_sdxl(tmp_path_factory.mktemp("models") / "tiny-sdxl")


@pytest.fixture(scope="session")
def tiny_inpaint(tmp_path_factory) -> Path:
    return tiny_models.build_inpaint(tmp_path_factory.mktemp("models") / "tiny-inpaint")


@pytest.fixture(scope="session")
def tiny_sd3(tmp_path_factory) -> Path:
    import tiny_flow_models

    return tiny_flow_models.build_sd3(tmp_path_factory.mktemp("models") / "tiny-sd3")


@pytest.fixture(scope="session")
def tiny_flux(tmp_path_factory) -> Path:
    import tiny_flow_models

    return tiny_flow_models.build_flux(tmp_path_factory.mktemp("models") / "tiny-flux")


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Training commands run in-process here; one process per command is what users get."""
    yield
    if "accelerate" in sys.modules:
        from accelerate.state import AcceleratorState, GradientState

        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
