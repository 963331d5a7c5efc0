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


def _cpu_bf16_line() -> str:
    from diffcli.device import CPU_BF16_ENV, cpu_bf16_forced, cpu_has_native_bf16

    forced = cpu_bf16_forced()
    said = "the processor's answer" if forced is None else f"forced by {CPU_BF16_ENV}={int(forced)}"
    dtype = "bfloat16" if cpu_has_native_bf16() else "float32"
    return f"diffcli: --dtype auto on CPU took {dtype} in this run ({said})"


def pytest_report_header(config):
    return _cpu_bf16_line()


def pytest_terminal_summary(terminalreporter):
    """The same line at the end, where `pytest -q` (which prints no header) shows it too."""
    terminalreporter.write_line(_cpu_bf16_line())


@pytest.fixture(autouse=True)
def torch_state_unchanged():
    """Fail a test that leaves torch's process-wide default dtype, default device or CPU autocast changed
    (and put them back, so the tests after it run as they would alone)."""
    yield
    if "torch" not in sys.modules:
        return
    import torch

    found = (torch.get_default_dtype(), str(torch.get_default_device()), torch.is_autocast_enabled("cpu"))
    torch.set_default_dtype(torch.float32)
    torch.set_default_device("cpu")
    torch.set_autocast_enabled("cpu", False)
    assert found == (torch.float32, "cpu", False), f"the test left torch's state changed: {found}"


@pytest.fixture(params=[False, True], ids=["cpu-fp32", "cpu-bf16"])
def cpu_bf16(request, monkeypatch) -> bool:
    """Run a test that depends on `--dtype auto` both ways: as on a CPU without native bfloat16 and as on
    one with it (AMX / AVX512-BF16), whatever this machine's processor is."""
    from diffcli.device import CPU_BF16_ENV

    monkeypatch.setenv(CPU_BF16_ENV, "1" if request.param else "0")
    return request.param


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Training commands run in-process here; one process per command is what users get."""
    yield
    if "accelerate" in sys.modules:
        from accelerate.state import AcceleratorState, GradientState

        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()


@pytest.fixture(scope="session")
def tiny_chroma(tmp_path_factory) -> Path:
    import tiny_flow_models

    return tiny_flow_models.build_chroma(tmp_path_factory.mktemp("models") / "tiny-chroma")


@pytest.fixture(scope="session")
def tiny_zimage(tmp_path_factory) -> Path:
    import tiny_flow_models

    return tiny_flow_models.build_zimage(tmp_path_factory.mktemp("models") / "tiny-zimage")


@pytest.fixture(scope="session")
def tiny_qwen_image(tmp_path_factory) -> Path:
    import tiny_flow_models

    return tiny_flow_models.build_qwen_image(tmp_path_factory.mktemp("models") / "tiny-qwen-image")


@pytest.fixture(scope="session")
def tiny_flux2_klein(tmp_path_factory) -> Path:
    import tiny_flow_models

    return tiny_flow_models.build_flux2_klein(tmp_path_factory.mktemp("models") / "tiny-flux2-klein")
