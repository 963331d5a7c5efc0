"""FLUX.2 [klein] (issue 29): detection (the step-distilled klein and the undistilled base variant), defaults,
pixel equality with plain diffusers for txt2img and inpaint through the CLI, a --from replay and a batch line,
img2img refused, and a transformer single file run with --base, on a tiny random model built with the real
diffusers/transformers classes (tests/tiny_flow_models.py: build_flux2_klein)."""

from __future__ import annotations

import functools
import json
import shutil

import numpy as np
import pytest
from PIL import Image
from tiny_edit_models import plain_edit

from helpers import cli, pixels, written

FAST = ["--dtype", "float32", "--quiet", "-W", "32", "-H", "32"]


@pytest.fixture(scope="module")
def klein_base(tiny_flux2_klein, tmp_path_factory):
    """The tiny klein as an undistilled base model: the same weights, `is_distilled` false (the pipelines then
    run classifier-free guidance against the empty prompt)."""
    path = tmp_path_factory.mktemp("models") / "tiny-flux2-klein-base"
    shutil.copytree(tiny_flux2_klein, path)
    index = json.loads((path / "model_index.json").read_text())
    (path / "model_index.json").write_text(json.dumps({**index, "is_distilled": False}, indent=2))
    return path


@pytest.fixture(params=["distilled", "base"])
def klein(request, tiny_flux2_klein, klein_base):
    """(the model, the cfg a test passes): the base model guides (a second pass), the distilled ignores --cfg."""
    if request.param == "base":
        return klein_base, 3.0
    return tiny_flux2_klein, 0.0


@functools.lru_cache(maxsize=None)
def _plain_base(model: str):
    import torch
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(model, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _plain(model, task: str, **kwargs):
    """The image plain diffusers makes with klein's own pipeline for TASK (its default scheduler)."""
    import torch
    from diffusers import Flux2KleinInpaintPipeline

    pipe = _plain_base(str(model))
    if task == "inpaint":
        pipe = Flux2KleinInpaintPipeline.from_pipe(pipe)
    generator = torch.Generator("cpu").manual_seed(kwargs.pop("seed"))
    return np.asarray(pipe(**kwargs, generator=generator).images[0], dtype=np.int16)


def _input(path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path)
    return path


def test_detected_with_the_defaults_of_each_kind(tiny_flux2_klein, klein_base):
    from diffcli import families
    from diffcli.jobs import size_multiple
    from diffcli.models.layout import read_layout

    distilled, base = read_layout(tiny_flux2_klein), read_layout(klein_base)
    assert (distilled.family, distilled.settings_family, distilled.is_flow) == ("flux2-klein", "flux2-klein", True)
    assert (base.family, base.settings_family) == ("flux2-klein", "flux2-klein-base")
    assert {k: distilled.recommended()[k] for k in ("steps", "cfg", "scheduler")} == {
        "steps": 4,
        "cfg": 0.0,
        "scheduler": "flow-euler",
    }
    assert (base.recommended()["steps"], base.recommended()["cfg"]) == (50, 4.0)
    # the tiny VAE's factor is 2 (FLUX.2's is 8: 8 x 128 = 1024 native, sizes in multiples of 16)
    assert (distilled.patch_size, distilled.native_size, size_multiple(distilled, "txt2img")) == (2, 256, 8)
    spec = families.get("flux2-klein")
    assert "img2img" not in spec.pipelines and not spec.takes("negative") and not spec.takes("cfg-cutoff")
    assert spec.takes("taylorseer") and not spec.takes("fbc") and not spec.takes("magcache")
    details = json.loads(cli("models", "info", str(klein_base), "--json").stdout)
    assert details["family"] == "flux2-klein" and details["recommended"]["cfg"] == 4.0
    # FLUX.2 [dev] is its own family; klein's single files are known before FLUX.1 claims their block names
    assert families.detect(families.Configs({"_class_name": "Flux2Pipeline"})) == "flux2-dev"
    assert families.detect_keys(["double_blocks.0.img_attn.qkv.weight", "single_stream_modulation.lin.weight"]) == (
        "flux2-klein"
    )
    assert families.detect_keys(["single_stream_modulation.lin.weight", "guidance_in.in_layer.weight"]) != (
        "flux2-klein"
    )
    aliases = families.aliases()
    assert aliases["flux2-klein-4b"].repo_id == "black-forest-labs/FLUX.2-klein-4B"
    assert not aliases["flux2-klein-4b"].gated and aliases["flux2-klein-9b"].gated
    assert aliases["flux2-klein-base-4b"].defaults["steps"] == 50


def test_txt2img_matches_plain_diffusers_and_replays(klein, tmp_path):
    """The base model guides (--cfg: CFG against the empty prompt; its pipelines take no negative prompt, so
    --negative is ignored with a warning and changes nothing); the distilled one runs one pass per step."""
    model, cfg = klein
    args = ["castle at dusk", "-m", model, "--seed", "11", "--steps", "2", "--cfg", str(cfg), "--negative", "red"]
    r = cli("txt2img", *args, "-o", tmp_path / "a", *[a for a in FAST if a != "--quiet"])
    assert r.exit_code == 0, r.stderr
    assert "takes no negative prompt; --negative is ignored" in r.stderr
    out = written(r)[0]
    record = json.loads(Image.open(out).info["diffcli"])
    assert record["job"]["scheduler"] == "flow-euler" and record["job"]["cfg"] == cfg
    plain = _plain(
        model,
        "txt2img",
        prompt="castle at dusk",
        num_inference_steps=2,
        guidance_scale=cfg,
        width=32,
        height=32,
        seed=11,
    )
    assert np.array_equal(pixels(out), plain)
    again = cli("txt2img", "--from", out, "-o", tmp_path / "b", "--quiet")
    assert again.exit_code == 0, again.stderr
    assert np.array_equal(pixels(out), pixels(written(again)[0]))


def test_inpaint_matches_plain_diffusers_inside_the_mask(klein, tmp_path):
    model, cfg = klein
    src = _input(tmp_path / "in.png")
    mask = np.zeros((32, 32), dtype=np.uint8)
    mask[:, 16:] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    args = ["--mask", tmp_path / "mask.png", "-m", model, "--seed", "2", "--steps", "2", "--cfg", str(cfg)]
    r = cli("inpaint", src, "a red door", *args, "--mask-blur", "0", "-o", tmp_path / "out", *FAST)
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
        guidance_scale=cfg,
        seed=2,
        width=32,
        height=32,
    )
    assert np.array_equal(out[:, :16], before[:, :16])  # outside the mask: the original, exactly
    assert np.array_equal(out[:, 16:], plain[:, 16:])


