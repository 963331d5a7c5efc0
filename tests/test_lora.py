"""--lora FILE|NAME[:WEIGHT] and <lora:NAME:W>: unfused adapters per job on the cached pipeline, recorded, replayed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import lora_files
from helpers import cli, pixels, written

FAST = ("--steps", "1", "--cfg", "1", "--scheduler", "euler", "--dtype", "float32", "--seed", "3", "--quiet")


@pytest.fixture(scope="session")
def loras(tiny_sd, tmp_path_factory):
    """Two LoRAs for tiny_sd: A in peft keys (UNet), B in kohya keys (UNet and text encoder)."""
    d = tmp_path_factory.mktemp("loras")
    a = lora_files.build_peft_lora(tiny_sd, d / "style_a.safetensors", seed=1, keys="peft")
    b_diffusers = lora_files.build_peft_lora(tiny_sd, d / "b_diffusers.safetensors", seed=2, text_encoder=True)
    b = lora_files.to_kohya(b_diffusers, d / "style_b.safetensors")
    return a, b


def _plain(tiny_sd, sets: list[list[tuple[Path, float]]]):
    """What a plain diffusers script makes with load_lora_weights + set_adapters at the same weights,
    for each set of (file, weight)."""
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_sd), dtype=torch.float32)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config, use_karras_sigmas=False)
    names = {}
    for files in sets:
        for path, _ in files:
            if path not in names:
                names[path] = f"l{len(names)}"
                pipe.load_lora_weights(str(path), adapter_name=names[path])
    images = []
    for files in sets:
        pipe.set_adapters([names[p] for p, _ in files], adapter_weights=[w for _, w in files])
        image = pipe(
            "castle at dusk",
            num_inference_steps=1,
            guidance_scale=1.0,
            generator=torch.Generator("cpu").manual_seed(3),
            width=32,
            height=32,
        ).images[0]
        images.append(np.asarray(image, dtype=np.int16))
    return images


def test_two_loras_match_plain_diffusers_and_switch_per_job(tiny_sd, loras, tmp_path):
    """A peft-format and a kohya-format file at once give diffusers' pixels; in one process (one cached
    pipeline) the jobs before and after get the base's exact pixels, and each set its own."""
    a, b = loras
    jobs = [
        {"prompt": "castle at dusk"},
        {"prompt": "castle at dusk", "lora": [f"{a}:0.8", f"{b}:0.6"]},
        {"prompt": "castle at dusk", "lora": [f"{a}:0.8"]},
        {"prompt": "castle at dusk"},
        {"prompt": "castle at dusk", "lora": [f"{b}:0.6", f"{a}:0.8"]},
    ]
    lines = tmp_path / "jobs.jsonl"
    lines.write_text("".join(json.dumps(j) + "\n" for j in jobs))
    r = cli("batch", lines, "-m", tiny_sd, "-o", tmp_path / "out", *FAST)
    assert r.exit_code == 0, r.stderr
    base, both, only_a, base_again, both_again = (pixels(p) for p in written(r))
    assert np.array_equal(base, base_again)  # no LoRA: the base's own pixels, after adapters were active
    assert not np.array_equal(base, both) and not np.array_equal(both, only_a)
    assert np.array_equal(both, both_again)  # the same set again (other order) gives the same image
    plain_both, plain_a = _plain(tiny_sd, [[(a, 0.8), (b, 0.6)], [(a, 0.8)]])
    assert np.array_equal(both, plain_both)
    assert np.array_equal(only_a, plain_a)

    info = Image.open(written(r)[1]).info
    record = json.loads(info["diffcli"])
    assert [(x["name"], x["weight"]) for x in record["model"]["loras"]] == [("style_a", 0.8), ("style_b", 0.6)]
    from diffcli.models.hashing import sha256_file

    assert f'Lora hashes: "style_a: {sha256_file(a)[:12]}, style_b: {sha256_file(b)[:12]}"' in info["parameters"]


def test_prompt_tag_from_the_lora_folder_and_replay(tiny_sd, loras, tmp_path, monkeypatch):
    """<lora:NAME:W> is found in DIFFCLI_LORA_DIR and taken out of the prompt; --from finds the file again
    by name after it moved within the folder, by hash after a rename, and refuses when it is gone."""
    a, _ = loras
    folder = tmp_path / "lora-dir"
    folder.mkdir()
    shutil.copy(a, folder / "mine.safetensors")
    monkeypatch.setenv("DIFFCLI_LORA_DIR", str(folder))
    r = cli("txt2img", "castle at dusk <lora:mine:0.8>", "-m", tiny_sd, "-o", tmp_path / "o1", *FAST)
    assert r.exit_code == 0, r.stderr
    made = written(r)[0]
    job = json.loads(Image.open(made).info["diffcli"])["job"]
    assert job["prompt"] == "castle at dusk" and job["lora"] == [f"{folder / 'mine.safetensors'}:0.8"]
    assert "castle at dusk <lora:mine:0.8>" in Image.open(made).info["parameters"]

    (folder / "sub").mkdir()
    (folder / "mine.safetensors").rename(folder / "sub" / "mine.safetensors")
    again = cli("txt2img", "--from", made, "-o", tmp_path / "o3", "--quiet")
    assert again.exit_code == 0, again.stderr
    assert np.array_equal(pixels(made), pixels(written(again)[0]))
    (folder / "sub" / "mine.safetensors").rename(folder / "renamed.safetensors")
    by_hash = cli("txt2img", "--from", made, "-o", tmp_path / "o4", "--quiet")
    assert by_hash.exit_code == 0, by_hash.stderr
    assert np.array_equal(pixels(made), pixels(written(by_hash)[0]))
    (folder / "renamed.safetensors").unlink()
    gone = cli("txt2img", "--from", made, "-o", tmp_path / "o5", "--quiet")
    assert gone.exit_code == 2 and gone.stderr.count("\n") == 1
    assert "not found" in gone.stderr and "never fetches" in gone.stderr


@pytest.mark.parametrize(
    "lora, expected",
    [
        ("nowhere", "LoRA 'nowhere' not found"),
        ("x.safetensors:inf", "finite"),
        (":0.5", "name a LoRA file"),
    ],
)
def test_bad_lora_is_a_usage_error(tiny_sd, tmp_path, lora, expected):
    r = cli("txt2img", "castle", "--lora", lora, "-m", tiny_sd, "-o", tmp_path, "--quiet")
    assert r.exit_code == 2
    assert r.stderr.startswith("diffcli: error:") and expected in r.stderr and r.stderr.count("\n") == 1


def test_a_lora_that_does_not_fit_is_a_runtime_failure(tiny_sdxl, loras, tmp_path):
    """An SD1 LoRA on an SDXL model: one error line, and the model works without it afterwards."""
    a, _ = loras
    r = cli("txt2img", "castle", "--lora", a, "-m", tiny_sdxl, "-o", tmp_path, *FAST)
    assert r.exit_code == 1 and "does not fit" in r.stderr and r.stderr.count("\n") == 1
    ok = cli("txt2img", "castle", "-m", tiny_sdxl, "-o", tmp_path, *FAST)
    assert ok.exit_code == 0, ok.stderr
