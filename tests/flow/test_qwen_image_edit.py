"""Qwen-Image-Edit and its multi-image Plus releases (2509, 2511) under `diffcli edit` (issue 28): recognised as
variants of Qwen-Image with their defaults and made for editing only (on every machine: their model_index.json
names the pipeline); and, where torchvision is installed (transformers builds their Qwen2-VL processor only
then), each edit the pixels of the family's own pipeline, with two reference images, through the command and a
batch line (the resident server: tests/serve/test_serve_edit.py)."""

from __future__ import annotations

import importlib.util
import json
import shutil

import numpy as np
import pytest
from PIL import Image
from tiny_edit_models import QWEN_EDIT_GUIDANCE, noise_image, plain_edit

from helpers import cli, pixels, written

FAST = ["--steps", "2", "--dtype", "float32", "--quiet", "--no-server"]


def _renamed(model, path, pipeline_class):
    """MODEL's folder with model_index.json naming PIPELINE_CLASS (enough to recognise the family: no load)."""
    shutil.copytree(model, path)
    index = json.loads((path / "model_index.json").read_text())
    (path / "model_index.json").write_text(json.dumps({**index, "_class_name": pipeline_class}, indent=2))
    return path


@pytest.mark.parametrize(
    "pipeline_class, family, steps",
    [("QwenImageEditPipeline", "qwen-image-edit", 50), ("QwenImageEditPlusPipeline", "qwen-image-edit-plus", 40)],
)
def test_recognised_as_edit_models_of_qwen_image(tiny_qwen_image, tmp_path, pipeline_class, family, steps):
    from diffcli.models.layout import read_layout

    model = _renamed(tiny_qwen_image, tmp_path / "m", pipeline_class)
    layout = read_layout(model)
    assert layout.settings_family == family
    assert layout.recommended()["steps"] == steps and layout.recommended()["cfg"] == 4.0
    source = noise_image(tmp_path / "in.png", (32, 32))
    r = cli("img2img", source, "x", "-m", model, "-o", tmp_path / "o", *FAST)  # made for editing only
    assert r.exit_code == 2 and "edit" in r.stderr, r.stderr
    if family == "qwen-image-edit":  # one input image: no references
        r = cli("edit", source, "x", "-m", model, "-r", source, "-o", tmp_path / "o", *FAST)
        assert r.exit_code == 2 and "reference" in r.stderr, r.stderr
    else:  # the input and at most two references
        refs = [a for _ in range(3) for a in ("-r", str(source))]
        r = cli("edit", source, "x", "-m", model, *refs, "-o", tmp_path / "o", *FAST)
        assert r.exit_code == 2 and "at most 2 reference image(s)" in r.stderr, r.stderr
    if importlib.util.find_spec("torchvision") is None:  # its processor cannot be built: one line, exit 1
        r = cli("edit", source, "x", "-m", model, "-o", tmp_path / "o", *FAST)
        assert r.exit_code == 1 and "need torchvision" in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert not (tmp_path / "o").exists()


def test_the_aliases_name_the_public_checkpoints():
    from diffcli import families

    aliases = families.aliases()
    assert aliases["qwen-image-edit"].repo_id == "Qwen/Qwen-Image-Edit"
    assert aliases["qwen-image-edit-2509"].family == aliases["qwen-image-edit-2511"].family == "qwen-image-edit-plus"


@pytest.fixture(scope="module")
def edit_plus(tmp_path_factory):
    pytest.importorskip("torchvision", reason="transformers builds the Qwen2-VL processor only with torchvision")
    import tiny_edit_models

    return tiny_edit_models.build_qwen_image_edit(tmp_path_factory.mktemp("models") / "tiny-qwen-edit-plus")


def test_an_edit_with_two_references_is_plain_diffusers(edit_plus, tmp_path):
    source = noise_image(tmp_path / "in.png", (48, 32), seed=0)
    refs = [noise_image(tmp_path / f"ref{i}.png", (32, 32), seed=i) for i in (1, 2)]
    args = ["--seed", "4", "-o", tmp_path / "cli", *FAST]
    r = cli("edit", source, "put them together", "-m", edit_plus, "-r", refs[0], "-r", refs[1], *args)
    assert r.exit_code == 0, r.stderr
    made = written(r)[0]
    assert Image.open(made).size == (48, 32)
    plain = plain_edit(edit_plus, [source, *refs], "put them together", 4, (48, 32), **QWEN_EDIT_GUIDANCE)
    assert np.array_equal(pixels(made), plain)
    alone = plain_edit(edit_plus, [source], "put them together", 4, (48, 32), **QWEN_EDIT_GUIDANCE)
    assert not np.array_equal(plain, alone)  # the references took part
    line = {"task": "edit", "image": str(source), "prompt": "put them together", "references": [str(p) for p in refs]}
    (tmp_path / "jobs.jsonl").write_text(json.dumps(line) + "\n")
    b = cli("batch", tmp_path / "jobs.jsonl", "-m", edit_plus, "--seed", "4", "-o", tmp_path / "batch", *FAST[:-1])
    assert b.exit_code == 0, b.stderr
    assert np.array_equal(pixels(written(b)[0]), plain)


def test_qwen_image_edit_is_plain_diffusers(tmp_path):
    pytest.importorskip("torchvision", reason="transformers builds the Qwen2-VL processor only with torchvision")
    import tiny_edit_models

    model = tiny_edit_models.build_qwen_image_edit(tmp_path / "tiny-qwen-edit", plus=False)
    source = noise_image(tmp_path / "in.png", (32, 48), seed=0)
    r = cli("edit", source, "make it red", "-m", model, "--seed", "5", "-o", tmp_path / "cli", *FAST)
    assert r.exit_code == 0, r.stderr
    assert np.array_equal(
        pixels(written(r)[0]), plain_edit(model, [source], "make it red", 5, (32, 48), **QWEN_EDIT_GUIDANCE)
    )