def test_a_batch_line_makes_the_commands_pixels(klein_base, tmp_path):
    from diffcli.pipelines import release_models

    line = {"prompt": "red house", "seed": 5, "cfg": 2.5, "steps": 2, "width": 32, "height": 32}
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(json.dumps(line) + "\n")
    release_models()
    b = cli("batch", jobs, "-m", klein_base, "--dtype", "float32", "-o", tmp_path / "b", "--json")
    assert b.exit_code == 0, b.stderr
    made = [json.loads(x)["path"] for x in b.stdout.splitlines()]
    one = cli(
        "txt2img", "red house", "--seed", "5", "--cfg", "2.5", "--steps", "2", "-m", klein_base, "-o", tmp_path, *FAST
    )
    assert one.exit_code == 0, one.stderr
    assert len(made) == 1 and np.array_equal(pixels(made[0]), pixels(written(one)[0]))


def test_img2img_is_refused_in_one_line(tiny_flux2_klein, tmp_path):
    """klein's `image` argument is reference images, not a starting point: no img2img pipeline (exit 2)."""
    src = _input(tmp_path / "in.png")
    r = cli("img2img", src, "watercolor", "-m", tiny_flux2_klein, "--steps", "2", "-o", tmp_path, *FAST)
    assert r.exit_code == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "cannot do img2img: FLUX.2 [klein] models have no img2img pipeline (they do txt2img, inpaint;" in r.stderr
    assert "`diffcli edit` edits an image with them)" in r.stderr
    from diffcli.errors import UsageError
    from diffcli.flags import build_options
    from diffcli.jobs import Job
    from diffcli.progress import Reporter
    from diffcli.run import prepare

    job = Job(task="img2img", prompt="watercolor", image=str(src), model=str(tiny_flux2_klein))
    with pytest.raises(UsageError, match="no img2img pipeline"):  # refused before anything loads
        prepare(job, build_options({"out": str(tmp_path / "p")}), Reporter())


def test_a_transformer_file_is_recognised_and_runs_with_its_base(tiny_flux2_klein, tmp_path):
    """A single .safetensors transformer (diffusers' key layout) is known by its tensor names (asked before
    FLUX.1's) and, with --base, draws what plain diffusers draws with that transformer."""
    import diffusers
    import torch

    from diffcli.models.checkpoint_info import detect_family

    from tiny_flow_models import write_transformer_files

    files = write_transformer_files(tiny_flux2_klein, tmp_path / "files")
    assert detect_family(files["safetensors"]) == "flux2-klein"
    args = ["castle at dusk", "-m", files["safetensors"], "--base", tiny_flux2_klein, "--seed", "4", "--steps", "2"]
    r = cli("txt2img", *args, "-o", tmp_path / "o", *FAST)
    assert r.exit_code == 0, r.stderr
    transformer = diffusers.Flux2Transformer2DModel.from_pretrained(files["folder"], torch_dtype=torch.float32)
    pipe = diffusers.DiffusionPipeline.from_pretrained(
        str(tiny_flux2_klein), transformer=transformer, torch_dtype=torch.float32
    )
    pipe.set_progress_bar_config(disable=True)
    plain = pipe(
        prompt="castle at dusk",
        num_inference_steps=2,
        width=32,
        height=32,
        generator=torch.Generator("cpu").manual_seed(4),
    ).images[0]
    assert np.array_equal(pixels(written(r)[0]), np.asarray(plain, dtype=np.int16))


