"""Qwen-Image 2.1 (issue 29): recognised with its defaults, its 16x VAE's sizes, a step-distilled release's own
sigmas and its transformer files, img2img, the step caches and the hires fix refused (on every machine: its configs
name it); and, where torchvision is installed (transformers builds its Qwen3-VL processor only then), txt2img with
and without guidance (replayed by --from), an edit with two reference images, a step-distilled release's sigmas, a
LoRA, int8 and transformer files the pixels of QwenImage21Pipeline, through the command, a batch line and a real
server; its RGBA images written as JPEG too."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny_edit_models import noise_image, plain_edit

from helpers import cli, pixels, written

FAST = ["--dtype", "float32", "--quiet", "--no-server"]


def _as_qwen_image21(model, path, **index):
    """MODEL's folder (Qwen-Image's: a Wan-style VAE) with model_index.json naming QwenImage21Pipeline (and INDEX)
    and a VAE of five levels, 16x: enough to recognise the family and its sizes, no load."""
    shutil.copytree(model, path)
    old = json.loads((path / "model_index.json").read_text())
    (path / "model_index.json").write_text(json.dumps({**old, "_class_name": "QwenImage21Pipeline", **index}))
    vae = json.loads((path / "vae" / "config.json").read_text())
    (path / "vae" / "config.json").write_text(json.dumps({**vae, "dim_mult": [1, 1, 1, 1, 1]}))
    return path


def test_recognised_with_its_defaults_sizes_and_refusals(tiny_qwen_image, tmp_path):
    from diffcli.models.layout import read_layout

    model = _as_qwen_image21(tiny_qwen_image, tmp_path / "m")
    layout = read_layout(model)
    assert layout.family == "qwen-image-2.1" and layout.is_flow and layout.vae_scale_factor == 16
    recommended = layout.recommended()
    assert (recommended["steps"], recommended["cfg"], recommended["width"]) == (40, 1.0, 1024)
    distilled = _as_qwen_image21(tiny_qwen_image, tmp_path / "turbo", sample_sigmas=[1.0, 0.75, 0.5, 0.25])
    assert read_layout(distilled).recommended()["steps"] == 4  # its own sigmas decide its default steps
    source = noise_image(tmp_path / "in.png", (64, 64))
    r = cli("img2img", source, "x", "-m", model, "-o", tmp_path / "o", "--steps", "2", *FAST)
    assert r.exit_code == 2 and "no img2img pipeline" in r.stderr, r.stderr
    r = cli("txt2img", "x", "-m", model, "-W", "48", "-H", "64", "-o", tmp_path / "o", *FAST)
    assert r.exit_code == 2 and "32" in r.stderr, r.stderr  # 16x VAE, latents grouped 2x2
    r = cli("txt2img", "x", "-m", model, "--cache", "fbc", "-o", tmp_path / "o", *FAST)
    assert r.exit_code == 2 and "fbc" in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = cli("txt2img", "x", "-m", model, "--hires", "2", "-o", tmp_path / "o", *FAST)
    assert r.exit_code == 2 and "--hires runs an img2img pass" in r.stderr, r.stderr
    if importlib.util.find_spec("torchvision") is None:  # its processor cannot be built: one line, exit 1
        r = cli("txt2img", "x", "-m", model, "-W", "64", "-H", "64", "-o", tmp_path / "o", *FAST)
        assert r.exit_code == 1 and "need torchvision" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "o").exists()


def test_its_transformer_files_are_known_by_their_text_norm(tmp_path):
    """A transformer file in diffusers' layout or ComfyUI's (prefixed, gate and up projections fused) is Qwen-Image
    2.1's by `txt_in.text_norm` (Qwen-Image's files have `txt_norm`); the header is all detection reads."""
    import torch
    from safetensors.torch import save_file

    from diffcli.models.checkpoint_info import detect_family

    names = ["txt_in.text_norm.weight", "transformer_blocks.0.img_mlp.gate_up.weight", "img_in.weight"]
    for prefix in ("", "model.diffusion_model."):
        save_file({prefix + n: torch.zeros(2) for n in names}, tmp_path / "t.safetensors")
        assert detect_family(tmp_path / "t.safetensors") == "qwen-image-2.1", prefix


def test_the_alias_names_the_public_checkpoint():
    from diffcli import families

    alias = families.aliases()["qwen-image-2.1"]
    assert alias.repo_id == "Qwen/Qwen-Image-2.1" and alias.defaults["steps"] == 40 and alias.defaults["cfg"] == 1.0


@pytest.fixture(scope="module")
def tiny_qwen_image21(tmp_path_factory):
    pytest.importorskip("torchvision", reason="transformers builds the Qwen3-VL processor only with torchvision")
    import tiny_flow_models

    return tiny_flow_models.build_qwen_image21(tmp_path_factory.mktemp("models") / "tiny-qwen-image21")


def _plain(model, prompt: str, seed: int, *, on_white: bool = False, quantization_config=None, **kwargs):
    """QwenImage21Pipeline's own image at 64x64: the RGB channels of its RGBA, or (ON_WHITE) it composited on white."""
    import torch
    from diffusers import QwenImage21Pipeline

    load = {"quantization_config": quantization_config} if quantization_config is not None else {}
    pipe = QwenImage21Pipeline.from_pretrained(str(model), torch_dtype=torch.float32, **load)
    generator = torch.Generator("cpu").manual_seed(seed)
    image = pipe(prompt, width=64, height=64, generator=generator, **kwargs).images[0]
    assert image.mode == "RGBA"
    if on_white:
        image = Image.alpha_composite(Image.new("RGBA", image.size, (255, 255, 255, 255)), image)
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_txt2img_unguided_and_guided_is_plain_diffusers(tiny_qwen_image21, tmp_path):
    size = ["-W", "64", "-H", "64", "--steps", "2", "--seed", "5"]
    r = cli("txt2img", "castle at dusk", "-m", tiny_qwen_image21, *size, "-o", tmp_path / "a", *FAST)
    assert r.exit_code == 0, r.stderr
    assert Image.open(written(r)[0]).mode == "RGBA"  # its VAE's alpha channel, kept in a PNG
    unguided = _plain(tiny_qwen_image21, "castle at dusk", 5, num_inference_steps=2)
    assert np.array_equal(pixels(written(r)[0]), unguided)
    g = cli("txt2img", "castle at dusk", "-m", tiny_qwen_image21, *size, "--cfg", "4", "-o", tmp_path / "g", *FAST)
    assert g.exit_code == 0, g.stderr
    cfg = {"negative_prompt": " ", "true_cfg_scale": 4.0}
    guided = _plain(tiny_qwen_image21, "castle at dusk", 5, num_inference_steps=2, **cfg)
    assert np.array_equal(pixels(written(g)[0]), guided) and not np.array_equal(guided, unguided)
    again = cli("txt2img", "--from", written(g)[0], "-o", tmp_path / "again", "--quiet", "--no-server")
    assert again.exit_code == 0, again.stderr  # the record replays it
    assert np.array_equal(pixels(written(again)[0]), guided)
    j = cli("txt2img", "castle at dusk", "-m", tiny_qwen_image21, *size, "--format", "jpg", "-o", tmp_path / "j", *FAST)
    assert j.exit_code == 0, j.stderr  # RGBA flattened for JPEG (alpha on white)
    on_white = _plain(tiny_qwen_image21, "castle at dusk", 5, num_inference_steps=2, on_white=True)
    assert Image.open(written(j)[0]).mode == "RGB" and np.abs(pixels(written(j)[0]) - on_white).mean() < 8


