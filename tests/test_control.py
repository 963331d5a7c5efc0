"""ControlNet: --control on the generation commands, its record and replay, preprocessors, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from diffcli.control import Control, canny, parse_spec
from diffcli.errors import UsageError

import tiny_models
from helpers import cli, heavy_imports, pixels, written

FAST = ["--steps", "2", "--dtype", "float32", "--quiet", "--no-server"]


@pytest.fixture(scope="session")
def tiny_cn(tiny_sd, tmp_path_factory) -> Path:
    return tiny_models.build_controlnet(tmp_path_factory.mktemp("models") / "tiny-cn", tiny_sd)


@pytest.fixture(scope="session")
def control_map(tmp_path_factory) -> Path:
    im = Image.new("RGB", (32, 32))
    ImageDraw.Draw(im).rectangle([6, 8, 20, 27], fill=(255, 255, 255))
    path = tmp_path_factory.mktemp("maps") / "map.png"
    im.save(path)
    return path


def test_control_specs_parse_and_bad_ones_are_usage_errors(tmp_path):
    assert parse_spec("seg:map.png") == Control("seg", "map.png", 1.0, 0.0, 1.0)
    assert parse_spec("org/cn:a/b.png:0.5") == Control("org/cn", "a/b.png", 0.5, 0.0, 1.0)
    assert parse_spec("canny:e.png:0.8:0.1:0.6") == Control("canny", "e.png", 0.8, 0.1, 0.6)
    assert parse_spec(r"C:\nets\cn:D:\maps\m.png:2") == Control(r"C:\nets\cn", r"D:\maps\m.png", 2.0, 0.0, 1.0)
    assert parse_spec(Control("x", "/abs/m.png", 0.25, 0.0, 0.5).spec()) == Control("x", "/abs/m.png", 0.25, 0.0, 0.5)
    assert parse_spec("cn+2:m.png") == Control("cn", "m.png", mode="2")  # a union type ...
    (tmp_path / "cn+2").mkdir()  # ... unless the whole name is a folder that exists
    assert parse_spec(f"{tmp_path}/cn+2:m.png") == Control(f"{tmp_path}/cn+2", "m.png")
    for bad in ("seg", "seg:", ":map.png", "seg:m.png:-1", "seg:m.png:1:0.6:0.2", "seg:m.png:nan", "seg:m.png:1:0:2"):
        with pytest.raises(UsageError):
            parse_spec(bad)


def test_canny_finds_the_edges_of_a_shape(control_map, tmp_path):
    edges = np.asarray(canny(Image.open(control_map).convert("RGB")))[:, :, 0] > 0
    rect = np.zeros((32, 32), bool)
    rect[8:28, 6:21] = True
    near = np.zeros_like(rect)  # within one pixel of the rectangle's border
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            near |= np.roll(rect, (dy, dx), (0, 1)) != rect
    assert edges.sum() >= 40 and (edges & ~near).sum() == 0
    # `diffcli control preprocess` writes the same map
    r = cli("control", "preprocess", control_map, "--kind", "canny", "-o", tmp_path / "e.png")
    assert r.exit_code == 0, r.stderr
    assert written(r) == [tmp_path / "e.png"]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "e.png"))[:, :, 0] > 0, edges)
    again = cli("control", "preprocess", control_map, "--kind", "canny", "-o", tmp_path / "e.png")
    assert again.exit_code == 2 and "exists" in again.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--control", "CN:missing.png"], "no such image file"),
        (["--control", "CN:MAP:-0.5"], "scale must be"),
        (["--control", "CN:MAP:1:0.8:0.2"], "START and END"),
        (["--control", "CN:MAP", "--control-preprocess", "sobel"], "--control-preprocess must be one of"),
        (["--control-preprocess", "canny"], "needs a --control"),
        (["--control", "canny:MAP", "-m", "tiny"], "no default canny ControlNet for bundled"),
        (["--control", "CN:MAP", "-m", "tiny"], "made for another model family"),
    ],
)
def test_bad_control_input_is_one_usage_line(tiny_sd, tiny_cn, control_map, args, message):
    args = [str(a).replace("CN", str(tiny_cn)).replace("MAP", str(control_map)) for a in args]
    if "-m" not in args:
        args += ["-m", str(tiny_sd)]
    r = cli("txt2img", "castle", *args, *FAST)
    assert r.exit_code == 2, r.stderr
    assert r.stderr.startswith("diffcli: error: ") and r.stderr.count("\n") == 1 and message in r.stderr


def test_a_bad_control_fails_before_torch_is_imported(tiny_sd, tiny_cn, tmp_path):
    r = heavy_imports(
        "txt2img", "castle", "-m", str(tiny_sd), "--control", f"{tiny_cn}:{tmp_path}/none.png", "--no-server"
    )
    assert "no such image file" in r.stderr and r.stderr.rstrip().endswith("HEAVY=")


def test_txt2img_with_control_matches_plain_diffusers(tiny_sd, tiny_cn, control_map, tmp_path):
    import torch
    from diffusers import ControlNetModel, DPMSolverMultistepScheduler, StableDiffusionControlNetPipeline

    out = written(
        cli(
            "txt2img",
            "castle at dusk",
            "-m",
            tiny_sd,
            "--control",
            f"{tiny_cn}:{control_map}:0.7",
            "--seed",
            "11",
            "--steps",
            "2",
            "--cfg",
            "5",
            "--scheduler",
            "dpm++2m-karras",
            "--dtype",
            "float32",
            "--quiet",
            "--no-server",
            "-o",
            tmp_path,
        )
    )[0]
    pipe = StableDiffusionControlNetPipeline.from_pretrained(
        str(tiny_sd), controlnet=ControlNetModel.from_pretrained(str(tiny_cn)), torch_dtype=torch.float32
    )
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config, use_karras_sigmas=True)
    plain = pipe(
        "castle at dusk",
        image=Image.open(control_map).convert("RGB"),
        controlnet_conditioning_scale=0.7,
        num_inference_steps=2,
        guidance_scale=5.0,
        generator=torch.Generator("cpu").manual_seed(11),
        width=32,
        height=32,
    ).images[0]
    assert np.array_equal(pixels(out), np.asarray(plain, dtype=np.int16))


def test_multi_control_is_recorded_and_replayed(tiny_sd, tiny_cn, control_map, tmp_path):
    # two ControlNets, the second for the first half of the steps, edges made by canny; guidance stops
    # part-way (--cfg-cutoff), so the doubled control images are halved with everything else
    r = cli(
        "txt2img",
        "castle",
        "-m",
        tiny_sd,
        "--control",
        f"{tiny_cn}:{control_map}:0.5",
        "--control",
        f"{tiny_cn}:{control_map}:1:0:0.5",
        "--control-preprocess",
        "canny",
        "--cfg-cutoff",
        "0.5",
        "--seed",
        "5",
        "-o",
        tmp_path / "a",
        *FAST,
    )
    assert r.exit_code == 0, r.stderr
    first = written(r)[0]
    info = Image.open(first).info
    record = json.loads(info["diffcli"])
    assert record["job"]["control"] == [f"{tiny_cn}:{control_map}:0.5:0.0:1.0", f"{tiny_cn}:{control_map}:1.0:0.0:0.5"]
    assert record["job"]["control_preprocess"] == "canny"
    assert [c["scale"] for c in record["model"]["controlnets"]] == [0.5, 1.0]
    assert (
        'ControlNet 1: "Module: canny, Model: tiny-cn, Weight: 1, Guidance Start: 0, Guidance End: 0.5"'
        in info["parameters"]
    )
    again = written(cli("txt2img", "--from", first, "-o", tmp_path / "b", "--quiet", "--no-server"))[0]
    assert np.array_equal(pixels(first), pixels(again))
    # a batch line is a Job: the same pixels
    (tmp_path / "jobs.jsonl").write_text(
        json.dumps(
            {
                "prompt": "castle",
                "model": str(tiny_sd),
                "seed": 5,
                "steps": 2,
                "dtype": "float32",
                "cfg_cutoff": 0.5,
                "control": record["job"]["control"],
                "control_preprocess": "canny",
            }
        )
        + "\n"
    )
    b = cli("batch", tmp_path / "jobs.jsonl", "-o", tmp_path / "c", "--quiet")
    assert b.exit_code == 0, b.stderr
    assert np.array_equal(pixels(first), pixels(written(b)[0]))


def test_edits_take_control(tiny_sd, tiny_cn, control_map, tmp_path):
    src = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(src)
    mask = tmp_path / "mask.png"
    Image.fromarray(np.tile((np.arange(32) >= 16).astype(np.uint8) * 255, (32, 1))).save(mask)
    control = ["--control", f"{tiny_cn}:{control_map}"]
    edit = ["img2img", src, "castle", "-m", tiny_sd, "--seed", "2", *FAST]
    with_control = written(cli(*edit, *control, "-o", tmp_path / "a"))[0]
    without = written(cli(*edit, "-o", tmp_path / "b"))[0]
    assert not np.array_equal(pixels(with_control), pixels(without))  # the control map changed the image
    r = cli(
        "inpaint", src, "castle", "-m", tiny_sd, "--mask", mask, "--seed", "2", *control, "-o", tmp_path / "c", *FAST
    )
    assert r.exit_code == 0, r.stderr
    inpainted = pixels(written(r)[0])
    assert np.array_equal(inpainted[:, :16], pixels(src)[:, :16])  # outside the mask: the input, exactly
    assert not np.array_equal(inpainted[:, 16:], pixels(src)[:, 16:])


def test_a_controlnet_in_the_hub_cache_is_listed_and_used_offline(
    tiny_sd, tiny_cn, control_map, tmp_path, isolated_home
):
    import shutil

    commit = "a" * 40
    repo = isolated_home / "hf" / "hub" / "models--org--tiny-cn"
    shutil.copytree(tiny_cn, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    listed = json.loads(cli("models", "list", "--json").stdout)
    assert {"name": "org/tiny-cn", "family": "controlnet"}.items() <= next(
        i for i in listed if i["name"] == "org/tiny-cn"
    ).items()
    r = cli(
        "txt2img",
        "castle",
        "-m",
        tiny_sd,
        "--control",
        f"org/tiny-cn:{control_map}",
        "--offline",
        "--seed",
        "1",
        "-o",
        tmp_path,
        *FAST,
    )
    assert r.exit_code == 0, r.stderr
    assert json.loads(Image.open(written(r)[0]).info["diffcli"])["job"]["control"][0].startswith("org/tiny-cn:")


def test_sdxl_takes_a_controlnet(tiny_sdxl, control_map, tmp_path):
    cn = tiny_models.build_controlnet(tmp_path / "cn-xl", tiny_sdxl)
    base = ["txt2img", "castle", "-m", tiny_sdxl, "--seed", "4", *FAST]
    with_control = cli(*base, "--control", f"{cn}:{control_map}", "-o", tmp_path / "a")
    assert with_control.exit_code == 0, with_control.stderr
    without = written(cli(*base, "-o", tmp_path / "b"))[0]
    assert not np.array_equal(pixels(written(with_control)[0]), pixels(without))


@pytest.fixture(scope="session")
def tiny_union(tiny_sdxl, tmp_path_factory) -> Path:
    return tiny_models.build_controlnet_union(tmp_path_factory.mktemp("models") / "tiny-union", tiny_sdxl)


def test_a_union_controlnet_takes_several_maps_in_one_call(tiny_sdxl, tiny_union, control_map, tmp_path):
    import torch
    from diffusers import ControlNetUnionModel, DPMSolverMultistepScheduler, StableDiffusionXLControlNetUnionPipeline

    disc = tmp_path / "disc.png"
    im = Image.new("RGB", (32, 32))
    ImageDraw.Draw(im).ellipse([4, 4, 28, 20], fill=(255, 255, 255))
    im.save(disc)
    base = ["txt2img", "castle", "-m", tiny_sdxl, "--seed", "6", "--cfg", "1", "--scheduler", "dpm++2m-karras", *FAST]
    r = cli(
        *base,
        "--control",
        f"{tiny_union}+canny:{control_map}",
        "--control",
        f"{tiny_union}+1:{disc}:0.5:0:0.5",
        "-o",
        tmp_path / "a",
    )
    assert r.exit_code == 0, r.stderr
    out = written(r)[0]
    # plain diffusers: one ControlNetUnionModel, both maps and their control types in one call
    pipe = StableDiffusionXLControlNetUnionPipeline.from_pretrained(
        str(tiny_sdxl), controlnet=ControlNetUnionModel.from_pretrained(str(tiny_union)), torch_dtype=torch.float32
    )
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config, use_karras_sigmas=True)
    maps = [Image.open(control_map).convert("RGB"), Image.open(disc).convert("RGB")]
    plain = pipe(
        "castle",
        control_image=maps,
        control_mode=[3, 1],
        controlnet_conditioning_scale=[1.0, 0.5],
        control_guidance_start=[0.0, 0.0],
        control_guidance_end=[1.0, 0.5],
        num_inference_steps=2,
        guidance_scale=1.0,
        generator=torch.Generator("cpu").manual_seed(6),
        width=32,
        height=32,
    ).images[0]
    assert np.array_equal(pixels(out), np.asarray(plain, dtype=np.int16))
    without = written(cli(*base, "-o", tmp_path / "b"))[0]
    assert not np.array_equal(pixels(out), pixels(without))  # the maps changed the image
    # recorded with its control types, replayed by --from
    info = Image.open(out).info
    assert json.loads(info["diffcli"])["job"]["control"][1] == f"{tiny_union}+1:{disc}:0.5:0.0:0.5"
    assert "Union Control Type: canny" in info["parameters"]
    again = written(cli("txt2img", "--from", out, "-o", tmp_path / "c", "--quiet", "--no-server"))[0]
    assert np.array_equal(pixels(again), pixels(out))


@pytest.mark.parametrize(
    "control, model, message",
    [
        ("UNION:MAP", "XL", "needs the control type"),
        ("UNION+canny:MAP", "SD", "SDXL models only"),
        ("UNION+7:MAP", "XL", "not one of this union ControlNet's 6"),
        ("CN+canny:MAP", "SD", "a control type is for a union ControlNet"),
    ],
)
def test_bad_union_controls_are_usage_errors(
    tiny_sd, tiny_sdxl, tiny_union, tiny_cn, control_map, control, model, message
):
    spec = control.replace("UNION", str(tiny_union)).replace("CN", str(tiny_cn)).replace("MAP", str(control_map))
    r = cli("txt2img", "castle", "-m", tiny_sdxl if model == "XL" else tiny_sd, "--control", spec, *FAST)
    assert r.exit_code == 2, r.stderr
    assert r.stderr.startswith("diffcli: error: ") and r.stderr.count("\n") == 1 and message in r.stderr, r.stderr


def test_a_single_file_controlnet_in_the_original_layout_loads_offline(
    tiny_sd, tiny_sdxl, tiny_cn, control_map, tmp_path, monkeypatch
):
    # lllyasviel/A1111 keys (control_model.input_hint_block.N, zero_convs.N.0, ...): diffusers would fetch a
    # config from the hub for it; diffcli makes one from the base UNet and the file's header instead
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    single = tiny_models.controlnet_to_single_file(tiny_cn, tmp_path / "cn-original.safetensors")
    base = ["txt2img", "castle", "-m", tiny_sd, "--seed", "8", *FAST]
    r = cli(*base, "--control", f"{single}:{control_map}:0.8", "-o", tmp_path / "a")
    assert r.exit_code == 0, r.stderr
    folder = written(cli(*base, "--control", f"{tiny_cn}:{control_map}:0.8", "-o", tmp_path / "b"))[0]
    assert np.array_equal(pixels(written(r)[0]), pixels(folder))  # the same weights, the same pixels
    wrong = cli("txt2img", "castle", "-m", tiny_sdxl, "--control", f"{single}:{control_map}", *FAST)
    assert wrong.exit_code == 2 and "made for another model family" in wrong.stderr, wrong.stderr


def test_a_union_controlnet_refuses_an_inpainting_unet(tiny_sdxl, tiny_union, control_map, tmp_path):
    # diffusers' union inpaint pipeline takes 4-channel UNets only: refused before any weights load (this
    # folder's UNet config says 9 channels, as SDXL inpainting 0.1's does)
    import shutil

    inpainting = tmp_path / "xl-inpaint"
    shutil.copytree(tiny_sdxl, inpainting)
    unet = json.loads((inpainting / "unet" / "config.json").read_text())
    (inpainting / "unet" / "config.json").write_text(json.dumps({**unet, "in_channels": 9}))
    r = cli(
        "outpaint",
        control_map,
        "--extend",
        "8",
        "-m",
        inpainting,
        "--control",
        f"{tiny_union}+canny:{control_map}",
        *FAST,
    )
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and "4-channel" in r.stderr, r.stderr