def test_an_edit_conditions_on_the_input_image_as_plain_diffusers_does(tiny_flux2_klein, tmp_path):
    """`diffcli edit` runs Flux2KleinPipeline with the input image as its conditioning image (the pipeline
    takes images of at least 64 pixels a side), and -r reference images beside it; --mask has no klein edit
    pipeline, so it is refused."""
    rng = np.random.default_rng(1)
    source = tmp_path / "in.png"
    Image.fromarray(rng.integers(0, 255, (64, 72, 3), dtype=np.uint8)).save(source)
    r = cli(
        "edit", source, "make it red", "-m", tiny_flux2_klein, "--seed", "3", "--steps", "2", "-o", tmp_path, *FAST[:3]
    )
    assert r.exit_code == 0, r.stderr
    made = written(r)[0]
    assert json.loads(Image.open(made).info["diffcli"])["job"]["task"] == "edit"
    pipe = _plain_base(str(tiny_flux2_klein))
    plain = plain_edit(tiny_flux2_klein, [source], "make it red", 3, (72, 64), pipe=pipe, guidance_scale=0.0)
    assert np.array_equal(pixels(made), plain)
    masked = cli("edit", source, "make it red", "-m", tiny_flux2_klein, "--mask", source, "-o", tmp_path, *FAST[:3])
    assert masked.exit_code == 2 and "--mask does not apply" in masked.stderr, masked.stderr
    # -r: reference images beside the input, all in the pipeline's one `image` list (the input first)
    reference = tmp_path / "ref.png"
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(reference)
    args = ["--seed", "3", "--steps", "2", "-o", tmp_path / "r", *FAST[:3]]
    r = cli("edit", source, "make it red", "-m", tiny_flux2_klein, "-r", reference, *args)
    assert r.exit_code == 0, r.stderr
    # the same edit as a batch line: the command's pixels
    line = {"task": "edit", "image": str(source), "prompt": "make it red", "references": [str(reference)]}
    (tmp_path / "jobs.jsonl").write_text(json.dumps(line) + "\n")
    b = cli("batch", tmp_path / "jobs.jsonl", "-m", tiny_flux2_klein, "--seed", "3", "--steps", "2", "-o",
            tmp_path / "b", *FAST[:3])  # fmt: skip
    assert b.exit_code == 0, b.stderr
    assert np.array_equal(pixels(written(b)[0]), pixels(written(r)[0]))
    plain = plain_edit(tiny_flux2_klein, [source, reference], "make it red", 3, (72, 64), pipe=pipe, guidance_scale=0.0)
    assert np.array_equal(pixels(written(r)[0]), plain)
    assert not np.array_equal(pixels(written(r)[0]), pixels(made))  # the reference changed the edit
    four = cli("edit", source, "x", "-m", tiny_flux2_klein, *[a for _ in range(4) for a in ("-r", reference)], *args)
    assert four.exit_code == 2 and "takes at most 3 reference image(s)" in four.stderr, four.stderr