def test_a_distilled_release_samples_on_its_own_sigmas_unless_told_the_steps(tiny_qwen_image21, tmp_path):
    model = tmp_path / "turbo"
    shutil.copytree(tiny_qwen_image21, model)
    index = json.loads((model / "model_index.json").read_text())
    (model / "model_index.json").write_text(json.dumps({**index, "sample_sigmas": [1.0, 0.7, 0.35]}))
    r = cli("txt2img", "castle", "-m", model, "-W", "64", "-H", "64", "--seed", "1", "-o", tmp_path / "own", *FAST)
    assert r.exit_code == 0, r.stderr
    assert np.array_equal(pixels(written(r)[0]), _plain(model, "castle", 1))  # the pipeline's own choice
    args = ["-W", "64", "-H", "64", "--seed", "1", "--steps", "2", "-o", tmp_path / "two", *FAST]
    s = cli("txt2img", "castle", "-m", model, *args)
    assert s.exit_code == 0, s.stderr
    assert np.array_equal(pixels(written(s)[0]), _plain(model, "castle", 1, sigmas=[1.0, 0.5]))


def test_an_edit_with_two_references_is_plain_diffusers_by_command_batch_and_server(
    tiny_qwen_image21, tmp_path, tmp_path_factory
):
    source = noise_image(tmp_path / "in.png", (64, 64), seed=0)
    refs = [noise_image(tmp_path / f"ref{i}.png", (64, 64), seed=i) for i in (1, 2)]
    args = ["-r", refs[0], "-r", refs[1], "--steps", "2", "--seed", "3", "--cfg", "3"]
    e = cli("edit", source, "make it red", "-m", tiny_qwen_image21, *args, "-o", tmp_path / "edit", *FAST)
    assert e.exit_code == 0, e.stderr
    plain = plain_edit(
        tiny_qwen_image21, [source, *refs], "make it red", 3, (64, 64),
        negative_prompt=" ", true_cfg_scale=3.0, output_resolution=64,
    )  # fmt: skip
    plain = plain.astype(np.int16)
    assert np.array_equal(pixels(written(e)[0]), plain[..., :3] if plain.shape[-1] == 4 else plain)
    line = {"task": "edit", "image": str(source), "prompt": "make it red", "references": [str(p) for p in refs]}
    (tmp_path / "jobs.jsonl").write_text(json.dumps(line) + "\n")
    batch = ["--steps", "2", "--seed", "3", "--cfg", "3", "-o", tmp_path / "b", *FAST[:-1]]
    b = cli("batch", tmp_path / "jobs.jsonl", "-m", tiny_qwen_image21, *batch)
    assert b.exit_code == 0, b.stderr
    assert np.array_equal(pixels(written(b)[0]), pixels(written(e)[0]))

    sys.path.insert(0, str(Path(__file__).parents[1] / "serve"))
    from serving import RunningServer, server_env

    sys.path.pop(0)
    directory = Path(tempfile.mkdtemp(prefix="dcs", dir="/tmp"))  # a short path: socket paths are limited
    server = RunningServer(directory, server_env(tmp_path_factory.mktemp("serverhome")), ["--idle", "5m"])
    try:
        served = server.cli("edit", source, "make it red", "-m", tiny_qwen_image21, *args, "--dtype", "float32",
                            "--quiet", "-o", tmp_path / "served")  # fmt: skip
        assert served.returncode == 0, served.stderr + server.log()
        assert np.array_equal(pixels(Path(served.stdout.strip())), pixels(written(e)[0]))
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def test_quantize_int8_makes_plain_diffusers_int8_pixels(tiny_qwen_image21, tmp_path):
    """--quantize int8: the transformer as plain diffusers loads it with torchao's int8 weight-only config."""
    pytest.importorskip("torchao")
    from diffusers import PipelineQuantizationConfig, TorchAoConfig
    from torchao.quantization import Int8WeightOnlyConfig

    args = ["txt2img", "castle at dusk", "-m", tiny_qwen_image21, "-W", "64", "-H", "64", "--seed", "11"]
    r = cli(*args, "--steps", "2", "--quantize", "int8", "-o", tmp_path, *FAST)
    assert r.exit_code == 0, r.stderr
    config = PipelineQuantizationConfig(quant_mapping={"transformer": TorchAoConfig(Int8WeightOnlyConfig())})
    plain = _plain(tiny_qwen_image21, "castle at dusk", 11, num_inference_steps=2, quantization_config=config)
    assert np.array_equal(pixels(written(r)[0]), plain)
    assert not np.array_equal(plain, _plain(tiny_qwen_image21, "castle at dusk", 11, num_inference_steps=2))


