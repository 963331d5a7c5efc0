"""The bundled flow-matching transformer `tiny-flux` (FLUX.1 architecture): plain diffusers loads and runs it; diffcli
runs it with its own settings (true classifier-free guidance against the negative prompt " ", its T5 read at 32
tokens) as plain diffusers does, through the command, a batch line and the resident server; a step cache is on for
its one job only."""

import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from diffcli.bundled import model_dir

from tests.helpers import cli, pixels, written

torch = pytest.importorskip("torch")
FLUX = model_dir("tiny-flux")
shipped = pytest.mark.skipif(not (FLUX / "model_index.json").is_file(), reason="tiny-flux is not installed")
FAST = ["--steps", "4", "--dtype", "float32", "--quiet"]
pytestmark = shipped


def _own() -> dict:
    return json.loads((FLUX / "diffcli.json").read_text())


def _plain(prompt: str, seed: int, steps: int, cache=None, **call) -> np.ndarray:
    """Plain FluxPipeline on the shipped folder at 64x64 with the settings diffcli.json names, int16 pixels."""
    from diffusers import FluxPipeline

    pipe = FluxPipeline.from_pretrained(str(FLUX))
    pipe.set_progress_bar_config(disable=True)
    if cache is not None:
        pipe.transformer.enable_cache(cache)
    call = {"true_cfg_scale": _own()["cfg"], "negative_prompt": " ", "height": 64, "width": 64, **call}
    gen = torch.Generator("cpu").manual_seed(seed)
    image = pipe(prompt, num_inference_steps=steps, max_sequence_length=32, generator=gen, **call).images[0]
    return np.asarray(image, dtype=np.int16)


def test_plain_diffusers_loads_it_in_float32_and_float16():
    from diffusers import DiffusionPipeline
    from safetensors import safe_open

    assert json.loads((FLUX / "model_index.json").read_text())["_class_name"] == "FluxPipeline"
    assert sum(p.stat().st_size for p in FLUX.rglob("*") if p.is_file()) <= 20 * 2**20
    with safe_open(str(FLUX / "transformer/diffusion_pytorch_model.safetensors"), "pt") as st:
        assert {st.get_tensor(k).dtype for k in st.keys()} == {torch.float16}
    images = []
    for kwargs, dtype in (({}, torch.float32), ({"torch_dtype": torch.float16}, torch.float16)):
        pipe = DiffusionPipeline.from_pretrained(str(FLUX), **kwargs)
        modules = [pipe.transformer, pipe.text_encoder, pipe.text_encoder_2, pipe.vae]
        assert type(pipe).__name__ == "FluxPipeline" and {m.dtype for m in modules} == {dtype}
        pipe.set_progress_bar_config(disable=True)
        gen = torch.Generator().manual_seed(1)
        out = pipe("a castle at dusk", height=64, width=64, num_inference_steps=4, max_sequence_length=32,
                   generator=gen, output_type="np").images  # fmt: skip
        assert out.shape == (1, 64, 64, 3) and np.isfinite(out).all() and out.std() > 0.02
        images.append(out)
    assert np.abs(images[0] - images[1]).mean() < 0.02  # fp16 draws what float32 draws


def test_txt2img_uses_its_own_settings_as_plain_diffusers_does(tmp_path):
    r = cli("txt2img", "a red castle on the left at dusk", "-m", "tiny-flux", "--seed", "3", *FAST, "-o", tmp_path)
    assert r.exit_code == 0, r.stderr
    (made,) = written(r)
    from PIL import Image

    with Image.open(made) as img:
        record = json.loads(img.info["diffcli"])
        assert img.size == (64, 64)
    own, job = _own(), record["job"]
    assert (job["cfg"], job["negative"], job["scheduler"]) == (own["cfg"], " ", own["scheduler"])
    plain = _plain("a red castle on the left at dusk", 3, 4)
    assert np.array_equal(pixels(made), plain)
    unguided = _plain("a red castle on the left at dusk", 3, 4, true_cfg_scale=1.0)
    assert not np.array_equal(plain, unguided)  # --cfg guides: true CFG against " " ran


