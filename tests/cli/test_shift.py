"""`--shift`: the sampler's steps moved along the schedule (diffcli/timesteps.py), through the commands."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from helpers import cli, pixels, written

COMMON = ["--seed", "5", "--dtype", "float32", "--quiet", "--cfg", "6"]


def test_txt2img_shift_is_diffusers_with_the_shifted_timesteps(tiny_sd, tmp_path):
    import torch
    from diffusers import AutoPipelineForText2Image, EulerDiscreteScheduler

    args = ["txt2img", "castle at dusk", "-m", tiny_sd, "--steps", "6", "--scheduler", "euler", *COMMON]
    out = written(cli(*args, "--shift", "0.5", "-o", tmp_path / "shift.png"))[0]
    plain_out = written(cli(*args, "-o", tmp_path / "plain.png"))[0]
    assert json.loads(Image.open(out).info["diffcli"])["job"]["shift"] == 0.5
    assert "Shift: 0.5" in Image.open(out).info["parameters"]
    assert "Shift" not in Image.open(plain_out).info["parameters"]
    pipe = AutoPipelineForText2Image.from_pretrained(str(tiny_sd), torch_dtype=torch.float32)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config, use_karras_sigmas=False)
    pipe.scheduler.set_timesteps(6)
    u = (pipe.scheduler.timesteps.numpy() + 1) / 1000
    expected = [int(round(t)) for t in 0.5 * u / (1 - 0.5 * u) * 1000 - 1]
    assert all(e < t for e, t in zip(expected, pipe.scheduler.timesteps.tolist()))  # all moved toward clean
    shifted = pipe(
        "castle at dusk",
        timesteps=expected,
        guidance_scale=6.0,
        width=32,
        height=32,
        generator=torch.Generator("cpu").manual_seed(5),
    ).images[0]
    assert np.array_equal(pixels(out), np.asarray(shifted, dtype=np.int16))
    assert not np.array_equal(pixels(out), pixels(plain_out))


def test_img2img_with_a_shift_starts_part_way_down_the_shifted_schedule(tiny_sd, tmp_path):
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "in.png")

    def run(name, *extra):
        return cli(
            "img2img",
            tmp_path / "in.png",
            "castle",
            "-m",
            tiny_sd,
            "--steps",
            "8",
            "--strength",
            "0.5",
            "--scheduler",
            "dpm++2m",
            *COMMON,
            *extra,
            "-o",
            tmp_path / name,
        )

    shifted, plain = run("a.png", "--shift", "0.5"), run("b.png")
    assert shifted.exit_code == 0 and plain.exit_code == 0, shifted.stderr
    assert not np.array_equal(pixels(written(shifted)[0]), pixels(written(plain)[0]))


def test_bad_shift_fails_before_loading(tiny_sd, tmp_path):
    for args, message in [
        (["--shift", "0"], "--shift must be in (0, 10]"),
        (["--shift", "0.5", "--scheduler", "ddim"], "does not work with the 'ddim' sampler"),
    ]:
        r = cli("txt2img", "castle", "-m", tiny_sd, *args, "-o", tmp_path)
        assert r.exit_code == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not any(tmp_path.iterdir())
    r = cli(
        "txt2img", "castle", "-m", tiny_sd, "--shift", "1", "--scheduler", "ddim", "--steps", "2", "-o", tmp_path, "-q"
    )
    assert r.exit_code == 0, r.stderr  # shift 1 changes nothing, so any sampler takes it


def test_a_models_own_shift_is_its_default_and_is_checked(tiny_sd, tmp_path):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_sd, model)
    args = ["txt2img", "castle", "-m", model, "--steps", "4", "--scheduler", "euler", *COMMON]
    (model / "diffcli.json").write_text(json.dumps({"shift": 0.5}))
    own = written(cli(*args, "-o", tmp_path / "own.png"))[0]
    given = written(cli(*args, "--shift", "0.5", "-o", tmp_path / "given.png"))[0]
    plain = written(cli(*args, "--shift", "1", "-o", tmp_path / "plain.png"))[0]
    assert json.loads(Image.open(own).info["diffcli"])["job"]["shift"] == 0.5
    assert np.array_equal(pixels(own), pixels(given)) and not np.array_equal(pixels(own), pixels(plain))
    (model / "diffcli.json").write_text(json.dumps({"shift": 50}))
    r = cli(*args, "-o", tmp_path / "bad")
    assert r.exit_code == 2 and f"{model / 'diffcli.json'}: shift must be in (0, 10] (got 50" in r.stderr, r.stderr
    assert not (tmp_path / "bad").exists()
    assert written(cli(*args, "--shift", "1", "-o", tmp_path / "flag.png"))  # a flag overrides the bad value