def test_taylorseer_is_plain_diffusers_with_the_same_hook(klein_base, tmp_path):
    """klein's pipelines set diffusers' cache context (cond / uncond): --cache taylorseer is diffusers'
    TaylorSeer hook; FirstBlockCache is refused before loading (diffusers' hook fails on FLUX.2's blocks)."""
    import torch
    from diffusers import DiffusionPipeline
    from diffusers.hooks import TaylorSeerCacheConfig

    args = ["castle at dusk", "-m", klein_base, "--steps", "6", "--cfg", "2.5", "--seed", "5"]
    cached = cli("txt2img", *args, "--cache", "taylorseer:3", "-o", tmp_path, *FAST)
    assert cached.exit_code == 0, cached.stderr
    pipe = DiffusionPipeline.from_pretrained(str(klein_base), torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    pipe.transformer.enable_cache(
        TaylorSeerCacheConfig(cache_interval=3, disable_cache_before_step=3, use_lite_mode=True)
    )
    expected = pipe(
        prompt="castle at dusk",
        guidance_scale=2.5,
        num_inference_steps=6,
        width=32,
        height=32,
        generator=torch.Generator("cpu").manual_seed(5),
    ).images[0]
    assert np.array_equal(pixels(written(cached)[0]), np.asarray(expected, dtype=np.int16))
    refused = cli("txt2img", *args, "--cache", "fbc", "-o", tmp_path, *FAST)
    assert refused.exit_code == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert "--cache fbc applies to" in refused.stderr and "FLUX.2 [klein]" in refused.stderr


def test_its_latents_decode_for_partial_saves_and_previews(tiny_flux2_klein):
    """--save-partial and the step previews decode the latents a step callback sees: FLUX.2's tokens of
    2x2-patchified, batch-normed latents; the last step's decode is the pipeline's own image."""
    import torch

    from diffcli.pipelines import decode_latents
    from diffcli.preview import preview_image

    pipe, seen = _plain_base(str(tiny_flux2_klein)), {}

    def keep(p, step, timestep, kwargs):
        seen["latents"] = kwargs["latents"]
        return {}

    image = pipe(
        prompt="red house",
        num_inference_steps=2,
        width=40,
        height=32,
        generator=torch.Generator("cpu").manual_seed(1),
        callback_on_step_end=keep,
    ).images[0]
    assert seen["latents"].ndim == 3  # (batch, tokens, channels)
    (decoded,) = decode_latents(pipe, seen["latents"], (40, 32))
    assert np.array_equal(np.asarray(decoded), np.asarray(image))
    assert preview_image(pipe, seen["latents"], (40, 32)).size == (40, 32)


@pytest.fixture(scope="module")
def klein_kv(tiny_flux2_klein, tmp_path_factory):
    """The tiny klein as a FLUX.2 [klein] KV model: the same components, its model_index.json naming
    Flux2KleinKVPipeline (as black-forest-labs/FLUX.2-klein-9b-kv's does)."""
    path = tmp_path_factory.mktemp("models") / "tiny-flux2-klein-kv"
    shutil.copytree(tiny_flux2_klein, path)
    index = json.loads((path / "model_index.json").read_text())
    (path / "model_index.json").write_text(json.dumps({**index, "_class_name": "Flux2KleinKVPipeline"}, indent=2))
    return path


def test_the_kv_model_makes_and_edits_as_its_own_pipeline(klein_kv, tmp_path):
    """FLUX.2 [klein] KV: its own family (4 steps, no guidance argument at all); txt2img and an edit with a
    reference image (by the command and a batch line) are Flux2KleinKVPipeline's pixels; img2img, inpaint and
    the step caches refused before loading."""
    import torch
    from diffusers import Flux2KleinKVPipeline

    from diffcli.models.layout import read_layout

    layout = read_layout(klein_kv)
    assert layout.family == "flux2-klein-kv" and layout.recommended()["steps"] == 4
    rng = np.random.default_rng(2)
    source, reference = tmp_path / "in.png", tmp_path / "ref.png"
    for path in (source, reference):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    for task, extra in (("img2img", [source]), ("inpaint", [source, "--mask", source])):
        r = cli(task, *extra[:1], "x", *extra[1:], "-m", klein_kv, "-o", tmp_path / "no", *FAST)
        assert r.exit_code == 2 and f"no {task} pipeline" in r.stderr and "diffcli edit" in r.stderr, r.stderr
    r = cli("txt2img", "x", "-m", klein_kv, "--cache", "taylorseer", "-o", tmp_path / "no", *FAST)
    assert r.exit_code == 2 and "--cache taylorseer" in r.stderr, r.stderr
    assert not (tmp_path / "no").exists()

    pipe = Flux2KleinKVPipeline.from_pretrained(str(klein_kv), dtype=torch.float32)
    t = cli("txt2img", "castle", "-m", klein_kv, "--seed", "3", "--steps", "2", "-o", tmp_path / "t", *FAST)
    assert t.exit_code == 0, t.stderr
    generator = torch.Generator("cpu").manual_seed(3)
    plain = pipe(prompt="castle", width=32, height=32, num_inference_steps=2, generator=generator).images[0]
    assert np.array_equal(pixels(written(t)[0]), np.asarray(plain, dtype=np.int16))
    args = ["-m", klein_kv, "-r", reference, "--seed", "3", "--steps", "2", *FAST[:3]]
    e = cli("edit", source, "make it red", *args, "-o", tmp_path / "e")
    assert e.exit_code == 0, e.stderr
    plain = plain_edit(klein_kv, [source, reference], "make it red", 3, (64, 64), pipe=pipe)
    assert np.array_equal(pixels(written(e)[0]), plain)
    line = {"task": "edit", "image": str(source), "prompt": "make it red", "references": [str(reference)]}
    (tmp_path / "jobs.jsonl").write_text(json.dumps(line) + "\n")
    b = cli("batch", tmp_path / "jobs.jsonl", *args[:2], *args[4:], "-o", tmp_path / "b")
    assert b.exit_code == 0, b.stderr
    assert np.array_equal(pixels(written(b)[0]), plain)
