"""Every model folder shipped in the package loads and runs in plain diffusers the way users load any
model: default arguments, `torch_dtype=torch.float32` and `torch_dtype=torch.float16`.

Only diffusers is used here (diffcli just says where the folders are): these are the calls a user of
another diffusers tool makes on `diffcli/bundled/<name>`.
"""

import json

import numpy as np
import pytest

from diffcli.bundled import MODEL_DIR

HERE = MODEL_DIR.parent  # diffcli/bundled
torch = pytest.importorskip("torch")

PIPELINES = ["tiny", "tiny-lcm"]  # StableDiffusionPipeline folders
EDIT_PIPELINES = ["tiny-edit"]  # StableDiffusionInstructPix2PixPipeline folders
MODELS = {"tiny-ae": "AutoencoderTiny"}  # single-model folders: the class their config names
CONTROLNETS = ["tiny-control-seg"]  # ControlNetModel folders for the bundled model
FLUX_PIPELINES = ["tiny-flux"]  # FluxPipeline folders (tests/bundled/test_tiny_flux.py)
LOADS = {  # how a user loads it -> the dtype every module must then have
    "default": ({}, torch.float32),
    "float32": ({"torch_dtype": torch.float32}, torch.float32),
    "float16": ({"torch_dtype": torch.float16}, torch.float16),
}


def _shipped() -> set[str]:
    """Every folder of the package written by diffusers (a model_index.json or a diffusers config.json)."""
    names = set()
    for d in HERE.iterdir():
        if (d / "model_index.json").is_file():
            names.add(d.name)
        elif (d / "config.json").is_file() and "_diffusers_version" in json.loads((d / "config.json").read_text()):
            names.add(d.name)
    return names


def test_every_shipped_model_folder_is_checked_here():
    assert _shipped() == set(PIPELINES) | set(EDIT_PIPELINES) | set(MODELS) | set(CONTROLNETS) | set(FLUX_PIPELINES)


def _modules(pipe) -> dict:
    return {name: m.dtype for name, m in pipe.components.items() if isinstance(m, torch.nn.Module)}


@pytest.mark.parametrize("load", list(LOADS))
@pytest.mark.parametrize("name", PIPELINES)
def test_pipeline_folder_loads_and_runs_in_plain_diffusers(name, load):
    from diffusers import DiffusionPipeline

    kwargs, dtype = LOADS[load]
    pipe = DiffusionPipeline.from_pretrained(str(HERE / name), **kwargs)
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    dtypes = _modules(pipe)
    assert set(dtypes) == {"text_encoder", "unet", "vae"} and set(dtypes.values()) == {dtype}, dtypes
    pipe.set_progress_bar_config(disable=True)
    # fp16 on a CPU runs here (recent torch has CPU kernels for every op this small model uses)
    out = pipe(
        "a red house on the left at night",
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images
    assert out.shape == (1, 64, 64, 3) and np.isfinite(out).all()
    assert out.std() > 0.02  # not a blank image


@pytest.mark.parametrize("load", list(LOADS))
@pytest.mark.parametrize("name", EDIT_PIPELINES)
def test_edit_folder_loads_and_runs_in_plain_diffusers(name, load):
    from diffusers import DiffusionPipeline

    from diffcli.bundled import scenes

    kwargs, dtype = LOADS[load]
    pipe = DiffusionPipeline.from_pretrained(str(HERE / name), **kwargs)
    assert type(pipe).__name__ == "StableDiffusionInstructPix2PixPipeline"
    dtypes = _modules(pipe)
    assert set(dtypes) == {"text_encoder", "unet", "vae"} and set(dtypes.values()) == {dtype}, dtypes
    pipe.set_progress_bar_config(disable=True)
    image = scenes.render(scenes.sample_scene(2), 64)  # the input (a PIL image; scenes only draws it)
    gen = torch.Generator().manual_seed(0)
    out = pipe("make it night", image=image, num_inference_steps=2, generator=gen, output_type="np").images
    assert out.shape == (1, 64, 64, 3) and np.isfinite(out).all() and out.std() > 0.02


@pytest.mark.parametrize("name", PIPELINES)
def test_float16_draws_what_float32_draws(name):
    from diffusers import DiffusionPipeline

    images = []
    for dtype in (torch.float32, torch.float16):
        pipe = DiffusionPipeline.from_pretrained(str(HERE / name), torch_dtype=dtype)
        pipe.set_progress_bar_config(disable=True)
        images.append(
            pipe(
                "a castle at dusk", num_inference_steps=2, generator=torch.Generator().manual_seed(1), output_type="np"
            ).images
        )
    assert np.abs(images[0] - images[1]).mean() < 0.01


@pytest.mark.parametrize("load", list(LOADS))
@pytest.mark.parametrize("name", list(MODELS))
def test_model_folder_loads_with_its_class_and_round_trips(name, load):
    import diffusers

    kwargs, dtype = LOADS[load]
    cls = getattr(diffusers, MODELS[name])
    assert json.loads((HERE / name / "config.json").read_text())["_class_name"] == cls.__name__
    ae = cls.from_pretrained(str(HERE / name), **kwargs).eval()
    assert {p.dtype for p in ae.parameters()} == {dtype}
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0), dtype=dtype) * 2 - 1
    with torch.no_grad():
        latents = ae.encode(x).latents
        y = ae.decode(latents).sample
    assert latents.shape == (1, 4, 16, 16) and y.shape == x.shape
    assert y.dtype == dtype and torch.isfinite(y).all()