def test_a_lora_is_plain_diffusers_and_leaves_no_trace(tiny_qwen_image21, tmp_path):
    """--lora on its transformer (a LoRA file as diffusers' trainers save it): a batch line with it gives the pixels
    of load_lora_weights + set_adapters at the same weight, the next line without it the base model's own."""
    import lora_files

    lora = lora_files.build_transformer_lora(tiny_qwen_image21, tmp_path / "style.safetensors", seed=3)
    jobs = [{"prompt": "castle at dusk", "lora": [f"{lora}:0.8"]}, {"prompt": "castle at dusk"}]
    (tmp_path / "jobs.jsonl").write_text("".join(json.dumps(j) + "\n" for j in jobs))
    args = ["-W", "64", "-H", "64", "--seed", "5", "--steps", "2", "-o", tmp_path / "out", *FAST[:-1]]
    r = cli("batch", tmp_path / "jobs.jsonl", "-m", tiny_qwen_image21, *args)
    assert r.exit_code == 0, r.stderr
    with_lora, without = (pixels(p) for p in written(r))
    import torch
    from diffusers import QwenImage21Pipeline

    pipe = QwenImage21Pipeline.from_pretrained(str(tiny_qwen_image21), torch_dtype=torch.float32)
    pipe.load_lora_weights(str(lora), adapter_name="style")
    pipe.set_adapters(["style"], adapter_weights=[0.8])
    generator = torch.Generator("cpu").manual_seed(5)
    plain = pipe("castle at dusk", width=64, height=64, num_inference_steps=2, generator=generator).images[0]
    plain = np.asarray(plain.convert("RGB"), dtype=np.int16)
    assert np.array_equal(with_lora, plain) and not np.array_equal(with_lora, without)
    assert np.array_equal(without, _plain(tiny_qwen_image21, "castle at dusk", 5, num_inference_steps=2))


