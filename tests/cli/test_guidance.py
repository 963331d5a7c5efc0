"""`--cfg-cutoff`: guidance on the noisy steps only (diffcli/guidance.py), through the commands."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from helpers import cli, pixels, written

COMMON = ["--seed", "5", "--dtype", "float32", "--quiet", "--cfg", "6"]


def _input(path, size=32):
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
    return path


def test_txt2img_cutoff_matches_diffusers_cfg_cutoff_callback(tiny_sd, tmp_path):
    import torch
    from diffusers import AutoPipelineForText2Image, EulerDiscreteScheduler
    from diffusers.callbacks import SDCFGCutoffCallback

    out = written(
        cli(
            "txt2img",
            "castle at dusk",
            "-m",
            tiny_sd,
            "--steps",
            "6",
            "--scheduler",
            "euler",
            "--cfg-cutoff",
            "0.5",
            *COMMON,
            "-o",
            tmp_path / "cut.png",
        )
    )[0]
    full = written(
        cli(
            "txt2img",
            "castle at dusk",
            "-m",
            tiny_sd,
            "--steps",
            "6",
            "--scheduler",
            "euler",
            *COMMON,
            "-o",
            tmp_path / "full.png",
        )
    )[0]
    assert json.loads(Image.open(out).info["diffcli"])["job"]["cfg_cutoff"] == 0.5
    pipe = AutoPipelineForText2Image.from_pretrained(str(tiny_sd), torch_dtype=torch.float32)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.scheduler.set_timesteps(6)
    last_guided = int((pipe.scheduler.timesteps >= 500).sum()) - 1  # the last step at or above 0.5 * 1000
    assert 0 <= last_guided < 5
    plain = pipe(
        "castle at dusk",
        num_inference_steps=6,
        guidance_scale=6.0,
        width=32,
        height=32,
        generator=torch.Generator("cpu").manual_seed(5),
        callback_on_step_end=SDCFGCutoffCallback(cutoff_step_ratio=None, cutoff_step_index=last_guided),
    ).images[0]
    assert np.array_equal(pixels(out), np.asarray(plain, dtype=np.int16))
    assert not np.array_equal(pixels(out), pixels(full))


def test_low_strength_img2img_past_the_cutoff_is_unguided(tiny_sd, tmp_path):
    image = _input(tmp_path / "in.png")

    def run(name, *extra):
        return written(
            cli(
                "img2img",
                image,
                "castle",
                "-m",
                tiny_sd,
                "--steps",
                "10",
                "--strength",
                "0.3",
                *COMMON,
                *extra,
                "-o",
                tmp_path / name,
            )
        )[0]

    cut = run("cut.png", "--cfg-cutoff", "0.4")
    unguided = run("one.png", "--cfg", "1")
    guided = run("guided.png")
    assert np.array_equal(pixels(cut), pixels(unguided))
    assert not np.array_equal(pixels(cut), pixels(guided))


def test_cutoff_mid_run_for_inpainting_and_sdxl_models(tiny_inpaint, tiny_sdxl, tmp_path):
    image = _input(tmp_path / "in.png")
    mask = np.zeros((32, 32), dtype=np.uint8)
    mask[8:24, 8:24] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    runs = {
        "inpaint": ["inpaint", image, "a door", "--mask", tmp_path / "mask.png", "-m", tiny_inpaint, "-n", "2"],
        "sdxl": ["txt2img", "castle", "-m", tiny_sdxl, "-n", "2", "--batch-size", "2"],
    }
    for name, args in runs.items():
        outs = {}
        for cutoff in ("0", "0.5"):
            r = cli(*args, "--steps", "4", "--cfg-cutoff", cutoff, *COMMON, "-o", tmp_path / f"{name}-{cutoff}")
            assert r.exit_code == 0, (name, r.stderr)
            outs[cutoff] = [pixels(p) for p in written(r)]
        # the guided first steps are shared, the unguided rest differs
        assert any(not np.array_equal(a, b) for a, b in zip(outs["0"], outs["0.5"])), name


def test_cutoff_out_of_range(tiny_sd, tmp_path):
    for bad in ("1", "-0.1"):
        r = cli("txt2img", "castle", "-m", tiny_sd, "--cfg-cutoff", bad, "-o", tmp_path)
        assert r.exit_code == 2 and "--cfg-cutoff must be in [0, 1)" in r.stderr
    assert not any(tmp_path.iterdir())
