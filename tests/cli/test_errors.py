"""Bad input: one clear stderr line, a documented exit code, no traceback, nothing written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import cli, default_sigint, subprocess_cli, wait_for_first_step


def _img(path: Path, size=(32, 32), mode="RGB") -> Path:
    Image.new(mode, size).save(path)
    return path


def _check_usage_error(result, needle: str, code: int = 2) -> None:
    assert result.exit_code == code, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("diffcli: error: ") and needle in lines[-1], lines
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--steps", "0"], "--steps"),
        (["--cfg", "-1"], "--cfg"),
        (["--scheduler", "nope"], "dpm++2m-karras"),
        (["-n", "0"], "--num-images"),
        (["--width", "33"], "multiple of 8"),  # txt2img: 8 | VAE factor 2
        (["--device", "gpu0"], "--device"),
        (["--dtype", "half"], "--dtype"),
        (["--format", "gif"], "--format"),
        (["--out", "x/{nope}.png"], "unknown field"),
        (["-m", "no/such/dir/model"], "no/such/dir/model"),
        (["--offload", "disk"], "--offload"),
        (["--out", "shot.gif"], ".gif is not a format diffcli writes"),  # (before: a folder named shot.gif)
        (["--max-pixels", "0"], "--max-pixels must be at least 1 (got 0)"),  # (before: the default limit)
        (["--max-pixels", "-5"], "--max-pixels must be at least 1 (got -5)"),
    ],
)
def test_usage_errors(tiny_sd, tmp_path, args, needle):
    args = list(args)
    if "-m" not in args:
        args += ["-m", str(tiny_sd)]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "o")]
    _check_usage_error(cli("txt2img", "castle", *args), needle)
    assert not (tmp_path / "o").exists() or list((tmp_path / "o").iterdir()) == []


def test_strength_out_of_range(tiny_sd, tmp_path):
    src = _img(tmp_path / "in.png")
    for bad in ("0", "1.5"):
        _check_usage_error(cli("img2img", src, "x", "--strength", bad, "-m", tiny_sd), "--strength")


def test_missing_prompt(tiny_sd):
    _check_usage_error(cli("txt2img", "-m", tiny_sd), "PROMPT")


def test_bad_images(tiny_sd, tmp_path):
    _check_usage_error(cli("img2img", tmp_path / "missing.png", "x", "-m", tiny_sd), "no such file")
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    _check_usage_error(cli("img2img", tmp_path / "junk.png", "x", "-m", tiny_sd), "not an image")
    good = _img(tmp_path / "good.png", (64, 64))
    data = good.read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    _check_usage_error(cli("img2img", tmp_path / "cut.png", "x", "-m", tiny_sd), "truncated")
    Image.new("RGB", (8, 8)).save(tmp_path / "in.ico")
    _check_usage_error(cli("img2img", tmp_path / "in.ico", "x", "-m", tiny_sd), "unsupported image format")


def test_decompression_bomb(tiny_sd, tmp_path, monkeypatch):
    from PIL import Image as PILImage

    big = _img(tmp_path / "big.png", (200, 200))
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 100 * 100)  # Pillow's own limit, lowered for speed
    _check_usage_error(cli("img2img", big, "x", "-m", tiny_sd), "too large")


def test_a_mask_blur_wider_than_any_image_is_a_usage_error(tiny_sd, tmp_path):
    src = _img(tmp_path / "in.png")
    r = cli("inpaint", src, "x", "--mask", src, "--mask-blur", "99999999999", "-m", tiny_sd, "-o", tmp_path / "o/")
    _check_usage_error(r, "--mask-blur must be between 0 and 16384 pixels")
    assert not (tmp_path / "o").exists()


def test_mask_size_mismatch(tiny_sd, tmp_path):
    src, mask = _img(tmp_path / "in.png", (32, 32)), _img(tmp_path / "m.png", (16, 16), "L")
    _check_usage_error(cli("inpaint", src, "x", "--mask", mask, "-m", tiny_sd), "must match")


@pytest.mark.parametrize("size", [(3, 3), (20000, 64)])
def test_a_size_taken_from_the_input_is_held_to_the_side_limits(tiny_sd, tmp_path, size):
    """img2img without --width/--height takes the input's size: 8 to 16384 pixels a side, as a size given."""
    image = _img(tmp_path / "in.png", size)
    r = cli("img2img", image, "x", "-m", tiny_sd, "--steps", "2", "-o", tmp_path / "out/")
    _check_usage_error(r, "each side must be between 8 and 16384 pixels")
    assert not (tmp_path / "out").exists()
    r = cli("img2img", image, "x", "-m", tiny_sd, "--steps", "2", "-W", "32", "-H", "32", "-o", tmp_path / "out/")
    assert r.exit_code == 0, r.stderr  # a size given: the input is resized to it


def test_existing_output_is_not_overwritten(tiny_sd, tmp_path):
    target = tmp_path / "shot.png"
    target.write_bytes(b"precious")
    _check_usage_error(cli("txt2img", "x", "-m", tiny_sd, "-o", target, "--steps", "1"), "--overwrite")
    assert target.read_bytes() == b"precious"
    r = cli("txt2img", "x", "-m", tiny_sd, "-o", target, "--steps", "1", "--overwrite", "--quiet")
    assert r.exit_code == 0 and Image.open(target).size == (32, 32)


