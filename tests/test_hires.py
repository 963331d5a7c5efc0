"""The hires fix (txt2img --hires): the pixels of a plain diffusers two-pass script, replayed by --from and a
batch line, recorded as AUTOMATIC1111 writes it; bad input refused before torch loads."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from diffcli import hires
from diffcli.errors import UsageError
from diffcli.jobs import Job, validate
from diffcli.metadata import a1111_parameters, parameters_fields

from helpers import cli, heavy_imports, pixels, written

PROMPT = "castle at dusk"
FIRST = ("--steps", "3", "--cfg", "5", "--cfg-cutoff", "0", "--scheduler", "euler", "--dtype", "float32")
FAST = (*FIRST, "--width", "32", "--height", "32", "--seed", "7", "--quiet")


def _plain_two_pass(tiny_sd, seed: int, size=(32, 32), scale=2, strength=0.7, steps=3):
    """What a plain diffusers script makes: txt2img at SIZE, a lanczos resample to SIZE x SCALE, then
    img2img (the same components) at STRENGTH for STEPS with a fresh generator of the same seed."""
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionImg2ImgPipeline, StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_sd), dtype=torch.float32)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config, use_karras_sigmas=False)
    pipe.set_progress_bar_config(disable=True)
    first = pipe(
        PROMPT,
        num_inference_steps=3,
        guidance_scale=5.0,
        generator=torch.Generator("cpu").manual_seed(seed),
        width=size[0],
        height=size[1],
    ).images[0]
    upscaled = first.resize((size[0] * scale, size[1] * scale), Image.LANCZOS)
    img2img = StableDiffusionImg2ImgPipeline(**pipe.components)
    img2img.set_progress_bar_config(disable=True)
    image = img2img(
        PROMPT,
        image=upscaled,
        strength=strength,
        num_inference_steps=steps,
        guidance_scale=5.0,
        generator=torch.Generator("cpu").manual_seed(seed),
    ).images[0]
    return np.asarray(image, dtype=np.int16)


def test_hires_is_the_plain_diffusers_two_pass_and_replays(tiny_sd, tmp_path):
    made = cli("txt2img", PROMPT, "-m", tiny_sd, "--hires", "2", *FAST, "-o", tmp_path / "a")
    assert made.exit_code == 0, made.stderr
    (path,) = written(made)
    with Image.open(path) as image:
        assert image.size == (64, 64)
        params = image.info["parameters"]
    assert np.array_equal(pixels(path), _plain_two_pass(tiny_sd, 7))
    fields = parameters_fields(params)
    assert fields["Size"] == "32x32"  # the first pass's, as A1111 writes it
    assert (fields["Hires upscale"], fields["Hires steps"], fields["Hires upscaler"]) == ("2", "3", "Lanczos")
    assert fields["Denoising strength"] == "0.7"
    info = cli("info", path)
    assert info.exit_code == 0 and "Hires upscale: 2" in info.stdout

    replay = cli("txt2img", "--from", path, "-o", tmp_path / "b", "--quiet")
    assert replay.exit_code == 0, replay.stderr
    assert np.array_equal(pixels(written(replay)[0]), pixels(path))

    line = {"prompt": PROMPT, "model": str(tiny_sd), "steps": 3, "cfg": 5, "cfg_cutoff": 0, "scheduler": "euler"}
    line.update(dtype="float32", width=32, height=32, seed=7, hires=2, hires_strength=0.7)
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(json.dumps(line) + "\n")
    batch = cli("batch", jobs, "-o", tmp_path / "c", "--quiet")
    assert batch.exit_code == 0, batch.stderr
    assert np.array_equal(pixels(written(batch)[0]), pixels(path))


def test_hires_options_and_an_unchanged_job_without_them(tiny_sd, tmp_path):
    """--hires-size, --hires-steps, --hires-strength and the latent upscaler; a job without --hires
    records no hires field."""
    made = cli(
        "txt2img",
        PROMPT,
        "-m",
        tiny_sd,
        *FAST,
        "--hires-size",
        "48x0",
        "--hires-steps",
        "2",
        "--hires-strength",
        "0.5",
        "--hires-upscaler",
        "latent",
        "--json",
        "-o",
        tmp_path / "a",
    )
    assert made.exit_code == 0, made.stderr
    result = json.loads(made.stdout.splitlines()[0])
    assert (result["width"], result["height"]) == (48, 48)
    with Image.open(result["path"]) as image:
        assert image.size == (48, 48)
        fields = parameters_fields(image.info["parameters"])
        record = json.loads(image.info["diffcli"])["job"]
    assert fields["Hires resize"] == "48x0" and "Hires upscale" not in fields
    assert (fields["Hires steps"], fields["Hires upscaler"], fields["Denoising strength"]) == ("2", "Latent", "0.5")
    assert record["hires_size"] == "48x0" and "hires" not in record
    plain = cli("txt2img", PROMPT, "-m", tiny_sd, *FAST, "-o", tmp_path / "b")
    assert plain.exit_code == 0, plain.stderr
    with Image.open(written(plain)[0]) as image:
        record = json.loads(image.info["diffcli"])["job"]
        assert not any(k.startswith("hires") for k in record) and "Hires" not in image.info["parameters"]


def test_the_parameters_text_reads_in_sd_parsers(tmp_path):
    pytest.importorskip("sd_parsers")
    record = {
        "diffcli": "0.1.0",
        "job": {
            "task": "txt2img",
            "prompt": "red house",
            "steps": 20,
            "cfg": 7.0,
            "seed": 5,
            "width": 512,
            "height": 512,
            "scheduler": "euler",
            "hires": 2.0,
            "hires_upscaler": "latent",
            "hires_strength": 0.7,
        },
        "model": {"name": "tiny", "hash": "abc"},
    }
    text = a1111_parameters(record)
    assert "Hires upscale: 2, Hires steps: 20, Hires upscaler: Latent" in text
    assert "Size: 512x512" in text and "Denoising strength: 0.7" in text
    from PIL import PngImagePlugin
    from sd_parsers import ParserManager

    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", text)
    Image.new("RGB", (8, 8)).save(tmp_path / "hires.png", pnginfo=info)
    found = ParserManager().parse(tmp_path / "hires.png")
    assert found is not None and found.generator.name == "AUTOMATIC1111"
    (sampler,) = found.samplers
    assert sampler.name == "Euler" and sampler.parameters == {"cfg_scale": "7.0", "seed": "5", "steps": "20"}
    assert sampler.prompts[0].value == "red house"
    # sd-parsers keeps the fields it has no place for (the hires ones among them) in its metadata
    assert {k: found.metadata.get(k) for k in ("Size", "Hires upscale", "Hires steps", "Hires upscaler")} == {
        "Size": "512x512",
        "Hires upscale": "2",
        "Hires steps": "20",
        "Hires upscaler": "Latent",
    }
    assert found.metadata["Denoising strength"] == "0.7"


@pytest.mark.parametrize(
    "job, message",
    [
        (Job(hires=1.0), r"--hires must be a scale over 1 and at most 4 \(got 1\)"),
        (Job(hires=4.5), r"--hires must be a scale over 1 and at most 4 \(got 4.5\)"),
        (Job(hires=2.0, hires_size="64x64"), "give --hires SCALE or --hires-size WxH, not both"),
        (Job(hires_size="64"), "--hires-size must be WIDTHxHEIGHT"),
        (Job(hires_size="0x0"), "--hires-size must be WIDTHxHEIGHT"),
        (Job(hires=2.0, hires_strength=0.0), r"--hires-strength must be in \(0, 1\] \(got 0\)"),
        (Job(hires=2.0, hires_steps=0), "--hires-steps must be between 1 and 1000"),
        (Job(hires=2.0, hires_upscaler="esrgan"), "--hires-upscaler must be one of lanczos, nearest, latent"),
        (Job(hires_strength=0.5), "--hires-strength set the hires pass; add --hires SCALE or --hires-size WxH"),
        (Job(task="img2img", image="x.png", hires=2.0), "the hires fix .* is for txt2img; img2img does not take it"),
    ],
)
def test_bad_hires_settings_are_usage_errors(job, message):
    with pytest.raises(UsageError, match=message):
        validate(job)


def test_sizes_and_names():
    job = Job(width=64, height=48, hires=1.5)
    assert hires.target_size(job) == (96, 72)
    assert hires.target_size(Job(width=64, height=48, hires=1.7)) == (104, 80)  # rounded down to a multiple of 8
    assert hires.target_size(Job(width=64, height=48, hires_size="128x0")) == (128, 96)
    assert hires.target_size(Job(width=64, height=48, hires_size="0x96")) == (128, 96)
    with pytest.raises(UsageError, match="--hires-size width 100 is not valid for this model: use a multiple of 8"):
        hires.check_target(Job(width=64, height=48, hires_size="100x96"), 8)
    assert hires.upscale_image(Image.new("RGB", (64, 48)), (128, 128), "lanczos").size == (128, 128)
    assert [hires.from_a1111(n) for n in ("Latent", "Lanczos", "None", None)] == ["latent", "lanczos", "lanczos", None]
    with pytest.raises(UsageError, match="hr_upscaler 'ESRGAN_4x' is not supported"):
        hires.from_a1111("ESRGAN_4x")
    assert Job(prompt="x").to_dict() == {k: v for k, v in Job(prompt="x").to_dict().items() if "hires" not in k}


def test_bad_hires_flags_fail_before_torch_loads():
    probe = heavy_imports("txt2img", "x", "--hires", "9", "--no-server")
    assert "--hires must be a scale over 1 and at most 4 (got 9)" in probe.stderr
    assert probe.stderr.rstrip().endswith("HEAVY=")
    probe = heavy_imports("img2img", "in.png", "x", "--hires", "2", "--no-server")
    assert "no such option: --hires" in probe.stderr
    bad = cli("txt2img", "x", "--hires", "2", "--hires-size", "64x64", "--no-server")
    assert bad.exit_code == 2 and bad.stderr.strip().splitlines() == [
        "diffcli: error: give --hires SCALE or --hires-size WxH, not both"
    ]


def test_the_strength_default_is_the_familys_where_it_has_one(tiny_sd, tmp_path):
    """A1111's 0.7 for a family that names none (SD 1.x); the bundled family's measured 0.2 for `tiny`, where 0.7
    repeats objects (docs/benchmarks.md); --hires-strength wins over both."""
    strengths = {}
    for name, model, extra in (
        ("sd", tiny_sd, []),
        ("tiny", "tiny", []),
        ("tiny-given", "tiny", ["--hires-strength", "0.4"]),
    ):
        r = cli("txt2img", PROMPT, "-m", model, "--steps", "5", "--seed", "1", "--hires", "2", *extra, "--quiet",
                "-o", tmp_path / name)  # fmt: skip
        assert r.exit_code == 0, r.stderr
        with Image.open(written(r)[0]) as image:
            strengths[name] = json.loads(image.info["diffcli"])["job"]["hires_strength"]
    assert strengths == {"sd": 0.7, "tiny": 0.2, "tiny-given": 0.4}
    # a pass that would run no step (int(2 x 0.2) = 0) is one line, exit 2, before anything loads
    none = cli("txt2img", PROMPT, "-m", "tiny", "--steps", "2", "--hires", "2", "--quiet", "-o", tmp_path / "none")
    assert none.exit_code == 2 and "use --hires-steps 5 or more" in none.stderr, none.stderr
    plain = cli("txt2img", PROMPT, "-m", "tiny", "--steps", "2", "--quiet", "-o", tmp_path / "plain")
    with Image.open(written(plain)[0]) as image:  # no hires pass: no hires field, not even the family's
        assert not any(k.startswith("hires") for k in json.loads(image.info["diffcli"])["job"])