def test_an_exported_fp16_pipeline_loads_with_default_arguments(tmp_path):
    """The export used to ship the bundled model keeps fp16 weights but records float32 as the text
    encoder's load dtype, as diffusers loads its own components."""
    from diffusers import DiffusionPipeline
    from safetensors import safe_open

    from diffcli.bundled.vocab import build_tokenizer
    from diffcli.training import arch
    from diffcli.training.export import export_pipeline

    torch.manual_seed(0)
    out = export_pipeline(
        tmp_path / "m",
        arch.make_vae("tiny"),
        arch.make_text_encoder("tiny"),
        arch.make_unet("tiny"),
        build_tokenizer(tmp_path / "tok"),
        arch.make_scheduler(),
    )
    with safe_open(str(out / "text_encoder" / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
    pipe = DiffusionPipeline.from_pretrained(str(out))
    assert set(_modules(pipe).values()) == {torch.float32}
    pipe.set_progress_bar_config(disable=True)
    images = pipe("a house", num_inference_steps=1, output_type="np").images
    assert np.isfinite(images).all()


@pytest.mark.parametrize("name", CONTROLNETS)
def test_controlnet_folder_gives_diffcli_pixels_in_plain_diffusers(name, tmp_path):
    """StableDiffusionControlNetPipeline with the shipped ControlNet draws what `diffcli txt2img --control`
    draws (guidance on every step, as plain diffusers guides)."""
    import random

    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline
    from PIL import Image

    from diffcli.bundled import scenes

    from helpers import cli, pixels, written

    scene = scenes.sample_scene(random.Random(5), obj="house", position="left")
    scenes.control_map(scene).save(tmp_path / "map.png")
    r = cli(
        "txt2img",
        "a red house at night",
        "--control",
        f"{name}:{tmp_path / 'map.png'}",
        "--cfg-cutoff",
        "0",
        "--steps",
        "4",
        "--seed",
        "3",
        "--dtype",
        "float32",
        "--no-server",
        "--quiet",
        "-o",
        tmp_path / "out",
    )
    assert r.exit_code == 0, r.stderr
    cn = ControlNetModel.from_pretrained(str(HERE / name))
    assert {p.dtype for p in cn.parameters()} == {torch.float32}
    pipe = StableDiffusionControlNetPipeline.from_pretrained(str(MODEL_DIR), controlnet=cn)
    pipe.set_progress_bar_config(disable=True)
    plain = pipe(
        "a red house at night",
        image=Image.open(tmp_path / "map.png").convert("RGB"),
        num_inference_steps=4,
        guidance_scale=5.0,
        generator=torch.Generator().manual_seed(3),
    ).images[0]
    assert np.array_equal(pixels(written(r)[0]), np.asarray(plain, dtype=np.int16))
