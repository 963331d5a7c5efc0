"""The 2026 flow-matching families (issue 29): detection, defaults, and pixel equality with plain diffusers
for txt2img, img2img and inpaint through the CLI and a batch line, on tiny random models built with the
real diffusers/transformers classes (tests/tiny_flow_models.py)."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
from PIL import Image

from helpers import cli, pixels, sigmas_passed, written

FAST = ["--dtype", "float32", "--quiet", "-W", "32", "-H", "32"]
# fixture -> (family, its default cfg, the cfg a test passes, whether it takes a negative prompt)
FAMILIES = {
    "tiny_chroma": ("chroma", 3.0, 4.0, True),
    "tiny_zimage": ("z-image", 0.0, 3.0, True),
    "tiny_qwen_image": ("qwen-image", 4.0, 2.5, True),
}


@functools.lru_cache(maxsize=None)
def _plain_base(model: str):
    import torch
    from diffusers import DiffusionPipeline

    return DiffusionPipeline.from_pretrained(model, torch_dtype=torch.float32)


def _plain(model, task: str, **kwargs):
    """The image plain diffusers makes with its own pipeline class for TASK (default scheduler)."""
    import diffusers
    import torch

    base = _plain_base(str(model))
    if task != "txt2img":
        suffix = {"img2img": "Img2ImgPipeline", "inpaint": "InpaintPipeline"}[task]
        base = getattr(diffusers, type(base).__name__.replace("Pipeline", suffix)).from_pipe(base)
    generator = torch.Generator("cpu").manual_seed(kwargs.pop("seed"))
    return base(**kwargs, generator=generator).images[0]


def _input(path, size=(32, 32)):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def _negative(fixture) -> dict:
    return {"negative_prompt": "red"} if FAMILIES[fixture][3] else {}


def _cfg(fixture) -> dict:
    """The test's cfg under the keyword the family's pipelines take it by (Family.cfg_argument)."""
    from diffcli import families

    family, _, cfg, _ = FAMILIES[fixture]
    return {families.get(family).cfg_argument: cfg}


def _negative_args(fixture) -> list[str]:
    return ["--negative", "red"] if FAMILIES[fixture][3] else []


@pytest.mark.parametrize("fixture", list(FAMILIES))
def test_detected_with_its_defaults(fixture, request):
    from diffcli.models.layout import read_layout

    model = request.getfixturevalue(fixture)
    family, cfg, _, _ = FAMILIES[fixture]
    layout = read_layout(model)
    assert (layout.family, layout.settings_family, layout.is_flow) == (family, family, True)
    assert layout.recommended()["cfg"] == cfg and layout.recommended()["scheduler"] == "flow-euler"
    details = json.loads(cli("models", "info", str(model), "--json").stdout)
    assert details["family"] == family and details["recommended"]["cfg"] == cfg


def test_qwen_image_guides_without_a_negative_prompt(tiny_qwen_image, tmp_path):
    """Its pipelines run true CFG only with a negative prompt: the family's default " " (the model card's)."""
    r = cli("txt2img", "castle", "-m", tiny_qwen_image, "--seed", "3", "--steps", "2", "-o", tmp_path, *FAST)
    assert r.exit_code == 0, r.stderr
    record = json.loads(Image.open(written(r)[0]).info["diffcli"])
    assert record["job"]["negative"] == " " and record["job"]["cfg"] == 4.0
    plain = dict(prompt="castle", num_inference_steps=2, true_cfg_scale=4.0, width=32, height=32, seed=3)
    guided = _plain(tiny_qwen_image, "txt2img", **plain, negative_prompt=" ")
    assert np.array_equal(pixels(written(r)[0]), np.asarray(guided, dtype=np.int16))
    unguided = _plain(tiny_qwen_image, "txt2img", **plain)
    assert not np.array_equal(np.asarray(unguided), np.asarray(guided))


@pytest.mark.parametrize("fixture", list(FAMILIES))
def test_txt2img_matches_plain_diffusers_and_replays(fixture, request, tmp_path):
    model = request.getfixturevalue(fixture)
    cfg = FAMILIES[fixture][2]
    args = ["castle at dusk", "-m", model, "--seed", "11", "--steps", "2", "--cfg", str(cfg), *_negative_args(fixture)]
    r = cli("txt2img", *args, "-o", tmp_path / "a", *FAST)
    assert r.exit_code == 0, r.stderr
    out = written(r)[0]
    record = json.loads(Image.open(out).info["diffcli"])
    assert record["job"]["scheduler"] == "flow-euler" and record["job"]["cfg"] == cfg
    plain = _plain(
        model,
        "txt2img",
        prompt="castle at dusk",
        num_inference_steps=2,
        **_cfg(fixture),
        width=32,
        height=32,
        seed=11,
        **_negative(fixture),
    )
    assert np.array_equal(pixels(out), np.asarray(plain, dtype=np.int16))
    again = cli("txt2img", "--from", out, "-o", tmp_path / "b", "--quiet")
    assert again.exit_code == 0, again.stderr
    assert np.array_equal(pixels(out), pixels(written(again)[0]))


@pytest.mark.parametrize("fixture", list(FAMILIES))
def test_img2img_matches_plain_diffusers(fixture, request, tmp_path):
    model = request.getfixturevalue(fixture)
    cfg = FAMILIES[fixture][2]
    src = _input(tmp_path / "in.png")
    r = cli(
        "img2img",
        src,
        "watercolor",
        "-m",
        model,
        "--seed",
        "3",
        "--steps",
        "4",
        "--strength",
        "0.5",
        "--cfg",
        str(cfg),
        *_negative_args(fixture),
        "-o",
        tmp_path / "out",
        *FAST,
    )
    assert r.exit_code == 0, r.stderr
    plain = _plain(
        model,
        "img2img",
        prompt="watercolor",
        image=Image.open(src).convert("RGB"),
        strength=0.5,
        num_inference_steps=4,
        **_cfg(fixture),
        seed=3,
        width=32,
        height=32,
        **_negative(fixture),
    )
    assert np.array_equal(pixels(written(r)[0]), np.asarray(plain, dtype=np.int16))


@pytest.mark.parametrize("fixture", list(FAMILIES))
def test_inpaint_matches_plain_diffusers_inside_the_mask(fixture, request, tmp_path):
    model = request.getfixturevalue(fixture)
    cfg = FAMILIES[fixture][2]
    src = _input(tmp_path / "in.png")
    mask = np.zeros((32, 32), dtype=np.uint8)
    mask[:, 16:] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    r = cli(
        "inpaint",
        src,
        "a red door",
        "--mask",
        tmp_path / "mask.png",
        "-m",
        model,
        "--seed",
        "2",
        "--steps",
        "2",
        "--cfg",
        str(cfg),
        "--mask-blur",
        "0",
        *_negative_args(fixture),
        "-o",
        tmp_path / "out",
        *FAST,
    )
    assert r.exit_code == 0, r.stderr
    out, before = pixels(written(r)[0]), pixels(src)
    plain = _plain(
        model,
        "inpaint",
        prompt="a red door",
        image=Image.open(src).convert("RGB"),
        mask_image=Image.open(tmp_path / "mask.png").convert("L"),
        strength=1.0,
        num_inference_steps=2,
        **_cfg(fixture),
        seed=2,
        width=32,
        height=32,
        **_negative(fixture),
    )
    assert np.array_equal(out[:, :16], before[:, :16])  # outside the mask: the original, exactly
    assert np.array_equal(out[:, 16:], np.asarray(plain, dtype=np.int16)[:, 16:])


@pytest.mark.parametrize("fixture", list(FAMILIES))
def test_a_batch_line_makes_the_commands_pixels(fixture, request, tmp_path):
    from diffcli.pipelines import release_models

    model = request.getfixturevalue(fixture)
    cfg = FAMILIES[fixture][2]
    line = {"prompt": "red house", "seed": 5, "cfg": cfg, "steps": 2, "width": 32, "height": 32}
    if FAMILIES[fixture][3]:
        line["negative"] = "tree"
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(json.dumps(line) + "\n")
    release_models()
    b = cli("batch", jobs, "-m", model, "--dtype", "float32", "-o", tmp_path / "b", "--json")
    assert b.exit_code == 0, b.stderr
    made = [json.loads(x)["path"] for x in b.stdout.splitlines()]
    neg = ["--negative", "tree"] if FAMILIES[fixture][3] else []
    args = ["--seed", "5", "--cfg", str(cfg), "--steps", "2", "-m", model, *neg, "-o", tmp_path / "c", *FAST]
    one = cli("txt2img", "red house", *args)
    assert one.exit_code == 0, one.stderr
    assert len(made) == 1 and np.array_equal(pixels(made[0]), pixels(written(one)[0]))


@pytest.mark.parametrize(("kind", "value"), [("fbc", 0.5), ("taylorseer", 3)])
def test_qwen_image_takes_the_transformer_caches_as_plain_diffusers_does(kind, value, tiny_qwen_image, tmp_path):
    """Qwen-Image's pipelines set diffusers' cache context (cond / uncond), so its transformer takes the
    FirstBlockCache and TaylorSeer hooks: the pixels of plain diffusers with the same hook, the next job
    uncached again; Z-Image's pipelines set none, so it refuses them before loading."""
    import torch
    from diffusers import DiffusionPipeline
    from diffusers.hooks import FirstBlockCacheConfig, TaylorSeerCacheConfig

    steps = 6
    common = ["--steps", str(steps), "--cfg", "2.5", "--negative", "red", "--seed", "5", *FAST]
    cached = cli(
        "txt2img", "castle at dusk", "-m", tiny_qwen_image, "--cache", f"{kind}:{value}", *common, "-o", tmp_path
    )
    plain = cli("txt2img", "castle at dusk", "-m", tiny_qwen_image, *common, "-o", tmp_path)
    assert cached.exit_code == 0 and plain.exit_code == 0, cached.stderr + plain.stderr
    hook = {
        "fbc": lambda: FirstBlockCacheConfig(threshold=value),
        "taylorseer": lambda: TaylorSeerCacheConfig(
            cache_interval=value, disable_cache_before_step=3, use_lite_mode=True
        ),
    }[kind]()
    pipe = DiffusionPipeline.from_pretrained(str(tiny_qwen_image), torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    pipe.transformer.enable_cache(hook)
    expected = pipe(
        prompt="castle at dusk",
        negative_prompt="red",
        true_cfg_scale=2.5,
        num_inference_steps=steps,
        width=32,
        height=32,
        generator=torch.Generator("cpu").manual_seed(5),
    ).images[0]
    assert np.array_equal(pixels(written(cached)[0]), np.asarray(expected, dtype=np.int16))
    assert not np.array_equal(pixels(written(cached)[0]), pixels(written(plain)[0]))  # the cache changed something


def test_z_image_refuses_the_transformer_caches(tiny_zimage):
    r = cli("txt2img", "red house", "-m", tiny_zimage, "--cache", "fbc", *FAST)
    assert r.exit_code == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "--cache fbc applies to" in r.stderr and "Qwen-Image" in r.stderr and "Z-Image model" in r.stderr


@pytest.mark.parametrize(("fixture", "family"), [("tiny_zimage", "z-image"), ("tiny_qwen_image", "qwen-image")])
def test_a_transformer_file_is_recognised_and_runs_with_its_base(fixture, family, request, tmp_path):
    """A single .safetensors transformer (diffusers' key layout) is known by its tensor names (detect_keys)
    and, with --base, draws what plain diffusers draws with that transformer; the same transformer as a Q8_0
    GGUF file loads quantized and draws nearly that image."""
    import diffusers
    import torch

    from diffcli.models.checkpoint_info import detect_family

    from tiny_flow_models import write_transformer_files

    model = request.getfixturevalue(fixture)
    files = write_transformer_files(model, tmp_path / "files")
    assert detect_family(files["safetensors"]) == family
    args = ["castle at dusk", "--base", model, "--seed", "4", "--steps", "2", "--cfg", str(FAMILIES[fixture][2])]
    r = cli("txt2img", *args, "-m", files["safetensors"], *_negative_args(fixture), "-o", tmp_path / "o", *FAST)
    assert r.exit_code == 0, r.stderr
    g = cli("txt2img", *args, "-m", files["gguf"], *_negative_args(fixture), "-o", tmp_path / "g", *FAST)
    assert g.exit_code == 0, g.stderr
    diff = np.abs(pixels(written(g)[0]) - pixels(written(r)[0]))
    assert 0 < diff.mean() < 1.0 and diff.max() <= 8, (diff.mean(), diff.max())
    config = json.loads((files["folder"] / "config.json").read_text())
    transformer = getattr(diffusers, config["_class_name"]).from_pretrained(files["folder"], torch_dtype=torch.float32)
    pipe = diffusers.DiffusionPipeline.from_pretrained(str(model), transformer=transformer, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    plain = pipe(
        prompt="castle at dusk",
        num_inference_steps=2,
        width=32,
        height=32,
        generator=torch.Generator("cpu").manual_seed(4),
        **_cfg(fixture),
        **_negative(fixture),
    ).images[0]
    assert np.array_equal(pixels(written(r)[0]), np.asarray(plain, dtype=np.int16))


@pytest.mark.parametrize("fixture", [*FAMILIES, "tiny_flux2_klein"])
def test_shift_starts_from_the_sigmas_the_pipeline_would_pass(fixture, request, tmp_path):
    """--shift s shifts the sigmas the family's pipeline chooses itself (Family.base_sigmas): at s = 1 they are
    those sigmas exactly, and a --shift 2 job is plain diffusers given the shifted ones."""
    from diffcli.timesteps import flow_sigmas, shift_fraction

    model = request.getfixturevalue(fixture)
    pipe = _plain_base(str(model))
    passed = sigmas_passed(pipe, prompt="x", num_inference_steps=3, width=32, height=32)
    assert passed == flow_sigmas(pipe, 3, 1.0)

    if fixture in FAMILIES:
        guidance, extra = (
            ["--cfg", str(FAMILIES[fixture][2]), *_negative_args(fixture)],
            {**_cfg(fixture), **_negative(fixture)},
        )
    else:  # klein: no negative prompt, --cfg ignored
        guidance, extra = [], {"guidance_scale": 0.0}
    args = ["--seed", "4", "--steps", "3", "--shift", "2", *guidance, "-o", tmp_path, *FAST]
    r = cli("txt2img", "castle", "-m", model, *args)
    assert r.exit_code == 0, r.stderr
    sigmas = [shift_fraction(u, 2.0) for u in passed]
    plain = _plain(model, "txt2img", prompt="castle", num_inference_steps=3, sigmas=sigmas, width=32, height=32,
                   seed=4, **extra)  # fmt: skip
    assert np.array_equal(pixels(written(r)[0]), np.asarray(plain, dtype=np.int16))


@pytest.mark.parametrize("fixture", [*FAMILIES, "tiny_flux2_klein"])
def test_quantize_int8_makes_plain_diffusers_int8_pixels(fixture, request, tmp_path):
    """--quantize int8 loads the transformer as plain diffusers does with a torchao int8 weight-only config
    (the same pixels), visibly not the unquantized ones, and is recorded."""
    pytest.importorskip("torchao")
    import torch
    from diffusers import DiffusionPipeline, PipelineQuantizationConfig, TorchAoConfig
    from torchao.quantization import Int8WeightOnlyConfig

    from diffcli import families

    model = request.getfixturevalue(fixture)
    args = ["txt2img", "castle at dusk", "-m", model, "--seed", "11", "--steps", "2", *FAST]
    plain_run = cli(*args, "-o", tmp_path / "a")
    r = cli(*args, "--quantize", "int8", "-o", tmp_path / "b")
    assert plain_run.exit_code == 0 and r.exit_code == 0, r.stderr
    out = written(r)[0]
    record = json.loads(Image.open(out).info["diffcli"])
    assert record["job"]["quantize"] == "int8" and "Quantization: int8" in Image.open(out).info["parameters"]
    config = PipelineQuantizationConfig(quant_mapping={"transformer": TorchAoConfig(Int8WeightOnlyConfig())})
    pipe = DiffusionPipeline.from_pretrained(model, torch_dtype=torch.float32, quantization_config=config)
    family = families.family_of_pipe(pipe)
    negative = {"negative_prompt": record["job"]["negative"]} if record["job"]["negative"] else {}
    plain = pipe(
        prompt="castle at dusk",
        **negative,
        num_inference_steps=2,
        width=32,
        height=32,
        generator=torch.Generator("cpu").manual_seed(11),
        **{family.cfg_argument: record["job"]["cfg"]},
        **family.call_kwargs,
    ).images[0]
    assert np.array_equal(pixels(out), np.asarray(plain, dtype=np.int16))
    assert np.abs(pixels(out) - pixels(written(plain_run)[0])).mean() > 0
