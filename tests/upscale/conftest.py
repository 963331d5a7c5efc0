"""Fixtures for the upscale tests: tiny x4 and x2-latent upscalers, built once per session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import tiny_upscalers  # noqa: E402


@pytest.fixture(scope="session")
def tiny_x4(tmp_path_factory) -> Path:
    return tiny_upscalers.build_x4(tmp_path_factory.mktemp("models") / "tiny-x4")


@pytest.fixture(scope="session")
def tiny_latent_x2(tmp_path_factory) -> Path:
    return tiny_upscalers.build_latent_x2(tmp_path_factory.mktemp("models") / "tiny-latent-x2")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """On a loaded 2-core box torch's default thread pool oversubscribes (20-80x slower for tiny
    models); one thread keeps these tests fast. Restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
