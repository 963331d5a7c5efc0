"""txt2img / img2img / inpaint end to end on tiny models, in-process and as a subprocess."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import cli, default_sigint, pixels, subprocess_cli, written

FAST = ["--steps", "2", "--dtype", "float32", "--quiet"]


def test_txt2img_writes_paths_and_metadata(tiny_sd, tmp_path):
    r = cli("txt2img", "castle at dusk", "-m", tiny_sd, "-n", "2", "--seed", "42", "-o", tmp_path, *FAST)
    assert r.exit_code == 0, r.stderr
    paths = written(r)
    assert len(paths) == 2 and all(p.is_file() for p in paths)
    assert [p.parent for p in paths] == [tmp_path, tmp_path]
    with Image.open(paths[1]) as img:
        assert img.size == (32, 32)
        params = img.info["parameters"]
        record = json.loads(img.info["diffcli"])
    assert params.startswith("castle at dusk\n")
    assert "Seed: 43" in params and "Steps: 2" in params
    assert record["job"]["seed"] == 43 and record["job"]["model"] == str(tiny_sd)
    assert record["device"] == "cpu" and record["dtype"] == "float32"
    assert len(record["model"]["hash"]) == 10
    # no temp files are left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)


def test_same_job_gives_same_pixels_and_seeds_differ(tiny_sd, tmp_path):
    a = written(cli("txt2img", "castle", "-m", tiny_sd, "--seed", "7", "-n", "2", "-o", tmp_path / "a", *FAST))
    b = written(cli("txt2img", "castle", "-m", tiny_sd, "--seed", "7", "-n", "2", "-o", tmp_path / "b", *FAST))
    assert np.array_equal(pixels(a[0]), pixels(b[0])) and np.array_equal(pixels(a[1]), pixels(b[1]))
    assert not np.array_equal(pixels(a[0]), pixels(a[1]))
    # image 2 of a run seeded 7 is the image of a run seeded 8
    c = written(cli("txt2img", "castle", "-m", tiny_sd, "--seed", "8", "-o", tmp_path / "c", *FAST))
    assert np.array_equal(pixels(a[1]), pixels(c[0]))


def test_from_image_regenerates_the_same_image(tiny_sd, tmp_path):
    first = written(
        cli(
            "txt2img",
            "red door",
            "-m",
            tiny_sd,
            "--seed",
            "3",
            "--cfg",
            "4",
            "--scheduler",
            "euler",
            "-o",
            tmp_path / "a",
            *FAST,
        )
    )[0]
    again = written(cli("txt2img", "--from", first, "-o", tmp_path / "b", "--quiet"))[0]
    assert np.array_equal(pixels(first), pixels(again))
    # explicit flags win over the recorded job
    other = written(cli("txt2img", "--from", first, "--seed", "4", "-o", tmp_path / "c", "--quiet"))[0]
    assert json.loads(Image.open(other).info["diffcli"])["job"]["seed"] == 4
    assert json.loads(Image.open(other).info["diffcli"])["job"]["scheduler"] == "euler"


def test_matches_plain_diffusers_pixel_for_pixel(tiny_sd, tmp_path):
    import torch
    from diffusers import AutoPipelineForText2Image, DPMSolverMultistepScheduler

    out = written(
        cli(
            "txt2img",
            "castle at dusk",
            "-m",
            tiny_sd,
            "--seed",
            "11",
            "--steps",
            "3",
            "--cfg",
            "5",
            "--scheduler",
            "dpm++2m-karras",
            "--dtype",
            "float32",
            "--quiet",
            "-o",
            tmp_path,
        )
    )[0]
    pipe = AutoPipelineForText2Image.from_pretrained(str(tiny_sd), torch_dtype=torch.float32)
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config, use_karras_sigmas=True)
    plain = pipe(
        "castle at dusk",
        num_inference_steps=3,
        guidance_scale=5.0,
        generator=torch.Generator("cpu").manual_seed(11),
        width=32,
        height=32,
    ).images[0]
    assert np.array_equal(pixels(out), np.asarray(plain, dtype=np.int16))


def test_the_auto_dtype_matches_plain_diffusers_in_the_dtype_it_picks(cpu_bf16, tiny_sd, tmp_path):
    import torch
    from diffusers import AutoPipelineForText2Image

    from diffcli.device import channels_last

    r = cli(
        "txt2img",
        "castle at dusk",
        "-m",
        tiny_sd,
        "--seed",
        "11",
        "--steps",
        "2",
        "--cfg",
        "5",
        "--scheduler",
        "euler",
        "--quiet",
        "-o",
        tmp_path,
    )
    out = written(r)[0]
    dtype = torch.bfloat16 if cpu_bf16 else torch.float32
    assert json.loads(Image.open(out).info["diffcli"])["dtype"] == str(dtype).removeprefix("torch.")
    pipe = AutoPipelineForText2Image.from_pretrained(str(tiny_sd), torch_dtype=dtype)
    from diffusers import EulerDiscreteScheduler

    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    if channels_last("cpu", str(dtype).removeprefix("torch.")):  # the layout it picks with the dtype (issue 31)
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
    plain = pipe(
        "castle at dusk",
        num_inference_steps=2,
        guidance_scale=5.0,
        generator=torch.Generator("cpu").manual_seed(11),
        width=32,
        height=32,
    ).images[0]
    assert np.array_equal(pixels(out), np.asarray(plain, dtype=np.int16))


def test_sdxl_layout(tiny_sdxl, tmp_path):
    r = cli("txt2img", "castle", "-m", tiny_sdxl, "--seed", "1", "-o", tmp_path, *FAST)
    assert r.exit_code == 0, r.stderr
    assert Image.open(written(r)[0]).size == (32, 32)


@pytest.mark.parametrize("scheduler", ["ddim", "euler-a", "heun", "dpm++2m-sde-karras", "unipc", "lcm"])
def test_every_kind_of_scheduler_runs(tiny_sd, tmp_path, scheduler):
    r = cli("txt2img", "castle", "-m", tiny_sd, "--seed", "1", "--scheduler", scheduler, "-o", tmp_path, *FAST)
    assert r.exit_code == 0, r.stderr
    assert "Sampler: " in Image.open(written(r)[0]).info["parameters"]


def _input_image(path: Path, size=(32, 32)) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def _half_mask(path: Path, size=(32, 32)) -> Path:
    mask = np.zeros((size[1], size[0]), dtype=np.uint8)
    mask[:, size[0] // 2 :] = 255
    Image.fromarray(mask).save(path)
    return path


def test_img2img_keeps_size_and_rounds_with_a_note(tiny_sd, tmp_path):
    src = _input_image(tmp_path / "in.png", (37, 33))
    r = cli(
        "img2img",
        src,
        "watercolor",
        "-m",
        tiny_sd,
        "--strength",
        "0.5",
        "--seed",
        "1",
        "-o",
        tmp_path / "out",
        "--steps",
        "4",
        "--dtype",
        "float32",
        "--json",
    )
    assert r.exit_code == 0, r.stderr
    assert "36x32" in r.stderr  # the rounding is reported
    result = json.loads(r.stdout.splitlines()[0])
    assert (result["width"], result["height"]) == (36, 32)
    assert Image.open(result["path"]).size == (36, 32)
    steps = [json.loads(line) for line in r.stderr.splitlines() if '"event": "step"' in line]
    assert steps[-1]["steps"] == 2  # strength 0.5 of 4 steps


@pytest.mark.parametrize("fixture", ["tiny_sd", "tiny_inpaint"])
def test_inpaint_changes_nothing_outside_the_mask(fixture, request, tmp_path):
    model = request.getfixturevalue(fixture)
    src = _input_image(tmp_path / "in.png")
    mask = _half_mask(tmp_path / "mask.png")
    r = cli("inpaint", src, "a red door", "--mask", mask, "-m", model, "--seed", "2", "-o", tmp_path / "out", *FAST)
    assert r.exit_code == 0, r.stderr
    out, before = pixels(written(r)[0]), pixels(src)
    assert np.array_equal(out[:, :16], before[:, :16])
    assert np.abs(out[:, 16:] - before[:, 16:]).mean() > 5


def test_inpaint_model_is_refused_for_txt2img(tiny_inpaint, tmp_path):
    r = cli("txt2img", "castle", "-m", tiny_inpaint, "-o", tmp_path, *FAST)
    assert r.exit_code == 2 and "inpainting model" in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_subprocess_prints_only_paths_on_stdout(tiny_sd, tmp_path):
    p = subprocess_cli(
        "txt2img",
        "castle at dusk",
        "-m",
        tiny_sd,
        "-n",
        "2",
        "--seed",
        "5",
        "-o",
        tmp_path,
        "--steps",
        "2",
        "--dtype",
        "float32",
    )
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert len(lines) == 2 and all(Path(line).is_file() for line in lines)
    events = [json.loads(line) for line in p.stderr.splitlines() if line.startswith("{")]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done" and kinds.count("saved") == 2
    assert [e["step"] for e in events if e["event"] == "step"] == [1, 2, 1, 2]


def test_batches_record_the_same_seeds_and_nearly_the_same_pixels(tiny_sd, tmp_path):
    one = written(cli("txt2img", "castle", "-m", tiny_sd, "--seed", "3", "-n", "3", "-o", tmp_path / "a", *FAST))
    three = written(
        cli(
            "txt2img",
            "castle",
            "-m",
            tiny_sd,
            "--seed",
            "3",
            "-n",
            "3",
            "--batch-size",
            "3",
            "-o",
            tmp_path / "b",
            *FAST,
        )
    )
    for a, b in zip(one, three):
        assert (
            json.loads(Image.open(a).info["diffcli"])["job"]["seed"]
            == json.loads(Image.open(b).info["diffcli"])["job"]["seed"]
        )
        assert np.abs(pixels(a) - pixels(b)).max() <= 2  # batched matmuls may round differently


def test_save_partial_on_ctrl_c(tiny_sd, tmp_path):
    import signal
    import subprocess
    import sys

    out = tmp_path / "o"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "diffcli",
            "txt2img",
            "castle",
            "-m",
            str(tiny_sd),
            "--steps",
            "400",
            "--seed",
            "1",
            "--scheduler",
            "euler",
            "-o",
            str(out),
            "--json",
            "--dtype",
            "float32",
            "--save-partial",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,
    )
    for line in proc.stderr:
        if '"step": 3,' in line:
            break
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    (path,) = [Path(json.loads(line)["path"]) for line in stdout.splitlines()]
    assert path.name.endswith("-partial.png") and path.parent == out
    record = json.loads(Image.open(path).info["diffcli"])
    assert record["partial"] is True and record["job"]["seed"] == 1
    assert [p.name for p in out.iterdir()] == [path.name]  # no temp files, no final image


def test_zero_terminal_snr_model_warns_for_samplers_that_ignore_it(tiny_sd, tmp_path):
    import shutil

    model = tmp_path / "zsnr"
    shutil.copytree(tiny_sd, model)
    cfg_path = model / "scheduler" / "scheduler_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.update(rescale_betas_zero_snr=True, prediction_type="v_prediction", timestep_spacing="trailing")
    cfg_path.write_text(json.dumps(cfg))
    r = cli(
        "txt2img", "castle", "-m", model, "--seed", "1", "--scheduler", "heun", "-o", tmp_path / "h.png", "--steps", "2"
    )
    assert r.exit_code == 0 and "cannot follow this model's zero-terminal-SNR schedule" in r.stderr
    ok = cli(
        "txt2img",
        "castle",
        "-m",
        model,
        "--seed",
        "1",
        "--scheduler",
        "euler",
        "-o",
        tmp_path / "e.png",
        "--steps",
        "2",
    )
    assert ok.exit_code == 0 and "zero-terminal-SNR" not in ok.stderr


def test_a_flow_sampler_on_the_bundled_unet_models_is_a_usage_error_before_loading(tmp_path):
    """The bundled UNet models (tiny, tiny-lcm, tiny-edit) take no flow-matching sampler: exit 2, nothing loads
    (before: an AttributeError from the pipeline once the model had loaded, exit 1)."""
    image = tmp_path / "in.png"
    Image.new("RGB", (32, 32), "blue").save(image)
    for args in (
        ["txt2img", "castle"],
        ["txt2img", "castle", "-m", "tiny-lcm"],
        ["edit", image, "make it night", "-m", "tiny-edit"],
        ["upscale", image],
    ):
        r = cli(*args, "--scheduler", "flow-euler", "-o", tmp_path / "o/", "--json")
        assert r.exit_code == 2 and r.stdout == "", (args, r.stderr)
        assert "scheduler 'flow-euler' does not apply to tiny" in r.stderr.splitlines()[-1], r.stderr
        assert '"phase": "load"' not in r.stderr
    assert not (tmp_path / "o").exists()


def test_from_an_image_on_another_model_takes_that_models_sampler_where_the_recorded_one_does_not_fit(tmp_path):
    made = cli("txt2img", "castle", "-m", "tiny-flux", "--steps", "2", "-o", tmp_path / "flux/", "-q")
    assert made.exit_code == 0, made.stderr
    r = cli("txt2img", "--from", made.stdout.strip(), "-m", "tiny", "--steps", "2", "-o", tmp_path / "unet/")
    assert r.exit_code == 0, r.stderr
    assert "the --from image's scheduler 'flow-euler' does not apply to tiny; using its own" in r.stderr
    with Image.open(r.stdout.strip()) as img:
        replayed = json.loads(img.info["diffcli"])["job"]
    assert replayed["scheduler"] == "dpm++2m" and replayed["prompt"] == "castle"
    # named on the command line, a sampler that does not fit is refused as ever
    r = cli("txt2img", "--from", made.stdout.strip(), "-m", "tiny", "--scheduler", "flow-euler", "-o", tmp_path / "x/")
    assert r.exit_code == 2 and "does not apply to tiny" in r.stderr
