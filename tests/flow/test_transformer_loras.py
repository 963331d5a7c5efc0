"""--lora on every transformer family (SD 3.x, FLUX.1, FLUX.2 [klein], Chroma, Z-Image, Qwen-Image): a LoRA file
of the family's transformer, saved as diffusers' trainers save it, gives the pixels of a plain diffusers script
that loads it with load_lora_weights + set_adapters at the same weight; the next job without it, in the same
process, gets the base model's own pixels again."""

from __future__ import annotations

import json

import numpy as np
import pytest

import lora_files
from helpers import cli, pixels, written

# fixture -> (the CLI's guidance arguments, the same guidance for the plain pipeline call): guidance off where
# the family has a switch for it, so the test is about the LoRA
FAMILIES = {
    "tiny_sd3": (["--cfg", "1"], {"guidance_scale": 1.0}),
    "tiny_flux": (["--cfg", "1"], {"guidance_scale": 1.0}),
    "tiny_flux2_klein": ([], {"guidance_scale": 0.0}),
    "tiny_chroma": (["--cfg", "1"], {"guidance_scale": 1.0}),
    "tiny_zimage": (["--cfg", "1"], {"guidance_scale": 1.0}),
    "tiny_qwen_image": (["--cfg", "1"], {"true_cfg_scale": 1.0, "negative_prompt": " "}),
}


def _plain(model, lora, weight, guidance):
    """The images (with the LoRA at WEIGHT, without it) of a plain diffusers script."""
    import torch
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(str(model), torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(str(lora), adapter_name="style")
    images = []
    for active in (True, False):
        if active:
            pipe.set_adapters(["style"], adapter_weights=[weight])
        else:
            pipe.disable_lora()
        image = pipe(
            prompt="castle at dusk",
            num_inference_steps=2,
            width=32,
            height=32,
            generator=torch.Generator("cpu").manual_seed(5),
            **guidance,
        ).images[0]
        images.append(np.asarray(image, dtype=np.int16))
    return images


@pytest.mark.parametrize("fixture", list(FAMILIES))
def test_a_transformer_lora_is_plain_diffusers_and_leaves_no_trace(fixture, request, tmp_path):
    model = request.getfixturevalue(fixture)
    lora = lora_files.build_transformer_lora(model, tmp_path / "style.safetensors", seed=3)
    args, guidance = FAMILIES[fixture]
    jobs = [{"prompt": "castle at dusk", "lora": [f"{lora}:0.8"]}, {"prompt": "castle at dusk"}]
    lines = tmp_path / "jobs.jsonl"
    lines.write_text("".join(json.dumps(j) + "\n" for j in jobs))
    r = cli(
        "batch", lines, "-m", model, "--seed", "5", "--steps", "2", *args, "-o", tmp_path / "out",
        "--dtype", "float32", "--quiet", "-W", "32", "-H", "32",
    )  # fmt: skip
    assert r.exit_code == 0, r.stderr
    with_lora, without = (pixels(p) for p in written(r))
    plain_with, plain_without = _plain(model, lora, 0.8, guidance)
    assert not np.array_equal(plain_with, plain_without)  # the LoRA changes the image
    assert np.array_equal(with_lora, plain_with)
    assert np.array_equal(without, plain_without)