def _comfy_layout(files: dict, out: Path) -> Path:
    """The diffusers-layout transformer file of FILES as ComfyUI writes Qwen-Image 2.1's: under
    `model.diffusion_model.`, each MLP's gate and up projections fused into one `gate_up` (gate rows first)."""
    import torch
    from safetensors.torch import load_file, save_file

    state = load_file(files["safetensors"])
    comfy = {}
    for name, tensor in state.items():
        if name.endswith("img_mlp.gate_layer.weight"):
            up = state[name.replace("gate_layer", "proj")]
            comfy["model.diffusion_model." + name.replace("gate_layer", "gate_up")] = torch.cat([tensor, up])
        elif not name.endswith("img_mlp.proj.weight"):
            comfy["model.diffusion_model." + name] = tensor
    save_file(comfy, out)
    return out


def test_a_transformer_file_runs_with_its_base(tiny_qwen_image21, tmp_path):
    """Its transformer as one .safetensors (diffusers' layout; ComfyUI's) with --base draws what QwenImage21Pipeline
    draws with that transformer; as a Q8_0 GGUF file, nearly that image."""
    import torch
    from diffusers import QwenImage21Pipeline, QwenImage21Transformer2DModel

    from diffcli.models.checkpoint_info import detect_family

    from tiny_flow_models import write_transformer_files

    files = write_transformer_files(tiny_qwen_image21, tmp_path / "files")
    comfy = _comfy_layout(files, tmp_path / "files" / "comfy.safetensors")
    assert detect_family(files["safetensors"]) == detect_family(comfy) == "qwen-image-2.1"
    args = ["castle", "--base", tiny_qwen_image21, "-W", "64", "-H", "64", "--seed", "4", "--steps", "2"]
    made = {}
    for kind, path in (("safetensors", files["safetensors"]), ("comfy", comfy), ("gguf", files["gguf"])):
        r = cli("txt2img", *args, "-m", path, "-o", tmp_path / kind, *FAST)
        assert r.exit_code == 0, r.stderr
        made[kind] = pixels(written(r)[0])
    transformer = QwenImage21Transformer2DModel.from_pretrained(files["folder"], torch_dtype=torch.float32)
    pipe = QwenImage21Pipeline.from_pretrained(
        str(tiny_qwen_image21), transformer=transformer, torch_dtype=torch.float32
    )
    generator = torch.Generator("cpu").manual_seed(4)
    plain = pipe("castle", width=64, height=64, num_inference_steps=2, generator=generator).images[0]
    assert np.array_equal(made["safetensors"], np.asarray(plain.convert("RGB"), dtype=np.int16))
    assert np.array_equal(made["comfy"], made["safetensors"])
    diff = np.abs(made["gguf"] - made["safetensors"])
    assert 0 < diff.mean() < 2.0, (diff.mean(), diff.max())
