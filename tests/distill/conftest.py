import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import builders  # noqa: E402


@pytest.fixture(scope="session")
def fast_sd(tiny_sd, tmp_path_factory) -> Path:
    """The tiny SD fixture with 2-step defaults (so data drawing and reports are quick)."""
    return builders.fast_teacher(tiny_sd, tmp_path_factory.mktemp("teachers") / "fast-sd")


@pytest.fixture(scope="session")
def photos(tmp_path_factory) -> Path:
    return builders.image_folder(tmp_path_factory.mktemp("data") / "photos")


@pytest.fixture(autouse=True)
def one_thread():
    """The test box is shared: one torch thread is faster than two fighting for cores."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def bundled_like(tmp_path_factory) -> Path:
    """A bundled-architecture teacher (tiny size, random weights, v-prediction, 64x64)."""
    return builders.bundled_like(tmp_path_factory.mktemp("teachers") / "bundled")


@pytest.fixture
def as_bundled(bundled_like, monkeypatch):
    """`--teacher tiny` resolves to BUNDLED_LIKE; the evaluator is an untrained one of the real shape."""
    import diffcli.bundled as bundled
    from diffcli.bundled import evaluator

    monkeypatch.setattr(bundled, "MODEL_DIR", bundled_like)
    monkeypatch.setattr(evaluator, "load_evaluator", lambda *a, **k: evaluator.Evaluator(evaluator.make_net()))
    return bundled_like
