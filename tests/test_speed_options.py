"""--compile (batch, serve) and the CUDA defaults of diffcli.device: the decisions, tested where they are made."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from diffcli.device import auto_dtype, channels_last
from diffcli.jobs import Job
from diffcli.pipelines import LoadOptions, key_of

from helpers import cli, pixels


def test_auto_dtype_on_cuda_takes_bfloat16_for_the_families_made_in_it_where_the_gpu_has_it():
    assert auto_dtype("cuda", "flux", gpu_bf16=True)[0] == "bfloat16"
    assert auto_dtype("cuda:1", "sd3", gpu_bf16=True)[0] == "bfloat16"
    assert auto_dtype("cuda", "flux", gpu_bf16=False)[0] == "float16"  # e.g. a T4 (Turing)
    assert auto_dtype("cuda", "sdxl", gpu_bf16=True)[0] == "float16"
    assert auto_dtype("mps", "flux", gpu_bf16=True)[0] == "float16"
    # the CPU rule is unchanged: float32 unless the CPU computes bfloat16 natively, whatever the family
    assert auto_dtype("cpu", "flux", gpu_bf16=True)[0] == "float32"
    assert auto_dtype("cpu", "sd1", cpu_bf16=True)[0] == "bfloat16"
    assert [channels_last(d) for d in ("cuda", "cuda:1", "cpu", "mps")] == [True, True, False, False]


def test_compile_is_a_load_option_batch_and_serve_take_and_single_commands_refuse():
    from diffcli.run import RunOptions
    from diffcli.serve.worker import Task, Worker

    ref = type("Ref", (), {"path": Path("m"), "kind": "diffusers"})()
    choice = type("Choice", (), {"device": "cpu", "dtype": "float32"})()
    assert key_of(ref, choice, LoadOptions(compile=True)) != key_of(ref, choice, LoadOptions())
    task = Task(job=Job(prompt="x"), opts=RunOptions(out="/tmp/o"), reporter=None, results=None)
    Worker(compile=True).submit(task)  # the server's --compile, whatever the request says
    assert task.opts.load.compile is True
    plain = Task(job=Job(prompt="x"), opts=RunOptions(out="/tmp/o"), reporter=None, results=None)
    Worker().submit(plain)
    assert plain.opts.load.compile is False
    refused = cli("txt2img", "x", "--compile", "--no-server")
    assert refused.exit_code == 2 and refused.stderr.count("\n") == 1 and "diffcli batch --compile" in refused.stderr


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("DIFFCLI_SLOW_TESTS"), reason="compiles take minutes; DIFFCLI_SLOW_TESTS=1")
def test_a_compiled_batch_reports_the_compile_once_and_matches_eager_images(tmp_path):
    jobs = tmp_path / "p.txt"
    jobs.write_text("red house\nred house\n")
    eager = cli("batch", jobs, "--seed", "1", "--dtype", "float32", "-o", tmp_path / "e", "-q")
    compiled = cli("batch", jobs, "--seed", "1", "--dtype", "float32", "--compile", "-o", tmp_path / "c")
    assert eager.exit_code == 0 and compiled.exit_code == 0, compiled.stderr
    assert compiled.stderr.count("compiled the unet in") == 1
    for a, b in zip(eager.stdout.split(), compiled.stdout.split()):
        assert np.abs(pixels(a) - pixels(b)).max() <= 2  # float rounding only (0-255 levels)
