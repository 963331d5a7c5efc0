"""`diffcli upscale`: tile grids, seamless blending, every method end to end on tiny models, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import cli, pixels, subprocess_cli, written

FAST = ["--dtype", "float32", "--seed", "3"]


def smooth_image(path: Path, w: int, h: int) -> Path:
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    arr = np.stack([40 + 3 * x, 30 + 4 * y, 200 - 1.5 * (x + y)], axis=-1)
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB").save(path)
    return path


def record_of(path: Path) -> dict:
    with Image.open(path) as img:
        return json.loads(img.info["diffcli"])


def assert_usage_error(result, out_dir: Path, fragment: str) -> None:
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("diffcli: error: ") and fragment in lines[0], result.stderr
    assert not out_dir.exists() or not any(out_dir.iterdir())


# ---------------------------------------------------------------- grids and blending (no model)
@pytest.mark.parametrize(
    "length,tile,overlap",
    [(10, 32, 8), (32, 32, 8), (33, 32, 8), (100, 32, 8), (97, 16, 15), (2048, 64, 16), (4096, 512, 64), (70, 32, 0)],
)
def test_axis_plan_covers_every_pixel_with_at_least_the_overlap(length, tile, overlap):
    from diffcli.upscale.tiles import plan_axis

    starts = plan_axis(length, tile, overlap)
    assert starts[0] == 0
    if length >= tile:
        assert starts[-1] == length - tile
        assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:]))
    covered = np.zeros(length, bool)
    for s in starts:
        covered[s : s + tile] = True
    assert covered.all()


def test_weights_form_a_partition_of_unity():
    from diffcli.upscale.tiles import BandBlender, plan_grid, tile_weights

    grid = plan_grid(90, 70, 32, 10)
    blender = BandBlender(90, 70, grid.tile_h)
    total = np.zeros((70, 90))
    for t in grid.tiles():
        wts = tile_weights(t)
        blender.add(t.x, t.y, np.full((t.h, t.w, 3), 0.5, np.float32), wts)
        total[t.y : t.y + t.h, t.x : t.x + t.w] += wts
    assert np.allclose(total, 1.0, atol=1e-5)  # neighbours' ramps sum to 1: no renormalisation needed
    assert np.all(np.asarray(blender.finish()) == 128)


def test_lowpass_fidelity_keeps_detail_and_takes_colours_from_the_input():
    from diffcli.upscale.tiles import gaussian_blur, keep_low_frequencies

    rng = np.random.default_rng(0)
    reference = gaussian_blur(rng.random((40, 48, 3), dtype=np.float32), 3.0) * 0.5 + 0.25
    detail = (rng.random((40, 48, 3), dtype=np.float32) - 0.5) * 0.1
    shifted = reference + detail + np.array([0.1, -0.05, 0.08], np.float32)  # a tile-wise colour drift
    fixed = keep_low_frequencies(shifted, reference, sigma=2.0)
    assert np.abs(gaussian_blur(fixed - reference, 2.0)).mean() < 0.01  # the drift is gone
    assert np.abs(fixed - (reference + detail - gaussian_blur(detail, 2.0))).max() < 1e-5  # the detail is kept


def _tiled_plan(src_path: Path, scale: int, tile: int, overlap: int):
    from diffcli.images import load_rgb
    from diffcli.upscale.task import Plan
    from diffcli.upscale.tiles import plan_grid

    src = load_rgb(src_path)
    out = (src.width * scale, src.height * scale)
    return Plan(
        method="tiled",
        kind="img2img",
        source=src,
        source_path=src_path,
        scale=scale,
        out_size=out,
        seed=0,
        grid=plan_grid(out[0], out[1], tile, overlap),
        unit=1,
        tile_size=tile,
        overlap=overlap,
        steps=1,
        steps_per_tile=1,
        fidelity="none",
    )


def _max_grad(arr: np.ndarray, cols: list[int]) -> float:
    dx = np.abs(np.diff(arr.astype(np.float64), axis=1))  # dx[:, c-1] = arr[:, c] - arr[:, c-1]
    return float(dx[:, [c - 1 for c in cols]].max())


@pytest.mark.parametrize("fidelity", ["none", "backproject", "lowpass"])
def test_no_visible_seam_when_tiles_disagree(tmp_path, fidelity):
    """Each tile comes back a few levels brighter or darker (as independent diffusion tiles do): blended,
    the gradient across tile borders is no larger than elsewhere; pasted without blending, it is."""
    from diffcli.progress import Reporter
    from diffcli.upscale.task import run_tiles

    src = smooth_image(tmp_path / "in.png", 40, 30)
    plan = _tiled_plan(src, 2, 32, 16)
    plan.fidelity = fidelity
    offsets = [(-1) ** i * 3.0 / 255 for i in range(plan.grid.count)]

    def disagreeing(tile, image, generator, tick):
        tick()
        return np.clip(np.asarray(image, np.float32) / 255 + offsets[tile.index], 0, 1)

    out = np.asarray(run_tiles(None, plan, Reporter(), process=disagreeing))
    borders = sorted({t.x for t in plan.grid.tiles() if t.x} | {t.x + t.w for t in plan.grid.tiles() if t.x + t.w < 80})
    elsewhere = [c for c in range(1, 80) if c not in borders]
    assert _max_grad(out, borders) <= _max_grad(out, elsewhere) + 1

    naive = np.zeros_like(out)  # the same tiles pasted one over the other: a visible step
    for t in plan.grid.tiles():
        img = np.asarray(Image.open(src).convert("RGB").resize((80, 60), Image.LANCZOS), np.float32) / 255
        naive[t.y : t.y + t.h, t.x : t.x + t.w] = (
            np.clip(img[t.y : t.y + t.h, t.x : t.x + t.w] + offsets[t.index], 0, 1) * 255
        )
    assert _max_grad(naive, borders) > _max_grad(naive, elsewhere) + 1


def test_identity_tiles_reassemble_the_lanczos_image(tmp_path):
    from diffcli.progress import Reporter
    from diffcli.upscale.task import run_tiles

    src = smooth_image(tmp_path / "in.png", 37, 23)
    plan = _tiled_plan(src, 3, 32, 8)
    out = run_tiles(None, plan, Reporter(), process=lambda t, img, g, tick: np.asarray(img, np.float32) / 255)
    full = Image.open(src).convert("RGB").resize((111, 69), Image.LANCZOS)
    assert out.size == (111, 69)
    assert np.abs(pixels_of(out) - pixels_of(full)).max() <= 1


def test_backproject_makes_tiles_consistent_with_the_input(tmp_path):
    """Downsampled back to the input size, a back-projected result matches the input better than lanczos."""
    from dataclasses import replace

    from diffcli.bundled.scenes import render, sample_scene
    from diffcli.progress import Reporter
    from diffcli.upscale.task import run_tiles

    src = tmp_path / "scene.png"
    render(sample_scene(5), 24).save(src)
    plan = _tiled_plan(src, 2, 32, 8)
    identity = lambda t, img, g, tick: np.asarray(img, np.float32) / 255  # noqa: E731
    plain = run_tiles(None, plan, Reporter(), process=identity)
    fixed = run_tiles(None, replace(plan, fidelity="backproject"), Reporter(), process=identity)
    small = pixels_of(Image.open(src).convert("RGB"))

    def error(img):
        return np.abs(pixels_of(img.resize((24, 24), Image.LANCZOS)) - small).mean()

    assert fixed.size == (48, 48) and error(fixed) < 0.6 * error(plain)


def pixels_of(img) -> np.ndarray:
    return np.asarray(img, dtype=np.int16)


# ---------------------------------------------------------------- methods end to end
def test_lanczos_exact_size_and_pixels(tmp_path):
    src = smooth_image(tmp_path / "in.png", 37, 21)
    r = cli("upscale", src, "--method", "lanczos", "--scale", "3", "-o", tmp_path / "out", "--quiet")
    assert r.exit_code == 0, r.stderr
    [path] = written(r)
    expected = Image.open(src).convert("RGB").resize((111, 63), Image.LANCZOS)
    assert np.array_equal(pixels(path), pixels_of(expected))
    rec = record_of(path)
    assert rec["job"]["task"] == "upscale" and rec["upscale"]["method"] == "lanczos" and rec["upscale"]["scale"] == 3
    assert rec["upscale"]["source"]["width"] == 37 and rec["upscale"]["source"]["path"] == str(src.resolve())


def test_prompt_defaults_to_the_one_recorded_in_the_input(tmp_path):
    from diffcli.metadata import build_record, pil_save_kwargs

    src = tmp_path / "made.png"
    record = build_record({"task": "txt2img", "prompt": "castle at dusk", "seed": 1}, {}, "cpu", "float32")
    Image.new("RGB", (16, 16), (10, 20, 30)).save(src, **pil_save_kwargs("png", record))
    r = cli("upscale", src, "--method", "lanczos", "-o", tmp_path / "out", "--json", "--quiet")
    assert r.exit_code == 0, r.stderr
    line = json.loads(r.stdout)
    assert (line["width"], line["height"], line["method"], line["scale"]) == (32, 32, "lanczos", 2)
    assert record_of(Path(line["path"]))["job"]["prompt"] == "castle at dusk"


def test_auto_falls_back_to_lanczos_when_the_bundled_model_is_missing(tmp_path, monkeypatch):
    import diffcli.bundled

    monkeypatch.setattr(diffcli.bundled, "MODEL_DIR", tmp_path / "not-installed")
    src = smooth_image(tmp_path / "in.png", 10, 6)
    r = cli("upscale", src, "-o", tmp_path / "out", "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["method"] == "lanczos"
    warnings = [json.loads(x)["message"] for x in r.stderr.splitlines() if '"warning"' in x]
    assert warnings == ["the bundled model is not installed; falling back to --method lanczos"]


def test_tiled_with_tiny_sd_reports_tiles_times_steps(tiny_sd, tmp_path):
    src = smooth_image(tmp_path / "in.png", 40, 24)
    out = tmp_path / "out"
    r = cli(
        "upscale",
        src,
        "-m",
        tiny_sd,
        "--scale",
        "2",
        "--method",
        "tiled",
        "--prompt",
        "red castle",
        "--steps",
        "4",
        "--strength",
        "0.5",
        "--tile-size",
        "32",
        "--overlap",
        "8",
        "--fidelity",
        "lowpass",
        "--json",
        "-o",
        out,
        *FAST,
    )
    assert r.exit_code == 0, r.stderr
    [line] = [json.loads(x) for x in r.stdout.splitlines()]
    assert (line["width"], line["height"], line["method"]) == (80, 48, "tiled")
    assert Image.open(line["path"]).size == (80, 48)
    rec = record_of(Path(line["path"]))
    up = rec["upscale"]
    assert (up["tile_size"], up["overlap"], up["tiles"], up["grid"], up["strength"]) == (32, 8, 6, [3, 2], 0.5)
    assert up["fidelity"] == "lowpass" and up["source"]["width"] == 40
    assert rec["job"]["prompt"] == "red castle" and rec["model"]["hash"]
    events = [json.loads(x) for x in r.stderr.splitlines()]
    assert events[0] == {**events[0], "event": "start", "task": "upscale", "steps": 12}  # 6 tiles x 2 steps
    steps = [e["step"] for e in events if e["event"] == "step"]
    assert steps == list(range(1, 13)) and {e["steps"] for e in events if e["event"] == "step"} == {12}
    assert [e["tile"] for e in events if e.get("phase") == "denoise"] == list(range(1, 7))
    assert sorted(p.name for p in out.iterdir()) == [Path(line["path"]).name]  # no temp files left


def test_tiled_is_reproducible_and_the_default_for_text_to_image_models(tiny_sd, tmp_path):
    src = smooth_image(tmp_path / "in.png", 20, 12)
    args = ["--steps", "2", "--strength", "0.5", "--tile-size", "32", "--quiet", *FAST]
    a = written(cli("upscale", src, "-m", tiny_sd, "-o", tmp_path / "a", *args))[0]
    b = written(cli("upscale", src, "-m", tiny_sd, "-o", tmp_path / "b", *args))[0]
    assert Image.open(a).size == (40, 24)
    assert np.array_equal(pixels(a), pixels(b))
    assert record_of(a)["upscale"]["method"] == "tiled"


def test_tiled_takes_a_timestep_shift_from_the_flag_or_the_model(tiny_sd, tmp_path):
    """--shift moves each tile's steps as it moves txt2img's (diffcli.timesteps); a model's diffcli.json
    may set it, and it is recorded."""
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_sd, model)
    src = smooth_image(tmp_path / "in.png", 20, 12)
    args = [
        "upscale",
        src,
        "-m",
        model,
        "--steps",
        "6",
        "--strength",
        "0.5",
        "--scheduler",
        "euler",
        "--tile-size",
        "32",
        "--quiet",
        *FAST,
    ]
    plain = written(cli(*args, "-o", tmp_path / "plain"))[0]
    given = written(cli(*args, "--shift", "0.5", "-o", tmp_path / "given"))[0]
    (model / "diffcli.json").write_text(json.dumps({"shift": 0.5}))
    own = written(cli(*args, "-o", tmp_path / "own"))[0]
    assert not np.array_equal(pixels(plain), pixels(given)) and np.array_equal(pixels(given), pixels(own))
    assert record_of(own)["job"]["shift"] == 0.5 and record_of(plain)["job"]["shift"] == 1.0
    (model / "diffcli.json").write_text(json.dumps({"shift": 0}))
    out = tmp_path / "bad"
    assert_usage_error(cli(*args, "-o", out), out, "diffcli.json: shift must be in (0, 10]")


def test_a_few_step_models_own_steps_are_raised_until_a_tile_gets_one(tiny_sd, tmp_path):
    """A model whose diffcli.json asks for few steps (a distilled student) still upscales at a low
    strength: the default steps grow until int(steps x strength) >= 1; a given --steps is an error."""
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_sd, model)
    (model / "diffcli.json").write_text(json.dumps({"steps": 2}))
    src = smooth_image(tmp_path / "in.png", 16, 16)
    args = ["upscale", src, "-m", model, "--strength", "0.3", "--tile-size", "32", "--quiet", *FAST]
    [path] = written(cli(*args, "-o", tmp_path / "ok"))
    assert record_of(path)["job"]["steps"] == 4  # 2 x 0.3 runs no step, 4 x 0.3 runs one
    out = tmp_path / "bad"
    assert_usage_error(cli(*args, "--steps", "2", "-o", out), out, "use --steps 4 or more")


def test_x4_upscaler_model_in_tiles(tiny_x4, tmp_path):
    src = smooth_image(tmp_path / "in.png", 22, 12)  # not a multiple of the 16-px input tile
    r = cli(
        "upscale", src, "-m", tiny_x4, "--steps", "2", "--noise-level", "30", "-o", tmp_path / "out", "--quiet", *FAST
    )
    assert r.exit_code == 0, r.stderr
    [path] = written(r)
    assert Image.open(path).size == (88, 48)
    up = record_of(path)["upscale"]
    assert (up["method"], up["scale"], up["pipeline"], up["noise_level"]) == (
        "model",
        4,
        "StableDiffusionUpscalePipeline",
        30,
    )
    assert (up["tile_space"], up["tile_size"], up["tiles"], up["fidelity"]) == ("input", 16, 2, "backproject")


def test_latent_x2_upscaler_model(tiny_latent_x2, tmp_path):
    src = smooth_image(tmp_path / "in.png", 24, 16)
    r = cli(
        "upscale",
        src,
        "-m",
        tiny_latent_x2,
        "--scale",
        "2",
        "--steps",
        "2",
        "--tile-size",
        "16",
        "--overlap",
        "4",
        "-o",
        tmp_path / "out",
        "--quiet",
        *FAST,
    )
    assert r.exit_code == 0, r.stderr
    [path] = written(r)
    assert Image.open(path).size == (48, 32)
    up = record_of(path)["upscale"]
    assert (up["method"], up["scale"], up["pipeline"], up["tiles"]) == (
        "model",
        2,
        "StableDiffusionLatentUpscalePipeline",
        2,
    )


# ---------------------------------------------------------------- bad input: exit 2, nothing written
def test_scale_the_model_cannot_do(tiny_x4, tiny_latent_x2, tmp_path):
    src = smooth_image(tmp_path / "in.png", 16, 16)
    out = tmp_path / "out"
    assert_usage_error(cli("upscale", src, "-m", tiny_x4, "--scale", "2", "-o", out), out, "x4 only")
    assert_usage_error(cli("upscale", src, "-m", tiny_latent_x2, "--scale", "4", "-o", out), out, "x2 only")
    assert_usage_error(cli("upscale", src, "-m", tiny_x4, "--noise-level", "400", "-o", out), out, "at most 350")
    assert_usage_error(cli("upscale", src, "-m", tiny_x4, "--method", "tiled", "-o", out), out, "is an upscaler")
    assert_usage_error(cli("upscale", src, "-m", tiny_x4, "--strength", "0.3", "-o", out), out, "--method tiled only")
    assert_usage_error(
        cli("upscale", src, "-m", tiny_x4, "--shift", "0.5", "-o", out), out, "--shift applies to --method tiled only"
    )
    assert_usage_error(
        cli("upscale", src, "-m", tiny_latent_x2, "--scheduler", "ddim", "-o", out), out, "sigma-based sampler"
    )


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--scale", "4", "--max-pixels", "10000"], "over the limit of 10000"),
        (["--tile-size", "31"], "multiple of its VAE factor 2"),
        (["--tile-size", "32", "--overlap", "32"], "smaller than --tile-size"),
        (["--tile-size", "8", "--overlap", "9"], "smaller than --tile-size 8"),
        (["--scale", "1"], "--scale must be between 2"),
        (["--method", "magic"], "unknown --method"),
        (["--method", "model"], "is not an upscaler model"),
        (["--steps", "2", "--strength", "0.3"], "runs no denoising step"),
        (["--overlap", "-1"], "--overlap must be 0 or more"),
        (["--fidelity", "sepia"], "unknown --fidelity"),
        (["--shift", "0"], "--shift must be in (0, 10]"),
        (["--shift", "0.5", "--scheduler", "ddim"], "cannot take custom timesteps"),
    ],
)
def test_bad_flags_exit_2_and_write_nothing(tiny_sd, tmp_path, args, fragment):
    src = smooth_image(tmp_path / "in.png", 30, 30)
    out = tmp_path / "out"
    assert_usage_error(cli("upscale", src, "-m", tiny_sd, "-o", out, *args), out, fragment)


def test_bad_input_and_existing_output(tmp_path):
    out = tmp_path / "out"
    assert_usage_error(cli("upscale", tmp_path / "missing.png", "--method", "lanczos", "-o", out), out, "no such file")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    assert_usage_error(cli("upscale", tmp_path / "bad.png", "--method", "lanczos", "-o", out), out, "not an image")
    src = smooth_image(tmp_path / "in.png", 8, 8)
    out.mkdir()
    (out / "x.png").write_bytes(b"keep")
    r = cli("upscale", src, "--method", "lanczos", "-o", out / "x.png")
    assert r.exit_code == 2 and "already exists" in r.stderr and (out / "x.png").read_bytes() == b"keep"
    r = cli("upscale", src, "--method", "lanczos", "-o", out / "x.png", "--overwrite", "--quiet")
    assert r.exit_code == 0 and Image.open(out / "x.png").size == (16, 16)


def test_subprocess_prints_only_the_path(tmp_path):
    src = smooth_image(tmp_path / "in.png", 20, 10)
    proc = subprocess_cli("upscale", src, "--method", "lanczos", "--scale", "4", "-o", tmp_path / "out", timeout=120)
    assert proc.returncode == 0, proc.stderr
    [line] = proc.stdout.splitlines()
    assert Path(line).parent == tmp_path / "out" and Image.open(line).size == (80, 40)
    assert not any(p.name.startswith(".") for p in (tmp_path / "out").iterdir())


def test_an_editing_model_is_refused_for_tiled_upscaling_before_it_loads(tmp_path):
    image = tmp_path / "in.png"
    Image.new("RGB", (32, 32), "blue").save(image)
    r = cli("upscale", image, "-m", "tiny-edit", "-o", tmp_path / "o/", "--json")
    assert r.exit_code == 2 and r.stdout == "", r.stderr
    assert "tiny-edit: is an instruction-editing model; --method tiled needs a text-to-image model" in r.stderr
    assert '"phase": "load"' not in r.stderr and not (tmp_path / "o").exists()
