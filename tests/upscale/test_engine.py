"""Upscale is a task of the one engine: the same Job, the same settle (model, defaults, family checks),
the same device choice, the same parse and validation at every door (batch lines, the server)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import cli, pixels, written

FAST = ["--dtype", "float32", "--seed", "3"]


def _image(path: Path, w: int = 24, h: int = 16) -> Path:
    y, x = np.mgrid[0:h, 0:w]
    arr = np.stack([40 + 5 * x, 30 + 7 * y, 200 - 3 * (x + y)], axis=-1)
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB").save(path)
    return path


def _settle(job, tmp_path):
    from diffcli.progress import Reporter
    from diffcli.run import RunOptions, settle

    return settle(job, RunOptions(out=str(tmp_path / "out") + "/"), Reporter())


def _fake_cuda(monkeypatch) -> None:
    """A CUDA GPU that computes bfloat16, as device.choose sees it (nothing runs on it here)."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "a test GPU")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)


@pytest.mark.parametrize("fixture,dtype", [("tiny_sd3", "bfloat16"), ("tiny_sd", "float16")])
def test_an_upscale_runs_on_the_device_and_dtype_txt2img_picks_for_its_model(
    request, fixture, dtype, tmp_path, monkeypatch
):
    """--dtype auto on CUDA is the model family's choice (SD 3.x / FLUX.1: bfloat16), for upscale as for
    txt2img: one function (run.device_choice) decides both, and execute loads with it."""
    from diffcli.jobs import Job
    from diffcli.run import device_choice

    model = str(request.getfixturevalue(fixture))
    src = _image(tmp_path / "in.png")
    upscale = _settle(Job(task="upscale", image=str(src), model=model, method="tiled", steps=4), tmp_path)
    txt2img = _settle(Job(prompt="castle", model=model, steps=2), tmp_path)
    _fake_cuda(monkeypatch)
    up, gen = device_choice(upscale), device_choice(txt2img)
    assert (up.device, up.dtype) == (gen.device, gen.dtype) == ("cuda", dtype)


def test_a_sampler_that_does_not_fit_the_family_is_the_same_usage_error(tiny_sd3, tmp_path):
    src = _image(tmp_path / "in.png")
    up = cli("upscale", src, "-m", tiny_sd3, "--method", "tiled", "--scheduler", "euler", "-o", tmp_path / "a")
    gen = cli("txt2img", "castle", "-m", tiny_sd3, "--scheduler", "euler", "-o", tmp_path / "b")
    assert up.exit_code == gen.exit_code == 2
    assert up.stderr == gen.stderr and "euler" in up.stderr and up.stderr.count("\n") == 1, (up.stderr, gen.stderr)
    assert not (tmp_path / "a").exists() and up.stdout == ""


def test_an_upscale_takes_the_defaults_with_their_source(tiny_sd, tmp_path):
    """settings.settle decides an upscale's defaults as every task's: the model's, the job's, upscale's own."""
    from diffcli.jobs import Job

    src = _image(tmp_path / "in.png")
    prepared = _settle(Job(task="upscale", image=str(src), model=str(tiny_sd), cfg=5.0), tmp_path)
    job, sources = prepared.job, prepared.sources
    assert (job.method, job.scale, job.width, job.height) == ("tiled", 2, 48, 32)
    assert sources["cfg"] == "job" and sources["scheduler"].startswith("family ")
    assert sources["strength"] == "upscale" and job.strength == 0.3
    assert job.prompt_syntax == "plain" and job.num_images == 1 and prepared.plan.grid is not None


@pytest.mark.parametrize("method", ["tiled", "model", "lanczos"])
def test_a_settled_upscale_settles_to_itself(method, tiny_sd, tiny_x4, tmp_path):
    """What a client settles and sends on, the server settles again (diffcli.serve): to the same job."""
    from diffcli.jobs import Job

    src = _image(tmp_path / "in.png")
    model = {"tiled": tiny_sd, "model": tiny_x4, "lanczos": None}[method]
    job = Job(task="upscale", image=str(src), model=str(model) if model else None, method=method)
    once = _settle(job, tmp_path)
    twice = _settle(once.job, tmp_path)
    assert twice.job == once.job and twice.plan == once.plan
    assert (once.job.seed is None) == (method == "lanczos")


