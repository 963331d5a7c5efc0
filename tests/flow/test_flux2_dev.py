"""FLUX.2 [dev] (issues 28, 29): recognised with its defaults, img2img refused (on every machine: its
model_index.json names the pipeline); and, where torchvision is installed (transformers builds its Pixtral
processor only then), txt2img and an edit with two reference images the pixels of Flux2Pipeline, through the
command and a batch line."""

from __future__ import annotations

import importlib.util
import json
import shutil

import numpy as np
import pytest
from tiny_edit_models import noise_image, plain_edit

from helpers import cli, pixels, written

FAST = ["--steps", "2", "--dtype", "float32", "--quiet", "--no-server"]


def test_recognised_with_its_defaults_and_no_img2img(tiny_flux2_klein, tmp_path):
    from diffcli.models.layout import read_layout

    model = tmp_path / "dev"
    shutil.copytree(tiny_flux2_klein, model)
    index = json.loads((model / "model_index.json").read_text())
    (model / "model_index.json").write_text(json.dumps({**index, "_class_name": "Flux2Pipeline"}, indent=2))
    layout = read_layout(model)
    assert layout.family == "flux2-dev" and layout.is_flow
    assert layout.recommended()["steps"] == 50 and layout.recommended()["cfg"] == 4.0
    source = noise_image(tmp_path / "in.png", (64, 64))
    r = cli("img2img", source, "x", "-m", model, "-o", tmp_path / "o", *FAST)
    assert r.exit_code == 2 and "no img2img pipeline" in r.stderr, r.stderr
    if importlib.util.find_spec("torchvision") is None:  # its processor cannot be built: one line, exit 1
        r = cli("txt2img", "x", "-m", model, "-o", tmp_path / "o", *FAST)
        assert r.exit_code == 1 and "need torchvision" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_its_transformer_files_are_known_by_the_guidance_embedding(tmp_path):
    """FLUX.2 files with a guidance embedding (BFL's `guidance_in.*`, diffusers' `time_guidance_embed.guidance_
    embedder.*`) are [dev]'s; without one, [klein]'s. The header is all detection reads."""
    import torch
    from safetensors.torch import save_file

    from diffcli.models.checkpoint_info import detect_family

    cases = {
        ("single_stream_modulation.lin.weight", "guidance_in.in_layer.weight"): "flux2-dev",
        (
            "single_stream_modulation.linear.weight",
            "time_guidance_embed.guidance_embedder.linear_1.weight",
        ): "flux2-dev",
        ("single_stream_modulation.lin.weight", "time_in.in_layer.weight"): "flux2-klein",
    }
    for names, family in cases.items():
        save_file({n: torch.zeros(2) for n in names}, tmp_path / "t.safetensors")
        assert detect_family(tmp_path / "t.safetensors") == family, names


@pytest.fixture(scope="module")
def tiny_flux2_dev(tmp_path_factory):
    pytest.importorskip("torchvision", reason="transformers builds the Pixtral processor only with torchvision")
    import tiny_flow_models

    return tiny_flow_models.build_flux2_dev(tmp_path_factory.mktemp("models") / "tiny-flux2-dev")


def test_txt2img_and_an_edit_with_references_are_plain_diffusers(tiny_flux2_dev, tmp_path):
    r = cli("txt2img", "castle", "-m", tiny_flux2_dev, "--seed", "2", "-W", "32", "-H", "32", "-o", tmp_path, *FAST)
    assert r.exit_code == 0, r.stderr
    assert np.array_equal(
        pixels(written(r)[0]), plain_edit(tiny_flux2_dev, [], "castle", 2, (32, 32), guidance_scale=4.0)
    )
    source = noise_image(tmp_path / "in.png", (64, 64), seed=0)
    refs = [noise_image(tmp_path / f"ref{i}.png", (64, 64), seed=i) for i in (1, 2)]
    e = cli(
        "edit", source, "make it red", "-m", tiny_flux2_dev, "-r", refs[0], "-r", refs[1], "--seed", "3",
        "-o", tmp_path / "edit", *FAST,
    )  # fmt: skip
    assert e.exit_code == 0, e.stderr
    plain = plain_edit(tiny_flux2_dev, [source, *refs], "make it red", 3, (64, 64), guidance_scale=4.0)
    assert np.array_equal(pixels(written(e)[0]), plain)
    line = {"task": "edit", "image": str(source), "prompt": "make it red", "references": [str(p) for p in refs]}
    (tmp_path / "jobs.jsonl").write_text(json.dumps(line) + "\n")
    b = cli("batch", tmp_path / "jobs.jsonl", "-m", tiny_flux2_dev, "--seed", "3", "-o", tmp_path / "b", *FAST[:-1])
    assert b.exit_code == 0, b.stderr
    assert np.array_equal(pixels(written(b)[0]), plain)


def test_a_transformer_file_runs_with_its_base(tiny_flux2_dev, tmp_path):
    """Its transformer as one .safetensors (diffusers' layout) with --base draws what Flux2Pipeline draws with it."""
    import torch
    from diffusers import Flux2Pipeline, Flux2Transformer2DModel

    from diffcli.models.checkpoint_info import detect_family

    from tiny_flow_models import write_transformer_files

    files = write_transformer_files(tiny_flux2_dev, tmp_path / "files")
    assert detect_family(files["safetensors"]) == "flux2-dev"
    args = ["castle", "-m", files["safetensors"], "--base", tiny_flux2_dev, "-W", "32", "-H", "32", "--seed", "4"]
    r = cli("txt2img", *args, "-o", tmp_path / "o", *FAST)
    assert r.exit_code == 0, r.stderr
    transformer = Flux2Transformer2DModel.from_pretrained(files["folder"], torch_dtype=torch.float32)
    pipe = Flux2Pipeline.from_pretrained(str(tiny_flux2_dev), transformer=transformer, torch_dtype=torch.float32)
    generator = torch.Generator("cpu").manual_seed(4)
    plain = pipe(prompt="castle", width=32, height=32, num_inference_steps=2, guidance_scale=4.0, generator=generator)
    assert np.array_equal(pixels(written(r)[0]), np.asarray(plain.images[0], dtype=np.int16))
