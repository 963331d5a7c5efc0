"""diffcli outpaint: the canvas plan (--extend, --to, --anchor), its errors, and the command end to end on
the bundled model: original pixels unchanged, --from replays, a batch line makes the same image."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from diffcli.errors import UsageError
from diffcli.outpaint import plan, prepare

from helpers import cli, heavy_imports, pixels, written

FAST = ["--steps", "2", "--dtype", "float32", "--no-server"]


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A 64x64 render of a bundled-domain scene (what the bundled model knows)."""
    from diffcli.bundled import scenes

    path = tmp_path_factory.mktemp("scene") / "scene.png"
    scenes.render(scenes.sample_scene(random.Random(3)), 64).save(path)
    return path


@pytest.mark.parametrize(
    "extend, size, sides",
    [
        ("16", (64, 64), (16, 16, 16, 16)),
        ("16,0,8,0", (64, 48), (16, 0, 8, 0)),
        ("25%", (64, 64), (16, 16, 16, 16)),
        ("25%", (100, 60), (26, 18, 26, 18)),  # 25 and 15 px a side make 150x90: rounded up to 152x96
        ("10%,0,0,0", (60, 64), (12, 0, 0, 0)),  # 6 px would make 66: rounded up to 72
    ],
)
def test_extend_adds_those_pixels_and_fits_the_size_rule(extend, size, sides):
    canvas = plan(size, extend, None, None, None, 8)
    assert (canvas.left, canvas.top, canvas.right, canvas.bottom) == sides
    assert canvas.width % 8 == 0 and canvas.height % 8 == 0
    assert canvas.extend == ",".join(map(str, sides))


@pytest.mark.parametrize(
    "anchor, where",
    [
        (None, (16, 8)),
        ("center", (16, 8)),
        ("top-left", (0, 0)),
        ("bottom-right", (32, 16)),
        ("left", (0, 8)),
        ("top", (16, 0)),
    ],
)
def test_to_places_the_image_by_its_anchor(anchor, where):
    canvas = plan((64, 48), None, 96, 64, anchor, 8)
    assert (canvas.width, canvas.height) == (96, 64)
    assert (canvas.left, canvas.top) == where


@pytest.mark.parametrize(
    "extend, width, height, anchor, needle",
    [
        ("10,0,10,0", None, None, None, "not a multiple of 8"),
        ("16", 128, None, None, "not both"),
        (None, 32, 64, None, "smaller than"),
        (None, 64, 64, None, "nothing to add"),
    ],
)
def test_plan_refuses_canvases_it_cannot_make(extend, width, height, anchor, needle):
    with pytest.raises(UsageError, match=needle):
        plan((64, 64), extend, width, height, anchor, 8)


def test_the_canvas_keeps_the_original_and_masks_exactly_the_new_area(scene):
    original = Image.open(scene).convert("RGB")
    canvas = plan(original.size, "8,16,24,0", None, None, None, 8)
    before = np.asarray(original)
    fills = {}
    for fill in ("edge", "blur", "noise"):
        image, mask = prepare(original, canvas, fill)
        a, m = np.asarray(image), np.asarray(mask)
        assert image.size == mask.size == (96, 80)
        assert np.array_equal(a[16:80, 8:72], before)
        assert (m[16:80, 8:72] == 0).all() and (m == 255).sum() == 96 * 80 - 64 * 64
        fills[fill] = a
    assert np.array_equal(fills["edge"][16:80, :8], np.repeat(before[:, :1], 8, axis=1))  # edge: the border column
    assert not np.array_equal(fills["edge"], fills["blur"]) and not np.array_equal(fills["blur"], fills["noise"])


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--extend", "3x"], "invalid --extend '3x'"),
        (["--extend", "1,2"], "L,T,R,B"),
        (["--extend", "12,0,10,0"], "not a multiple of 8"),
        (["--to", "128"], "invalid --to '128'"),
        (["--to", "96x64", "--anchor", "middle"], "invalid --anchor 'middle'"),
        (["--to", "96x64", "--extend", "16"], "not both"),
        (["--extend", "16", "--anchor", "left"], "--anchor places"),
        (["--extend", "16", "--fill", "sky"], "invalid --fill 'sky'"),
        ([], "needs --extend"),
    ],
)
def test_bad_flags_are_one_line_usage_errors(scene, tmp_path, args, needle):
    r = cli("outpaint", scene, *args, "-o", tmp_path / "o", *FAST)
    assert r.exit_code == 2, r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("diffcli: error: ") and needle in r.stderr, r.stderr
    assert not (tmp_path / "o").exists()


