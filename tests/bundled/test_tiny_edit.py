"""The bundled InstructPix2Pix model `tiny-edit`: plain diffusers loads it, `diffcli edit` uses it when no model
is named (the pixels of plain diffusers), and its recipe's training pairs change exactly one attribute."""

import json
import random
from dataclasses import fields

import numpy as np
import pytest

from diffcli.bundled import model_dir, scenes

from tests.helpers import cli, pixels, written

torch = pytest.importorskip("torch")
EDIT = model_dir("tiny-edit")
shipped = pytest.mark.skipif(not (EDIT / "model_index.json").is_file(), reason="tiny-edit is not installed")


@shipped
def test_plain_diffusers_loads_it():
    from diffusers import StableDiffusionInstructPix2PixPipeline
    from safetensors import safe_open

    assert (
        json.loads((EDIT / "model_index.json").read_text())["_class_name"] == "StableDiffusionInstructPix2PixPipeline"
    )
    assert sum(p.stat().st_size for p in EDIT.rglob("*") if p.is_file()) <= 20 * 2**20
    with safe_open(str(EDIT / "unet/diffusion_pytorch_model.safetensors"), "pt") as st:
        assert {st.get_tensor(k).dtype for k in st.keys()} == {torch.float16}
    pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(str(EDIT))
    assert pipe.unet.config.in_channels == 8 and pipe.unet.dtype == pipe.text_encoder.dtype == torch.float32
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    pipe.set_progress_bar_config(disable=True)
    image = scenes.render(scenes.sample_scene(1), 64)
    out = pipe("make it night", image=image, num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    assert out.images[0].size == (64, 64)


@shipped
def test_edit_without_a_model_uses_tiny_edit_as_plain_diffusers_does(tmp_path):
    from diffusers import StableDiffusionInstructPix2PixPipeline

    source = tmp_path / "scene.png"
    scenes.render(scenes.sample_scene(random.Random(5), time="day"), 64).save(source)
    flags = ("--seed", "3", "--steps", "2", "--dtype", "float32", "--no-server", "-o", tmp_path)
    r = cli("edit", source, "make it night", *flags)  # no -m, no $DIFFCLI_MODEL (conftest)
    assert r.exit_code == 0 and "does not know" not in r.stderr and "understood no" not in r.stderr, r.stderr
    (made,) = written(r)
    from PIL import Image

    with Image.open(made) as img:
        record = json.loads(img.info["diffcli"])
    own = json.loads((EDIT / "diffcli.json").read_text())
    job = record["job"]
    assert record["model"]["name"] == "tiny-edit"
    assert (job["cfg"], job["image_cfg"], job["scheduler"]) == (own["cfg"], own["image_cfg"], own["scheduler"])
    pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(str(EDIT))  # float32, as the CLI was asked
    pipe.set_progress_bar_config(disable=True)
    with Image.open(source) as img:
        plain = pipe(
            "make it night",
            image=img.convert("RGB"),
            num_inference_steps=2,
            guidance_scale=own["cfg"],
            image_guidance_scale=own["image_cfg"],
            generator=torch.Generator("cpu").manual_seed(3),
        ).images[0]
    assert np.array_equal(pixels(made), np.asarray(plain, dtype=np.int16))


def test_the_recipe_pairs_change_exactly_one_attribute():
    from diffcli.bundled.vocab import unknown_words
    from diffcli.bundled.words import EDIT_WORDS
    from diffcli.training.edit import EDIT_ATTRS, HELD_OUT, TEMPLATES, edit_pair, instruction

    rng = random.Random(0)
    seen = set()
    variation = [f.name for f in fields(scenes.Scene) if f.name not in scenes.ATTRIBUTES]
    for _ in range(300):
        src, dst, attr, new = edit_pair(rng)
        seen.add(attr)
        changed = [a for a in scenes.ATTRIBUTES if getattr(src, a) != getattr(dst, a)]
        assert changed == [attr] and getattr(dst, attr) == new
        assert all(getattr(src, v) == getattr(dst, v) for v in variation)  # the same seed and jitter
        for held_out in (False, True):
            text = instruction(attr, new, src, rng, held_out=held_out)
            named = {scenes.WORD_TO_ATTR[w] for w in text.split() if w in scenes.WORD_TO_ATTR}
            assert (attr, new) in named, text  # the new value is named in the tokenizer's own words
            assert named <= {(attr, new), ("obj", src.obj)}, text  # and nothing else but the input's object
            assert set(unknown_words(text)) <= set(EDIT_WORDS), text  # what `diffcli edit` does not warn about
    assert seen == set(EDIT_ATTRS)
    for attr in EDIT_ATTRS:  # the bench's phrasings are never trained on
        assert HELD_OUT[attr] and set(TEMPLATES[attr]) - HELD_OUT[attr]
    # the same scene and a changed attribute render differently, and only around the object for a colour
    src, dst, _, _ = edit_pair(random.Random(3), "color")
    a, b = (np.asarray(scenes.render(s, 64), np.int16) for s in (src, dst))
    from scipy.ndimage import binary_dilation

    mask = binary_dilation(scenes.object_mask(src, 64) > 0, iterations=2)  # LANCZOS rings a pixel or two out
    assert np.abs(a - b).max(axis=2)[~mask].max() <= 8 and np.abs(a - b)[mask].max() > 30
