"""SD 3.x and FLUX.1: family detection, defaults, pixel equality with plain diffusers, --from, the
model inventory, flow-matching samplers and --shift, on tiny random models of each family."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
from PIL import Image

from helpers import cli, pixels, sigmas_passed, written

FAST = ["--dtype", "float32", "--quiet", "-W", "32", "-H", "32"]
FAMILIES = {"tiny_sd3": "sd3", "tiny_flux": "flux"}


@functools.lru_cache(maxsize=None)
def _plain_base(model: str):
    import torch
    from diffusers import DiffusionPipeline

    return DiffusionPipeline.from_pretrained(model, torch_dtype=torch.float32)


def _plain(model, task: str, **kwargs):
    """The image plain diffusers makes (its own pipeline classes, default scheduler; loaded once)."""
    import torch

    base = _plain_base(str(model))
    if task == "img2img":  # the class AutoPipelineForImage2Image picks, without importing every pipeline
        import diffusers

        base = getattr(diffusers, type(base).__name__.replace("Pipeline", "Img2ImgPipeline")).from_pipe(base)
    generator = torch.Generator("cpu").manual_seed(kwargs.pop("seed"))
    return base(**kwargs, generator=generator).images[0]


def _input(path, size=(32, 32)):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def test_family_detection_and_defaults(tiny_sd3, tiny_flux, tmp_path):
    import shutil

    from diffcli.models.layout import read_layout

    sd3, flux = read_layout(tiny_sd3), read_layout(tiny_flux)
    assert (sd3.family, sd3.is_flow, sd3.patch_size, sd3.vae_scale_factor) == ("sd3", True, 2, 2)
    assert sd3.native_size == 64 and sd3.recommended()["scheduler"] == "flow-euler"
    assert (flux.family, flux.settings_family, flux.patch_size) == ("flux", "flux", 2)
    assert flux.recommended()["cfg"] == 3.5 and flux.native_size == 128 * 2  # FLUX's default_sample_size
    schnell = shutil.copytree(tiny_flux, tmp_path / "schnell")
    config = json.loads((schnell / "transformer" / "config.json").read_text())
    (schnell / "transformer" / "config.json").write_text(json.dumps({**config, "guidance_embeds": False}))
    assert read_layout(schnell).settings_family == "flux-schnell"
    assert read_layout(schnell).recommended()["steps"] == 4


@pytest.mark.parametrize(
    "keys, family",
    [
        (["double_blocks.0.img_attn.qkv.weight", "single_blocks.0.linear1.weight"], "flux"),  # BFL release files
        (["model.diffusion_model.double_blocks.0.img_mod.lin.weight"], "flux"),  # ComfyUI-style prefix
        (["transformer_blocks.0.attn.to_q.weight", "single_transformer_blocks.0.proj_out.weight"], "flux"),  # diffusers
        (["model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight", "text_encoders.clip_l.x"], "sd3"),  # SAI
        (["transformer_blocks.0.attn.add_q_proj.weight", "context_embedder.weight"], "sd3"),  # diffusers
        (["model.diffusion_model.input_blocks.0.0.weight", "cond_stage_model.transformer.x"], None),  # SD 1.x
    ],
)
def test_transformer_files_are_told_apart_by_their_tensor_names(keys, family):
    from diffcli.models.checkpoint_info import transformer_family

    assert transformer_family(keys) == family


@pytest.mark.parametrize("fixture", list(FAMILIES))
def test_txt2img_matches_plain_diffusers_and_replays(fixture, request, tmp_path):
    model = request.getfixturevalue(fixture)
    r = cli("txt2img", "castle at dusk", "-m", model, "--seed", "11", "--steps", "2", "-o", tmp_path / "a", *FAST)
    assert r.exit_code == 0, r.stderr
    out = written(r)[0]
    record = json.loads(Image.open(out).info["diffcli"])["job"]
    assert record["scheduler"] == "flow-euler" and record["cfg"] == (7.0 if fixture == "tiny_sd3" else 3.5)
    plain = _plain(
        model,
        "txt2img",
        prompt="castle at dusk",
        num_inference_steps=2,
        guidance_scale=record["cfg"],
        width=32,
        height=32,
        seed=11,
    )
    assert np.array_equal(pixels(out), np.asarray(plain, dtype=np.int16))
    # --from replays the recorded job, pixel for pixel
    again = cli("txt2img", "--from", out, "-o", tmp_path / "b", "--quiet")
    assert again.exit_code == 0, again.stderr
    assert np.array_equal(pixels(out), pixels(written(again)[0]))
    info = json.loads(cli("info", out, "--json").stdout)
    assert info["job"]["model"] == str(model) and info["job"]["steps"] == 2
    # the inventory reports the family
    listed = {row["path"]: row for row in json.loads(cli("models", "list", "--json").stdout)}
    assert listed[str(model)]["family"] == FAMILIES[fixture]
    details = json.loads(cli("models", "info", str(model), "--json").stdout)
    assert details["family"] == FAMILIES[fixture] and details["recommended"]["scheduler"] == "flow-euler"


@pytest.mark.parametrize("fixture", list(FAMILIES))
def test_img2img_matches_plain_diffusers(fixture, request, tmp_path):
    model = request.getfixturevalue(fixture)
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
        "-o",
        tmp_path / "out",
        *FAST,
    )
    assert r.exit_code == 0, r.stderr
    cfg = 7.0 if fixture == "tiny_sd3" else 3.5
    plain = _plain(
        model,
        "img2img",
        prompt="watercolor",
        image=Image.open(src).convert("RGB"),
        strength=0.5,
        num_inference_steps=4,
        guidance_scale=cfg,
        seed=3,
        width=32,
        height=32,
    )
    assert np.array_equal(pixels(written(r)[0]), np.asarray(plain, dtype=np.int16))


def test_samplers_must_fit_the_family(tiny_sd3, tiny_sd, tmp_path):
    r = cli("txt2img", "castle", "-m", tiny_sd3, "--scheduler", "dpm++2m-karras", "-o", tmp_path, *FAST)
    assert r.exit_code == 2 and "flow-euler" in r.stderr and "Traceback" not in r.stderr
    # diffcli's own names are strict: euler is not read as A1111's "Euler" (that is the A1111 API's reading)
    r = cli("txt2img", "castle", "-m", tiny_sd3, "--scheduler", "euler", "-o", tmp_path, *FAST)
    assert r.exit_code == 2 and "scheduler 'euler' does not apply" in r.stderr
    r = cli("txt2img", "castle", "-m", tiny_sd, "--scheduler", "flow-euler", "-o", tmp_path, *FAST)
    assert r.exit_code == 2 and "not a flow-matching model" in r.stderr
    rows = {row["name"]: row for row in json.loads(cli("schedulers", "--json").stdout)}
    assert rows["flow-euler"]["flow_matching"] and rows["flow-euler"]["families"] == ["sd3", "flux"]
    assert not rows["euler"]["flow_matching"]
    assert list(tmp_path.iterdir()) == []


def test_flux_refuses_a_cfg_cutoff_and_notes_a_negative(tiny_flux, tmp_path):
    r = cli("txt2img", "castle", "-m", tiny_flux, "--cfg-cutoff", "0.5", "-o", tmp_path, *FAST)
    assert r.exit_code == 2 and "guidance-distilled" in r.stderr


def test_shift_1_is_the_sd3_schedule_and_shifts_multiply(tiny_sd3):
    """The sigmas diffcli passes are diffusers' own at --shift 1; at --shift s the model's shift m then
    gives the schedule of a scheduler whose shift is s·m."""
    import copy

    from diffusers import FlowMatchEulerDiscreteScheduler

    from diffcli.timesteps import flow_sigmas

    pipe = _plain_base(str(tiny_sd3))
    own = copy.deepcopy(pipe.scheduler)
    own.set_timesteps(5)
    ours = copy.deepcopy(pipe.scheduler)
    ours.set_timesteps(sigmas=flow_sigmas(pipe, 5, 1.0))
    assert np.allclose(own.sigmas.numpy(), ours.sigmas.numpy(), atol=1e-6)
    ours.set_timesteps(sigmas=flow_sigmas(pipe, 5, 2.0))
    unshifted = np.linspace(pipe.scheduler.sigma_max, pipe.scheduler.sigma_min, 5)
    times_two = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config, shift=2 * pipe.scheduler.shift)
    times_two.set_timesteps(sigmas=list(unshifted))
    assert np.allclose(ours.sigmas.numpy(), times_two.sigmas.numpy(), atol=1e-5)
    assert (ours.sigmas[1:-1] > own.sigmas[1:-1]).all()  # toward the noisy end


def test_shift_multiplies_the_flux_schedule(tiny_flux, tmp_path):
    """--shift s moves FLUX's sigmas by s before the model's own (resolution-dependent) shift."""
    r = cli("txt2img", "castle", "-m", tiny_flux, "--seed", "5", "--steps", "3", "--shift", "2", "-o", tmp_path, *FAST)
    assert r.exit_code == 0, r.stderr
    u = np.linspace(1.0, 1 / 3, 3)
    sigmas = list(2 * u / (1 + u))
    plain = _plain(
        tiny_flux,
        "txt2img",
        prompt="castle",
        num_inference_steps=3,
        sigmas=sigmas,
        guidance_scale=3.5,
        width=32,
        height=32,
        seed=5,
    )
    out = written(r)[0]
    assert np.array_equal(pixels(out), np.asarray(plain, dtype=np.int16))
    assert "Shift: 2" in Image.open(out).info["parameters"]


# ---------------------------------------------------------------- single transformer files, GGUF


@pytest.fixture(scope="module")
def flux_files(tiny_flux, tmp_path_factory):
    import tiny_flow_models

    return tiny_flow_models.write_transformer_files(tiny_flux, tmp_path_factory.mktemp("flux-files"))


def test_a_transformer_file_with_base_matches_plain_diffusers(tiny_flux, flux_files, tmp_path):
    import torch
    from diffusers import FluxPipeline, FluxTransformer2DModel

    args = ["txt2img", "castle at dusk", "--seed", "2", "--steps", "2", *FAST]
    r = cli(*args, "-m", flux_files["safetensors"], "--base", tiny_flux, "-o", tmp_path / "st")
    assert r.exit_code == 0, r.stderr
    transformer = FluxTransformer2DModel.from_pretrained(str(flux_files["folder"]), torch_dtype=torch.float32)
    pipe = FluxPipeline.from_pretrained(str(tiny_flux), transformer=transformer, torch_dtype=torch.float32)
    plain = pipe(
        "castle at dusk",
        num_inference_steps=2,
        guidance_scale=3.5,
        width=32,
        height=32,
        generator=torch.Generator("cpu").manual_seed(2),
    ).images[0]
    unquantized = pixels(written(r)[0])
    assert np.array_equal(unquantized, np.asarray(plain, dtype=np.int16))
    record = json.loads(Image.open(written(r)[0]).info["diffcli"])["job"]
    assert record["base"] == str(tiny_flux) and record["model"] == str(flux_files["safetensors"])
    assert f"Base model: {tiny_flux.name}" in Image.open(written(r)[0]).info["parameters"]

    # the same transformer as Q8_0 GGUF: loads quantized, draws nearly the same image
    g = cli(*args, "-m", flux_files["gguf"], "--base", tiny_flux, "-o", tmp_path / "gguf")
    assert g.exit_code == 0, g.stderr
    quantized = pixels(written(g)[0])
    diff = np.abs(quantized - unquantized)
    print(f"GGUF Q8_0 vs unquantized: mean |diff| {diff.mean():.3f}, max {diff.max()} (0-255 levels)")
    assert 0 < diff.mean() < 1.0 and diff.max() <= 8
    # and replays from its record, base included
    again = cli("txt2img", "--from", written(g)[0], "-o", tmp_path / "again", "--quiet")
    assert again.exit_code == 0, again.stderr
    assert np.array_equal(pixels(written(again)[0]), quantized)
    listed = {row["path"]: row["family"] for row in json.loads(cli("models", "list", "--json").stdout)}
    assert listed[str(flux_files["gguf"])] == "flux"
    assert json.loads(cli("models", "info", str(flux_files["gguf"]), "--json").stdout)["dtypes"] == ["F32", "Q8_0"]


def test_transformer_files_need_a_base_of_their_family(tiny_flux, tiny_sd3, flux_files, tmp_path):
    r = cli("txt2img", "castle", "-m", flux_files["gguf"], "-o", tmp_path, *FAST)
    assert r.exit_code == 2 and "--base" in r.stderr
    r = cli("txt2img", "castle", "-m", flux_files["safetensors"], "--base", tiny_sd3, "-o", tmp_path, *FAST)
    assert r.exit_code == 2 and "is a sd3 model" in r.stderr
    r = cli("txt2img", "castle", "-m", tiny_flux, "--base", tiny_flux, "-o", tmp_path, *FAST)
    assert r.exit_code == 2 and "--base applies only" in r.stderr
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- inpainting


def test_inpaint_sd3_flux_and_flux_fill_keep_everything_outside_the_mask(tiny_sd3, tiny_flux, tmp_path):
    import tiny_flow_models

    fill = tiny_flow_models.build_flux_fill(tiny_flux, tmp_path / "fill")
    src = _input(tmp_path / "in.png")
    mask = np.zeros((32, 32), dtype=np.uint8)
    mask[:, 16:] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    before = pixels(src)
    for model in (tiny_sd3, tiny_flux, fill):
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
            "--mask-blur",
            "0",
            "-o",
            tmp_path / "out",
            *FAST,
        )
        assert r.exit_code == 0, (model, r.stderr)
        out = pixels(written(r)[0])
        assert np.array_equal(out[:, :16], before[:, :16]), model
        assert np.abs(out[:, 16:] - before[:, 16:]).mean() > 5, model
    assert json.loads(cli("models", "info", str(fill), "--json").stdout)["family"] == "flux-inpaint"
    r = cli("txt2img", "castle", "-m", fill, "-o", tmp_path / "no", *FAST)
    assert r.exit_code == 2 and "inpainting model" in r.stderr


# ---------------------------------------------------------------- --quantize


def test_quantize_choices_are_checked_before_loading(tiny_flux, flux_files, tmp_path):
    base = ["txt2img", "castle", "-o", tmp_path, *FAST]
    r = cli(*base, "-m", tiny_flux, "--quantize", "q3")
    assert r.exit_code == 2 and "none, int8, nf4" in r.stderr
    r = cli(*base, "-m", tiny_flux, "--quantize", "nf4", "--device", "cpu")
    assert r.exit_code == 2 and "CUDA" in r.stderr
    r = cli(*base, "-m", flux_files["gguf"], "--base", tiny_flux, "--quantize", "int8")
    assert r.exit_code == 2 and "already quantized" in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_quantize_int8_stays_close_and_is_recorded(tiny_flux, tmp_path):
    pytest.importorskip("torchao")
    args = ["txt2img", "castle at dusk", "-m", tiny_flux, "--seed", "1", "--steps", "2", *FAST]
    plain = pixels(written(cli(*args, "-o", tmp_path / "a"))[0])
    r = cli(*args, "--quantize", "int8", "-o", tmp_path / "b")
    assert r.exit_code == 0, r.stderr
    diff = np.abs(pixels(written(r)[0]) - plain)
    assert 0 < diff.mean() < 1.0
    assert json.loads(Image.open(written(r)[0]).info["diffcli"])["job"]["quantize"] == "int8"
    assert "Quantization: int8" in Image.open(written(r)[0]).info["parameters"]


def test_distill_says_flow_teachers_are_not_supported(tiny_flux, tmp_path):
    r = cli("distill", "--teacher", tiny_flux, "--out", tmp_path / "student")
    assert r.exit_code == 2 and "flow-matching transformer" in r.stderr and "does not support" in r.stderr
    assert not (tmp_path / "student").exists()


@pytest.mark.parametrize("fixture", list(FAMILIES))
def test_partial_latents_decode_as_the_pipeline_decodes_them(fixture, request):
    """--save-partial decodes the latents a step left (FLUX: packed; both: a VAE shift factor)."""
    import torch

    from diffcli.pipelines import decode_latents

    pipe = _plain_base(str(request.getfixturevalue(fixture)))

    def run(kind):
        return pipe(
            "castle",
            num_inference_steps=1,
            width=32,
            height=32,
            output_type=kind,
            generator=torch.Generator("cpu").manual_seed(0),
        ).images

    ours = decode_latents(pipe, run("latent"), (32, 32))[0]
    assert np.array_equal(np.asarray(ours), np.asarray(run("pil")[0]))


def test_flux_fill_is_flux_to_shift_guidance_and_caches(tiny_flux, tmp_path):
    """A FLUX.1 Fill model (a one-task model of the FLUX.1 family) shifts the sigmas FluxFillPipeline passes
    itself, takes --cfg as guidance_scale and finds FLUX.1's MagCache ratios; it switches to no other pipeline."""
    import torch
    from diffusers import FluxFillPipeline

    from diffcli import cache, families, guidance
    from diffcli.timesteps import flow_sigmas

    import tiny_flow_models

    fill = tiny_flow_models.build_flux_fill(tiny_flux, tmp_path / "fill")
    pipe = FluxFillPipeline.from_pretrained(fill, torch_dtype=torch.float32)
    assert families.family_of_pipeline("FluxFillPipeline") is families.family_of_pipeline("FluxPipeline")
    assert families.pipeline_class_for("FluxFillPipeline", "img2img") is None
    assert guidance.cfg_argument(pipe) == "guidance_scale"
    assert cache._hook_config(pipe, "magcache", 0.1, 3).mag_ratios is not None
    image = Image.new("RGB", (32, 32), "gray")
    call = dict(prompt="x", image=image, mask_image=image, num_inference_steps=3, width=32, height=32)
    assert sigmas_passed(pipe, **call) == flow_sigmas(pipe, 3, 1.0)