def test_a_bad_extend_fails_without_importing_torch(scene, tmp_path):
    p = heavy_imports("outpaint", str(scene), "--extend", "5%,x", "-o", str(tmp_path), "--no-server")
    assert "invalid --extend" in p.stderr and p.stderr.splitlines()[-1] == "HEAVY=", p.stderr


def _record(path) -> tuple[str, dict]:
    with Image.open(path) as img:
        return img.info["parameters"], json.loads(img.info["diffcli"])


@pytest.fixture(scope="module")
def outpainted(scene, tmp_path_factory):
    """`diffcli outpaint scene.png "day, sand" --extend 16,0,16,0 --seed 4` on the bundled model."""
    r = cli(
        "outpaint",
        scene,
        "day, sand",
        "--extend",
        "16,0,16,0",
        "--seed",
        "4",
        "-o",
        tmp_path_factory.mktemp("outpaint"),
        "-q",
        *FAST,
    )
    assert r.exit_code == 0, r.stderr
    return written(r)[0]


def test_outpaint_keeps_every_original_pixel_and_records_the_canvas(scene, outpainted):
    out, before = pixels(outpainted), pixels(scene)
    assert out.shape == (64, 96, 3)
    assert np.abs(out[:, 16:80] - before).max() == 0  # the original, exactly
    assert np.abs(out[:, :16] - before[:, :1]).mean() > 3  # the new area was painted, not left as the fill
    params, record = _record(outpainted)
    assert record["job"]["task"] == "outpaint" and record["job"]["extend"] == "16,0,16,0"
    assert record["job"]["fill"] == "blur" and (record["job"]["width"], record["job"]["height"]) == (96, 64)
    assert record["job"]["inpaint_model"] == "off"  # the bundled family has no inpainting model: painted with the mask
    assert 'Outpaint extend: "16,0,16,0"' in params and "Size: 96x64" in params


def test_from_replays_it_and_a_new_canvas_replaces_the_recorded_one(scene, outpainted, tmp_path):
    again = written(cli("outpaint", "--from", outpainted, "-o", tmp_path / "b", "-q", "--no-server"))[0]
    assert np.array_equal(pixels(again), pixels(outpainted))
    # a new --to canvas replaces the recorded --extend; the rest of the job stays
    moved = written(
        cli(
            "outpaint",
            "--from",
            outpainted,
            "--to",
            "80x72",
            "--anchor",
            "bottom-right",
            "-o",
            tmp_path / "c",
            "-q",
            "--no-server",
        )
    )[0]
    shifted = pixels(moved)
    assert shifted.shape == (72, 80, 3) and np.abs(shifted[8:, 16:] - pixels(scene)).max() == 0
    assert _record(moved)[1]["job"]["extend"] == "16,8,0,0" and _record(moved)[1]["job"]["seed"] == 4


