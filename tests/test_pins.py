"""Pins: what every task draws, records and reports today, held fixed while the core is restructured.

Each case runs one command on a tiny fixture (or the bundled model) and compares its image with a PNG
kept in tests/pins/, its stdout JSON lines, JSON record and A1111 text with pins.json (fixture paths written as <name>),
and its --json event sequence (event names, and each event's field names) with the same file. On the
CPU kind the pins were made on (pins.json names it) the pixels must be equal; on another CPU kind float
rounding differs, so they may differ by a few levels and no more.

To make the pins again (only when a change of output is intended, and said so in the commit):
    DIFFCLI_WRITE_PINS=1 python -m pytest tests/test_pins.py
"""

from __future__ import annotations

import json
import os
import platform
import random
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

import lora_files
import tiny_models
from helpers import cli, pixels

PINS = Path(__file__).parent / "pins"
WRITE = os.environ.get("DIFFCLI_WRITE_PINS") == "1"
COMMON = ("--dtype", "float32", "--seed", "7", "--json", "--no-server")
# values that vary between runs (cached: whether this process had loaded the model before)
VOLATILE = {"cached", "t", "load_s", "total_s", "elapsed_s", "s", "seconds", "path", "eta_s", "it_s"}


def _cpu_kind() -> str:
    """The processor's model and widest vector unit: where float rounding may differ."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    simd = "avx512" if " avx512f" in flags else "avx2" if " avx2" in flags else platform.machine()
    return f"{model} | {simd}"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One thread, as the pins were made: how a sum is split between threads changes its last float bits,
    and with them a pixel here and there (seen in a full-suite run, whose earlier tests leave torch's pool
    in another state than a run of this file alone)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def inputs(tiny_sd, tiny_inpaint, tmp_path_factory):
    """The fixtures and input files every case may use, by name."""
    from diffcli.bundled import scenes

    sys.path.insert(0, str(Path(__file__).parent / "upscale"))
    import tiny_upscalers

    d = tmp_path_factory.mktemp("pin-inputs")
    scene = d / "scene.png"
    scenes.render(scenes.sample_scene(random.Random(3)), 64).save(scene)
    small = d / "small.png"
    Image.open(scene).resize((32, 32), Image.LANCZOS).save(small)
    mask = d / "mask.png"
    im = Image.new("L", (64, 64))
    ImageDraw.Draw(im).rectangle([16, 16, 47, 47], fill=255)
    im.save(mask)
    control_map = d / "map.png"
    im = Image.new("RGB", (32, 32))
    ImageDraw.Draw(im).rectangle([6, 8, 20, 27], fill=(255, 255, 255))
    im.save(control_map)
    models = d / "models"
    return {
        "tiny_sd": tiny_sd,
        "scene": scene,
        "small": small,
        "mask": mask,
        "control_map": control_map,
        "tiny_inpaint": tiny_inpaint,
        "tiny_cn": tiny_models.build_controlnet(models / "tiny-cn", tiny_sd),
        "lora": lora_files.build_peft_lora(tiny_sd, d / "style.safetensors", seed=1),
        "tiny_x4": tiny_upscalers.build_x4(models / "tiny-x4"),
    }


# name -> the command's arguments; {name} is a path from `inputs` (or a session fixture named there)
CASES = {
    "txt2img-bundled": ["txt2img", "red house on the left, snowy ground", "--steps", "4"],
    "txt2img-sd": ["txt2img", "castle at dusk", "-m", "{tiny_sd}", "--steps", "3", "--cfg", "5"],
    "txt2img-sd-cfg-cutoff": [
        "txt2img",
        "castle at dusk",
        "-m",
        "{tiny_sd}",
        "--steps",
        "4",
        "--cfg-cutoff",
        "0.5",
        "--scheduler",
        "euler-a",
        "-n",
        "2",
    ],
    "img2img-sd": ["img2img", "{small}", "oil painting", "-m", "{tiny_sd}", "--steps", "4", "--strength", "0.6"],
    "inpaint": ["inpaint", "{scene}", "--mask", "{mask}", "a red door", "-m", "{tiny_inpaint}", "--steps", "3"],
    "outpaint-bundled": ["outpaint", "{scene}", "--extend", "16,0,8,0", "--steps", "3"],
    "upscale-tiled": [
        "upscale",
        "{small}",
        "--scale",
        "2",
        "--method",
        "tiled",
        "-m",
        "{tiny_sd}",
        "--steps",
        "4",
        "--strength",
        "0.5",
        "--tile-size",
        "32",
        "--overlap",
        "8",
    ],
    "upscale-model": ["upscale", "{small}", "--scale", "4", "-m", "{tiny_x4}", "--steps", "3"],
    "control": ["txt2img", "castle", "-m", "{tiny_sd}", "--control", "{tiny_cn}:{control_map}:0.7", "--steps", "3"],
    "lora": ["txt2img", "castle", "-m", "{tiny_sd}", "--lora", "{lora}:0.8", "--steps", "3"],
    "sd3": ["txt2img", "a lighthouse", "-m", "{tiny_sd3}", "--steps", "3"],
    "flux": ["txt2img", "a lighthouse", "-m", "{tiny_flux}", "--steps", "3"],
}


def _places(inputs, request) -> dict[str, str]:
    places = {name: str(path) for name, path in inputs.items()}
    for name in ("tiny_sd3", "tiny_flux"):
        if any(f"{{{name}}}" in arg for case in CASES.values() for arg in case):
            places[name] = str(request.getfixturevalue(name))
    return places


def _general(value, places: dict[str, str]):
    """VALUE with every fixture path written as <name> (longest first, so no path is half-replaced)."""
    if isinstance(value, str):
        for name, path in sorted(places.items(), key=lambda item: -len(item[1])):
            value = value.replace(path, f"<{name}>")
        return value
    if isinstance(value, dict):
        return {k: _general(v, places) for k, v in value.items()}
    if isinstance(value, list):
        return [_general(v, places) for v in value]
    return value


def _shape(event: dict) -> list:
    """An event as pinned: its name, the fields it carries, and the values that do not vary."""
    return [
        event.get("event"),
        sorted(event),
        {k: v for k, v in sorted(event.items()) if k not in VOLATILE and not isinstance(v, float)},
    ]


def _run(case: str, places: dict[str, str], out: Path) -> tuple[list[Path], list[dict], list[dict]]:
    args = [arg.format(**places) for arg in CASES[case]]
    r = cli(*args, *COMMON, "-o", out)
    assert r.exit_code == 0, r.stderr
    events = [json.loads(line) for line in r.stderr.splitlines() if line.startswith("{")]
    results = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    return [Path(result.pop("path")) for result in results], results, events


def _pins() -> dict:
    path = PINS / "pins.json"
    return json.loads(path.read_text()) if path.exists() else {"cpu": None, "cases": {}}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_task_draws_records_and_reports_what_it_did(case, inputs, request, tmp_path):
    places = _places(inputs, request)
    images, results, events = _run(case, places, tmp_path / "out")
    got = {
        "results": _general(results, places),
        "records": [_general(json.loads(Image.open(p).info["diffcli"]), places) for p in images],
        "parameters": [_general(Image.open(p).info["parameters"], places) for p in images],
        "events": [_general(_shape(e), places) for e in events],
    }
    if WRITE:
        PINS.mkdir(exist_ok=True)
        pins = _pins()
        pins["cpu"] = _cpu_kind()
        pins["cases"][case] = got
        (PINS / "pins.json").write_text(json.dumps(pins, indent=1, sort_keys=True) + "\n")
        for i, p in enumerate(images):
            Image.open(p).save(PINS / f"{case}-{i}.png")
        pytest.skip("pins written")
    pins = _pins()
    assert case in pins["cases"], f"no pin for {case}: make them with DIFFCLI_WRITE_PINS=1"
    want = pins["cases"][case]
    assert got["results"] == want["results"]  # stdout's JSON lines, less each file's path
    assert got["records"] == want["records"]
    assert got["parameters"] == want["parameters"]
    assert got["events"] == want["events"]
    assert len(images) == len(want["records"])
    for i, p in enumerate(images):
        diff = np.abs(pixels(p) - pixels(PINS / f"{case}-{i}.png"))
        if pins["cpu"] == _cpu_kind():
            assert diff.max() == 0, f"{case} image {i}: max difference {diff.max()} on the pins' own CPU kind"
        else:  # another CPU's float rounding: a few levels at most
            assert diff.max() <= 4 and diff.mean() <= 0.5, f"{case} image {i}: max {diff.max()}, mean {diff.mean()}"