def test_img2img_and_a_batch_line_are_plain_diffusers(tmp_path):
    from diffusers import FluxImg2ImgPipeline, FluxPipeline
    from PIL import Image

    from diffcli.bundled import scenes

    source = tmp_path / "in.png"
    scenes.render(scenes.sample_scene(4), 64).save(source)
    jobs = tmp_path / "jobs.jsonl"
    line = {"task": "img2img", "image": str(source), "prompt": "snowy ground at night", "strength": 0.6, "seed": 2}
    jobs.write_text(json.dumps(line) + "\n")
    b = cli("batch", jobs, "-m", "tiny-flux", *FAST, "-o", tmp_path / "b", "--json")
    assert b.exit_code == 0, b.stderr
    (made,) = [json.loads(x)["path"] for x in b.stdout.splitlines()]
    pipe = FluxImg2ImgPipeline.from_pipe(FluxPipeline.from_pretrained(str(FLUX)))
    pipe.set_progress_bar_config(disable=True)
    with Image.open(source) as img:
        plain = pipe(
            "snowy ground at night", image=img.convert("RGB"), strength=0.6, num_inference_steps=4, height=64,
            width=64, true_cfg_scale=_own()["cfg"], negative_prompt=" ", max_sequence_length=32,
            generator=torch.Generator("cpu").manual_seed(2),
        ).images[0]  # fmt: skip
    assert np.array_equal(pixels(made), np.asarray(plain, dtype=np.int16))


def test_a_cached_job_is_the_hooks_pixels_and_the_next_job_is_exact(tmp_path):
    """Two batch lines in one process: first-block caching on the first only, at the family's measured threshold
    (recorded: fbc:0.2; the pixels of plain diffusers with the same hook, not the uncached ones), then the
    uncached pixels exactly."""
    from diffusers.hooks import FirstBlockCacheConfig

    prompt = "a yellow house on the right, sandy ground, at dawn"
    jobs = tmp_path / "jobs.jsonl"
    lines = [{"prompt": prompt, "seed": 8, "cache": "fbc"}, {"prompt": prompt, "seed": 8}]
    jobs.write_text("".join(json.dumps(x) + "\n" for x in lines))
    b = cli("batch", jobs, "-m", "tiny-flux", "--steps", "12", "--dtype", "float32", "-o", tmp_path, "--json")
    assert b.exit_code == 0, b.stderr
    made = [json.loads(x)["path"] for x in b.stdout.splitlines()]
    from PIL import Image

    with Image.open(made[0]) as img:
        assert json.loads(img.info["diffcli"])["job"]["cache"] == "fbc:0.2"
    cached, plain = [pixels(p) for p in made]
    assert np.array_equal(plain, _plain(prompt, 8, 12))
    assert np.array_equal(cached, _plain(prompt, 8, 12, cache=FirstBlockCacheConfig(threshold=0.2)))
    assert not np.array_equal(cached, plain)


def test_the_server_makes_the_commands_pixels(tmp_path, tmp_path_factory):
    sys.path.insert(0, str(Path(__file__).parents[1] / "serve"))
    from serving import RunningServer, server_env

    sys.path.pop(0)
    directory = Path(tempfile.mkdtemp(prefix="dcs", dir="/tmp"))  # a short path: socket paths are limited
    server = RunningServer(directory, server_env(tmp_path_factory.mktemp("serverhome")), ["--idle", "5m"])
    try:
        args = ["a green tree in the center, grassy field, at day", "-m", "tiny-flux", "--seed", "4", *FAST]
        served = server.cli("txt2img", *args, "-o", tmp_path / "served")
        assert served.returncode == 0, served.stderr + server.log()
        here = cli("txt2img", *args, "--no-server", "-o", tmp_path / "here")
        assert here.exit_code == 0, here.stderr
        assert np.array_equal(pixels(Path(served.stdout.strip())), pixels(written(here)[0]))
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)