def test_a_batch_line_makes_the_image_the_command_makes(scene, outpainted, tmp_path):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(
        json.dumps(
            {
                "task": "outpaint",
                "image": str(scene),
                "prompt": "day, sand",
                "extend": "16,0,16,0",
                "seed": 4,
                "steps": 2,
            }
        )
        + "\n"
        + json.dumps({"task": "outpaint", "image": str(scene), "extend": 8, "seed": 1, "steps": 2})
        + "\n"
    )
    b = cli("batch", jobs, "--dtype", "float32", "-o", tmp_path / "b", "--json")
    assert b.exit_code == 0, b.stderr
    first, second = [json.loads(line)["path"] for line in b.stdout.splitlines()]
    assert np.array_equal(pixels(first), pixels(outpainted))
    assert pixels(second).shape == (80, 80, 3) and np.abs(pixels(second)[8:72, 8:72] - pixels(scene)).max() == 0


def test_the_familys_inpainting_model_paints_when_it_is_here(tiny_sd, tiny_inpaint, tmp_path, isolated_home):
    import shutil

    repo = "stable-diffusion-v1-5/stable-diffusion-inpainting"  # the sd1 family's, here as the tiny 9-channel model
    cached = isolated_home / "hf" / "hub" / "models--stable-diffusion-v1-5--stable-diffusion-inpainting"
    shutil.copytree(tiny_inpaint, cached / "snapshots" / ("b" * 40))
    (cached / "refs").mkdir()
    (cached / "refs" / "main").write_text("b" * 40)
    src = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(src)
    r = cli(
        "outpaint",
        src,
        "castle",
        "--extend",
        "8,0,8,0",
        "-m",
        tiny_sd,
        "--seed",
        "2",
        "--json",
        "-o",
        tmp_path / "a",
        *FAST,
    )
    assert r.exit_code == 0, r.stderr
    line = json.loads(r.stdout)
    assert line["model"] == repo and line["inpaint_model"] == "on"
    infos = [json.loads(e)["message"] for e in r.stderr.splitlines() if '"event": "info"' in e]
    assert len(infos) == 1 and repo in infos[0] and "--inpaint-model off" in infos[0]
    out = pixels(line["path"])
    assert out.shape == (32, 48, 3) and np.abs(out[:, 8:40] - pixels(src)).max() == 0  # the original, exactly
    assert _record(line["path"])[1]["job"]["model"] == repo
    again = written(cli("outpaint", "--from", line["path"], "-o", tmp_path / "b", "-q", "--no-server"))[0]
    assert np.array_equal(pixels(again), out)
    # an image recorded before outpaint could switch model (no `inpaint_model` in its record) was painted by
    # its recorded model: replayed here, where the family's inpainting model now is, it keeps that model
    made = written(
        cli(
            "outpaint",
            src,
            "castle",
            "--extend",
            "8,0,8,0",
            "-m",
            tiny_sd,
            "--seed",
            "2",
            "--inpaint-model",
            "off",
            "-o",
            tmp_path / "c",
            "-q",
            *FAST,
        )
    )[0]
    params, record = _record(made)
    del record["job"]["inpaint_model"]
    old = tmp_path / "old.png"
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", params)
    info.add_text("diffcli", json.dumps(record))
    Image.open(made).save(old, pnginfo=info)
    replayed = written(cli("outpaint", "--from", old, "-o", tmp_path / "d", "-q", "--no-server"))[0]
    assert np.array_equal(pixels(replayed), pixels(made))
    assert (
        _record(replayed)[1]["job"]["model"] == str(tiny_sd) and _record(replayed)[1]["job"]["inpaint_model"] == "off"
    )
    # an inpainting --model paints itself; `off` cannot make it paint "with the mask"
    own = cli("outpaint", src, "--extend", "8", "-m", tiny_inpaint, "--inpaint-model", "off", *FAST)
    assert own.exit_code == 2 and "is itself an inpainting model" in own.stderr, own.stderr


def test_inpaint_model_on_needs_one_here(scene, tmp_path):
    r = cli("outpaint", scene, "--extend", "8", "--inpaint-model", "on", "-o", tmp_path, *FAST)
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and "no inpainting model" in r.stderr, r.stderr
