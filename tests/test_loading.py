"""diffcli.loading: a model load that raises leaves torch's default dtype as it found it, so the jobs after
it in the same process (a batch, a server) draw exactly what they would alone."""

from __future__ import annotations

import json

import pytest
import torch

import tiny_models
from helpers import cli, pixels, written


@pytest.fixture(scope="module")
def unbuildable(tiny_sd, tmp_path_factory):
    return tiny_models.build_unbuildable(tmp_path_factory.mktemp("models") / "unbuildable", tiny_sd)


JOB = ("red house", "--steps", "2", "--seed", "3")


def _reference(tiny_sd, out) -> list:
    r = cli("txt2img", *JOB, "-m", tiny_sd, "--dtype", "float32", "-o", out)
    assert r.exit_code == 0, r.stderr
    return pixels(written(r)[0])


def test_a_load_that_raises_keeps_the_default_dtype(unbuildable):
    from diffusers import AutoencoderKL

    from diffcli import loading

    with pytest.raises(ValueError):  # 1 channel in 32 norm groups: the constructor raises
        loading.from_pretrained(AutoencoderKL, unbuildable / "vae", torch_dtype=torch.bfloat16)
    assert torch.get_default_dtype() == torch.float32


def test_a_failed_auto_bfloat16_load_leaves_the_next_float32_job_exact(tiny_sd, unbuildable, tmp_path, monkeypatch):
    from diffcli import pipelines

    reference = _reference(tiny_sd, tmp_path / "ref")
    pipelines.release_models()  # the job after the failure loads its model anew
    monkeypatch.setenv("DIFFCLI_CPU_BF16", "1")  # --dtype auto: bfloat16, as on a CPU with AMX
    r = cli("txt2img", *JOB, "-m", unbuildable, "-o", tmp_path / "broken")
    assert r.exit_code == 1 and "cannot load model" in r.stderr and r.stdout == ""
    assert torch.get_default_dtype() == torch.float32
    r = cli("txt2img", *JOB, "-m", tiny_sd, "--dtype", "float32", "-o", tmp_path / "after")
    assert r.exit_code == 0, r.stderr
    assert (pixels(written(r)[0]) == reference).all()


def test_a_batch_goes_on_exactly_after_a_model_that_fails_to_load(tiny_sd, unbuildable, tmp_path, monkeypatch):
    from diffcli import pipelines

    reference = _reference(tiny_sd, tmp_path / "ref")
    pipelines.release_models()
    monkeypatch.setenv("DIFFCLI_CPU_BF16", "1")
    jobs = tmp_path / "jobs.jsonl"
    lines = [
        {"prompt": "red house", "model": str(unbuildable), "steps": 2, "seed": 3},
        {"prompt": "red house", "model": str(tiny_sd), "steps": 2, "seed": 3, "dtype": "float32"},
    ]
    jobs.write_text("".join(json.dumps(line) + "\n" for line in lines))
    r = cli("batch", jobs, "-o", tmp_path / "out", "--keep-going")
    assert r.exit_code == 1 and "cannot load model" in r.stderr  # the first job failed, the second ran
    assert torch.get_default_dtype() == torch.float32
    [image] = written(r)
    assert (pixels(image) == reference).all()


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_auto_dtype_on_cpu_follows_the_processor_answer(cpu_bf16, dtype):
    from diffcli.device import choose

    choice = choose("cpu", "auto")
    assert choice.dtype == ("bfloat16" if cpu_bf16 else "float32")
    assert "DIFFCLI_CPU_BF16" in choice.reason
    assert choose("cpu", dtype).dtype == dtype  # an explicit --dtype is never overridden
