"""`schedulers`, `info`, `device`, and the promise that light commands never import torch."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from diffcli.metadata import build_record, pil_save_kwargs, read

from helpers import cli, heavy_imports


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["schedulers"],
        ["device", "--help"],
        ["txt2img", "--help"],
        ["info", "IMAGE"],
        ["models", "--help"],
        ["batch", "--help"],
        ["txt2img", "x", "--stepz", "1"],
        ["txt2img", "x", "--steps", "0"],
    ],
)
def test_light_commands_do_not_import_torch(args, tmp_path):
    if "IMAGE" in args:
        path = tmp_path / "x.png"
        record = build_record({"task": "txt2img", "prompt": "p", "seed": 1}, {"name": "tiny"}, "cpu", "float32")
        Image.new("RGB", (4, 4)).save(path, **pil_save_kwargs("png", record))
        args = [str(path) if a == "IMAGE" else a for a in args]
    p = heavy_imports(*args)
    assert "HEAVY=\n" in p.stderr, p.stderr


def test_schedulers_lists_the_table_as_json():
    r = cli("schedulers", "--json")
    names = [row["name"] for row in json.loads(r.stdout)]
    for required in [
        "ddim",
        "ddpm",
        "pndm",
        "lms",
        "euler",
        "euler-a",
        "heun",
        "dpm++2m",
        "dpm++2m-karras",
        "dpm++2m-sde-karras",
        "unipc",
        "deis",
        "lcm",
    ]:
        assert required in names


def test_schedulers_piped_prints_every_row_whole():
    """stdout is not a terminal under CliRunner: plain tab-separated lines, nothing wrapped or cut."""
    from diffcli.schedulers import SCHEDULERS

    r = cli("schedulers")
    assert r.exit_code == 0
    lines = r.stdout.splitlines()
    assert [line.split("\t") for line in lines] == [
        [s.name, s.cls, s.a1111, s.summary, s.applies_to] for s in SCHEDULERS.values()
    ]
    assert "…" not in r.stdout and "\x1b" not in r.stdout


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_metadata_round_trip(fmt, tmp_path):
    job = {
        "task": "img2img",
        "prompt": "castle, dusk — ünïcode",
        "negative": "blur",
        "steps": 20,
        "cfg": 6.5,
        "seed": 99,
        "width": 64,
        "height": 64,
        "scheduler": "euler-a",
        "strength": 0.4,
    }
    record = build_record(job, {"name": "tiny", "hash": "abcdef0123"}, "cpu", "bfloat16")
    path = tmp_path / f"x.{fmt}"
    Image.new("RGB", (8, 8)).save(path, format=fmt.upper(), **pil_save_kwargs(fmt, record))
    params, back = read(path)
    assert back == record
    assert params.splitlines()[0] == job["prompt"]
    assert params.splitlines()[1] == "Negative prompt: blur"
    assert "Sampler: Euler a" in params and "Denoising strength: 0.4" in params and "Model hash: abcdef0123" in params
    r = cli("info", path, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout) == record


def test_info_on_an_image_without_metadata(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "plain.png")
    r = cli("info", tmp_path / "plain.png")
    assert r.exit_code == 2 and "no generation parameters" in r.stderr


def test_device_reports_its_choice(cpu_bf16):
    r = cli("device", "--json")
    facts = json.loads(r.stdout)
    assert facts["device"] == "cpu" and facts["dtype"] == ("bfloat16" if cpu_bf16 else "float32")
    assert "DIFFCLI_CPU_BF16" in facts["reason"]
    r = cli("device", "--device", "cuda")
    assert r.exit_code == 2 and "no CUDA device" in r.stderr


def test_version():
    from diffcli import __version__

    assert cli("--version").stdout.strip() == f"diffcli {__version__}"