@pytest.mark.parametrize(
    "fields,message",
    [
        ({"scale": 1}, "--scale must be between 2 and 16 (got 1)"),
        ({"method": "magic"}, "unknown --method 'magic'"),
        ({"overlap": 40, "tile_size": 32}, "--overlap 40 must be smaller than --tile-size 32"),
        ({"lora": ["style.safetensors"]}, "lora: not taken by upscale"),
        ({"scale": "2"}, "'scale' must be an integer, not a string"),
    ],
)
def test_a_batch_line_and_a_server_request_are_parsed_and_checked_by_the_same_code(tmp_path, fields, message):
    from diffcli.batch import read_lines
    from diffcli.errors import UsageError
    from diffcli.jobs import Job
    from diffcli.serve.worker import parse_request

    line = {"task": "upscale", "image": str(tmp_path / "in.png"), **fields}
    (tmp_path / "jobs.jsonl").write_text(json.dumps(line) + "\n")
    with pytest.raises(UsageError) as from_batch:
        read_lines(str(tmp_path / "jobs.jsonl"), Job(task="txt2img"), False, print)
    with pytest.raises(UsageError) as from_server:
        parse_request({"job": line, "opts": {"out": str(tmp_path) + "/"}})
    assert message in str(from_batch.value) and message in str(from_server.value)


def test_other_tasks_do_not_take_upscale_fields():
    from diffcli.errors import UsageError
    from diffcli.jobs import Job, validate

    with pytest.raises(UsageError, match="are upscale settings; txt2img does not take them"):
        validate(Job(prompt="castle", scale=2))
    assert "scale" not in Job(prompt="castle").to_dict()  # nor record them (records stay as they were)


def test_upscale_lines_in_a_batch_make_what_the_command_makes(tiny_sd, tmp_path):
    src = _image(tmp_path / "in.png")
    tiled = ["--method", "tiled", "-m", str(tiny_sd), "--steps", "2", "--strength", "0.5", "--tile-size", "32"]
    lines = [
        {"task": "upscale", "image": str(src), "method": "lanczos", "scale": 3},
        {
            "task": "upscale",
            "image": str(src),
            "method": "tiled",
            "model": str(tiny_sd),
            "steps": 2,
            "strength": 0.5,
            "tile_size": 32,
            "seed": 3,
            "dtype": "float32",
        },
    ]
    (tmp_path / "jobs.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    r = cli("batch", tmp_path / "jobs.jsonl", "-o", tmp_path / "batch", "--json", "--quiet")
    assert r.exit_code == 0, r.stderr
    made = [json.loads(x) for x in r.stdout.splitlines()]
    assert [(m["method"], m["scale"], m["width"]) for m in made] == [("lanczos", 3, 72), ("tiled", 2, 48)]
    [lanczos] = written(cli("upscale", src, "--method", "lanczos", "--scale", "3", "-o", tmp_path / "a", "--quiet"))
    [tiles] = written(cli("upscale", src, *tiled, *FAST, "-o", tmp_path / "b", "--quiet"))
    for line, path in zip(made, (lanczos, tiles)):
        assert np.array_equal(pixels(line["path"]), pixels(path))
        with Image.open(line["path"]) as a, Image.open(path) as b:
            batch_record, command_record = json.loads(a.info["diffcli"]), json.loads(b.info["diffcli"])
        assert batch_record.pop("batch_key") and batch_record == command_record
    again = cli("batch", tmp_path / "jobs.jsonl", "-o", tmp_path / "batch", "--json", "--quiet")
    assert [json.loads(x).get("skipped") for x in again.stdout.splitlines()] == [True, True]  # resumable