def test_unwritable_output_directory(tiny_sd, tmp_path):
    if os.geteuid() == 0:  # root writes anywhere: use a path under a regular file instead
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "sub"
    else:
        out = tmp_path / "ro"
        out.mkdir(mode=0o500)
    _check_usage_error(cli("txt2img", "x", "-m", tiny_sd, "-o", out), "output directory")


def test_prompt_text_cannot_escape_the_output_directory(tiny_sd, tmp_path):
    r = cli("txt2img", "../../etc/passwd /x", "-m", tiny_sd, "-o", tmp_path, "--steps", "1", "--quiet")
    assert r.exit_code == 0, r.stderr
    (path,) = [Path(p) for p in r.stdout.split()]
    assert path.parent == tmp_path and ".." not in path.name and "/" not in path.name


def test_rgba_palette_16bit_and_rotated_inputs_are_converted(tiny_sd, tmp_path):
    from diffcli.images import load_rgb

    rgba = Image.new("RGBA", (10, 6), (255, 0, 0, 0))
    rgba.save(tmp_path / "a.png")
    assert load_rgb(tmp_path / "a.png").getpixel((0, 0)) == (255, 255, 255)  # transparent → white
    Image.new("P", (10, 6), 3).save(tmp_path / "p.png")
    assert load_rgb(tmp_path / "p.png").mode == "RGB"
    Image.fromarray(np.full((6, 10), 65535, dtype=np.uint16)).save(tmp_path / "16.png")
    assert load_rgb(tmp_path / "16.png").getpixel((0, 0)) == (255, 255, 255)
    img = Image.new("RGB", (16, 10), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90° clockwise
    img.save(tmp_path / "r.jpg", exif=exif.tobytes())
    assert load_rgb(tmp_path / "r.jpg").size == (10, 16)
    r = cli("img2img", tmp_path / "r.jpg", "x", "-m", tiny_sd, "--steps", "2", "--quiet", "-o", tmp_path / "o")
    assert r.exit_code == 0, r.stderr
    assert Image.open(r.stdout.strip()).size == (10, 16)


def test_damaged_exif_data_is_read_as_no_orientation_without_a_word_on_stderr(tmp_path):
    """Pillow warns "Corrupt EXIF data" on stderr (reading a JPEG's DPI): not into --json's event stream."""
    import json

    src = tmp_path / "bad-exif.jpg"
    Image.new("RGB", (32, 24), "green").save(src, exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff" + b"\x00" * 10)
    r = subprocess_cli("upscale", src, "--method", "lanczos", "--json", "-o", tmp_path / "o/")
    assert r.returncode == 0, r.stderr
    assert all(json.loads(line)["event"] for line in r.stderr.splitlines()), r.stderr  # events only
    assert Image.open(json.loads(r.stdout)["path"]).size == (64, 48)


def test_disk_full_leaves_no_partial_file(tiny_sd, tmp_path):
    mnt = tmp_path / "full"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        r = cli("txt2img", "x", "-m", tiny_sd, "--width", "96", "--height", "96", "--steps", "1", "-o", mnt, "--quiet")
        assert r.exit_code == 1, r.stderr
        assert "no space" in r.stderr.lower() and "Traceback" not in r.stderr
        assert list(mnt.iterdir()) == []
    finally:
        subprocess.run(["umount", str(mnt)])


def test_debug_shows_the_traceback(tiny_sd):
    p = subprocess_cli("txt2img", "x", "-m", tiny_sd, "--steps", "0", "--debug")
    assert p.returncode != 0 and "Traceback" in p.stderr


@pytest.mark.parametrize("sig, code, word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_ctrl_c_and_sigterm_exit_cleanly_and_write_nothing(tiny_sd, tmp_path, sig, code, word):
    out = tmp_path / "o"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "diffcli",
            "txt2img",
            "castle",
            "-m",
            str(tiny_sd),
            "--steps",
            "400",
            "--scheduler",
            "euler",
            "-o",
            str(out),
            "--json",
            "--dtype",
            "float32",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,
    )
    wait_for_first_step(proc.stderr, timeout=120)
    t_signal = time.time()
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    assert time.time() - t_signal < 10
    assert stdout == "" and word in stderr and "Traceback" not in stderr
    assert not out.exists()  # the folder this run created is gone again, with no temp file or reservation


def test_img2img_steps_that_run_no_denoising_step_are_a_usage_error(tmp_path, tiny_sd3):
    """A UNet pipeline runs int(steps x strength) steps: --steps 1 at --strength 0.5 runs none, which
    diffusers answers with a RuntimeError after the model has loaded; it is refused first, with the fix."""
    image = tmp_path / "in.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(image)
    r = cli("img2img", image, "red house", "--steps", "1", "--strength", "0.5", "-o", tmp_path / "o")
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines()[-1] == (
        "diffcli: error: --steps 1 at --strength 0.5 runs no denoising step; use --steps 2 or more"
    )
    assert (
        cli(
            "img2img", image, "red house", "--steps", "2", "--strength", "0.5", "--quiet", "-o", tmp_path / "o"
        ).exit_code
        == 0
    )
    # a flow-matching pipeline keeps one step for any strength: nothing to refuse there
    r = cli(
        "img2img",
        image,
        "a lighthouse",
        "-m",
        tiny_sd3,
        "--steps",
        "1",
        "--strength",
        "0.5",
        "--dtype",
        "float32",
        "--quiet",
        "-o",
        tmp_path / "flow",
    )
    assert r.exit_code == 0, r.stderr
