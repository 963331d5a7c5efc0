"""Issue 16: bad or hostile input gets one clear line and a documented exit code, before any model loads."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from helpers import cli, subprocess_cli


def _one_line_error(result, needle: str, code: int = 2) -> str:
    assert result.exit_code == code, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("diffcli: error: ") and needle in lines[-1], lines
    assert "Traceback" not in result.stderr and "shows the traceback" not in result.stderr
    assert result.stdout == ""
    return lines[-1]


def _recorded(path: Path, job, *, parameters: str | None = None, raw: str | None = None) -> Path:
    """A PNG carrying a diffcli record, as anyone could craft one."""
    info = PngImagePlugin.PngInfo()
    if parameters is not None:
        info.add_text("parameters", parameters)
    info.add_text("diffcli", raw if raw is not None else json.dumps({"diffcli": "0", "job": job}))
    Image.new("RGB", (64, 64), (90, 120, 200)).save(path, pnginfo=info)
    return path


def _no_model_loaded(result) -> None:
    assert '"phase": "load"' not in result.stderr


@pytest.mark.parametrize(
    "args, needle",
    [
        (["-W", "100000", "-H", "100000"], "--width"),
        (["-n", "1000000000"], "--num-images"),
        (["--steps", str(10**23)], "--steps"),
        (["-W", "4096", "-H", "8192"], "--max-pixels"),
        (["--cfg", "inf"], "--cfg"),
        (["--cfg", "nan"], "--cfg"),
        (["-W", "60", "-H", "64"], "multiple of 8"),  # the bundled model's VAE factor is 4, diffusers wants 8
        (["--model", ""], "--model is empty"),
    ],
)
def test_limits_and_bad_values_fail_before_loading(tmp_path, args, needle):
    r = cli("txt2img", "castle", *args, "-o", tmp_path / "o", "--json")
    _one_line_error(r, needle)
    _no_model_loaded(r)
    assert not (tmp_path / "o").exists()


def test_max_pixels_can_be_raised(tmp_path):
    r = cli("txt2img", "castle", "-W", "64", "-H", "64", "--max-pixels", "1000", "-o", tmp_path / "o", "--json")
    _one_line_error(r, "--max-pixels 4096")


def test_limits_apply_to_values_from_a_recorded_job(tmp_path):
    img = _recorded(
        tmp_path / "big.png",
        {"task": "txt2img", "prompt": "x", "model": "tiny", "width": 100000, "height": 64, "num_images": 1},
    )
    _one_line_error(cli("txt2img", "--from", img, "-o", tmp_path / "o", "--json"), "--width")


@pytest.mark.parametrize(
    "job, needle",
    [
        ({"task": "txt2img", "prompt": "x", "steps": "4"}, "'steps' must be an integer"),
        ({"task": "txt2img", "prompt": "x", "seed": 1.5}, "'seed' must be an integer"),
        (["task", "txt2img"], "must be a JSON object"),
    ],
)
def test_wrong_types_in_a_recorded_job(tmp_path, job, needle):
    img = _recorded(tmp_path / "r.png", job)
    _one_line_error(cli("txt2img", "--from", img, "-o", tmp_path / "o", "--json"), needle)


def test_a_record_that_is_not_an_object_is_no_record(tmp_path):
    img = _recorded(tmp_path / "r.png", None, raw="[1, 2, 3]")
    _one_line_error(cli("txt2img", "--from", img), "no diffcli record")
    _one_line_error(cli("info", img), "no generation parameters")


class _CountingHandler(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self):  # noqa: N802 - http.server's name
        type(self).hits.append(self.path)
        self.send_response(404)
        self.end_headers()

    do_HEAD = do_GET

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("model", ["URL", "someone/not-here", "/no/such/model/dir"])
def test_replay_never_fetches_a_model_named_in_the_image(tmp_path, monkeypatch, model):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _CountingHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _CountingHandler.hits = []
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    try:
        if model == "URL":
            model = f"http://127.0.0.1:{server.server_port}/evil.safetensors"
        img = _recorded(tmp_path / "r.png", {"task": "txt2img", "prompt": "x", "model": model, "steps": 2})
        line = _one_line_error(cli("txt2img", "--from", img, "-o", tmp_path / "o"), "not present here")
        assert "--model" in line
    finally:
        server.shutdown()
    assert _CountingHandler.hits == []
    assert not (tmp_path / "o").exists()


def test_replay_uses_a_recorded_model_that_is_here_and_a_named_one(tiny_sd, tmp_path):
    first = cli("txt2img", "castle", "-m", tiny_sd, "--seed", "3", "--steps", "2", "-o", tmp_path / "a", "-q")
    assert first.exit_code == 0, first.stderr
    again = cli("txt2img", "--from", first.stdout.strip(), "-o", tmp_path / "b", "-q")
    assert again.exit_code == 0, again.stderr
    hostile = _recorded(
        tmp_path / "r.png", {"task": "txt2img", "prompt": "x", "model": "someone/not-here", "steps": 2, "seed": 1}
    )
    named = cli("txt2img", "--from", hostile, "-m", tiny_sd, "-o", tmp_path / "c", "-q")
    assert named.exit_code == 0, named.stderr


def test_output_and_input_paths_that_cannot_be_used(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    _one_line_error(cli("txt2img", "x", "-o", blocker / "sub"), "cannot create output directory")
    _one_line_error(cli("txt2img", "x", "-o", tmp_path / ("n" * 300) / "x.png"), "cannot create output directory")
    _one_line_error(cli("img2img", blocker / "in.png", "x"), "no such file")
    _one_line_error(cli("txt2img", "--from", tmp_path), "is a directory")
    _one_line_error(cli("txt2img", "x", "-o", str(tmp_path / "{seed:>99999999999}.png")), "wider than")


def test_img2img_without_a_prompt_takes_the_recorded_one(tiny_sd, tmp_path):
    first = cli("txt2img", "red house", "-m", tiny_sd, "--seed", "3", "--steps", "2", "-o", tmp_path / "a", "-q")
    r = cli("img2img", first.stdout.strip(), "-m", tiny_sd, "--steps", "2", "-o", tmp_path / "b", "-q")
    assert r.exit_code == 0, r.stderr
    from diffcli.metadata import read

    assert read(r.stdout.strip())[1]["job"]["prompt"] == "red house"


def test_info_on_damaged_images(tmp_path):
    good = _recorded(tmp_path / "g.png", {"task": "txt2img", "prompt": "x"})
    data = good.read_bytes()
    (tmp_path / "cut.png").write_bytes(data[:40])
    r = cli("info", tmp_path / "cut.png")
    assert r.exit_code == 2 and "Traceback" not in r.stderr and r.stderr.startswith("diffcli: error: "), r.stderr
    bomb = PngImagePlugin.PngInfo()
    bomb.add_text("parameters", "a" * (64 * 2**20), zip=True)  # 64 MB of text in a ~64 KB zTXt chunk
    Image.new("RGB", (8, 8)).save(tmp_path / "bomb.png", pnginfo=bomb)
    _one_line_error(cli("info", tmp_path / "bomb.png"), "bomb.png")
    _one_line_error(cli("txt2img", "--from", tmp_path / "bomb.png"), "bomb.png")


def test_escape_sequences_from_metadata_are_never_printed_raw(tmp_path):
    evil = "x\x1b]0;pwned\x07\x1b[2J\u202e"
    img = _recorded(
        tmp_path / "e.png", {"task": "txt2img", "prompt": evil, "model": evil}, parameters=f"{evil}\nSteps: 1"
    )
    r = cli("info", img)
    assert r.exit_code == 0
    assert "\x1b" not in r.stdout and "\x07" not in r.stdout and "\u202e" not in r.stdout
    assert "\\x1b" in r.stdout
    err = cli("txt2img", "--from", img, "-o", tmp_path / "o")
    assert err.exit_code == 2 and "\x1b" not in err.stderr and "\\x1b" in err.stderr


def test_a_newline_in_a_prompt_cannot_forge_a1111_fields():
    from diffcli.metadata import a1111_parameters

    text = a1111_parameters(
        {"job": {"prompt": "cat\nSteps: 999, Seed: 1", "negative": "a\nb", "steps": 4, "seed": 2}, "model": {}}
    )
    lines = text.splitlines()
    assert len(lines) == 3 and lines[0] == "cat Steps: 999, Seed: 1" and lines[1] == "Negative prompt: a b"
    assert lines[2].startswith("Steps: 4")


@pytest.mark.parametrize(
    "args, needle",
    [
        (["txt2img", "x", "--stepz", "3"], "did you mean --steps?"),
        (["txt2imh", "x"], "Did you mean 'txt2img'?"),
        (["txt2img", "x", "--steps", "many"], "--steps"),
    ],
)
def test_click_usage_errors_use_our_format(args, needle):
    _one_line_error(cli(*args), needle)


def test_closed_stdout_is_one_clear_line(tmp_path):
    p = subprocess.run(
        ["bash", "-c", f"{sys.executable} -m diffcli txt2img x -o {tmp_path / 'o'} >&-"],
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
    )
    assert p.returncode == 2 and p.stderr.strip().startswith("diffcli: error: standard output is closed"), p.stderr
    assert not (tmp_path / "o").exists()


def test_a_reader_that_goes_away_stops_the_run_quietly(tiny_sd, tmp_path):
    out = tmp_path / "o"
    cmd = (
        f"{sys.executable} -m diffcli txt2img x -m {tiny_sd} -n 6 --steps 2 -o {out} -q | head -c1; "
        'echo " rc=${PIPESTATUS[0]}"'
    )
    p = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=300)
    assert p.stderr == "", p.stderr
    assert p.stdout.endswith(" rc=1\n"), p.stdout
    assert all(not f.name.startswith(".") for f in out.iterdir())  # no temp file or reservation left


def test_help_offers_completion_and_shows_no_bool_placeholders():
    r = subprocess_cli("txt2img", "--help", env={"COLUMNS": "200", "TERM": "dumb"})
    assert r.returncode == 0
    assert "<bool>" not in r.stdout and "BOOLEAN" not in r.stdout
    root = subprocess_cli("--help", env={"COLUMNS": "200"})
    assert "--install-completion" in root.stdout


def test_a_transparent_mask_keeps_everything(tiny_sd, tmp_path):
    from helpers import pixels

    src = tmp_path / "in.png"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(src)
    Image.new("RGBA", (32, 32), (255, 255, 255, 0)).save(tmp_path / "mask.png")
    r = cli(
        "inpaint",
        src,
        "x",
        "--mask",
        tmp_path / "mask.png",
        "-m",
        tiny_sd,
        "--steps",
        "2",
        "--seed",
        "1",
        "-o",
        tmp_path / "o",
        "-q",
    )
    assert r.exit_code == 0, r.stderr
    assert (pixels(r.stdout.strip()) == pixels(src)).all()


def test_a_prompt_longer_than_the_text_window_is_warned_about_where_it_is_cut(tiny_sd, tmp_path):
    long = " ".join(["castle"] * 120)
    r = cli("txt2img", long, "-m", tiny_sd, "--steps", "1", "-o", tmp_path / "o", "--json", "--prompt-syntax", "plain")
    assert r.exit_code == 0, r.stderr
    assert "tokens; this model's text encoder reads" in r.stderr
    # A1111 syntax (the default) reads a long prompt in windows, to its end: nothing is cut, no warning
    r = cli("txt2img", long, "-m", tiny_sd, "--steps", "1", "-o", tmp_path / "o", "--json")
    assert r.exit_code == 0 and "text encoder reads" not in r.stderr, r.stderr


def test_lanczos_upscale_records_no_seed(tmp_path):
    from diffcli.metadata import read

    src = tmp_path / "in.png"
    Image.new("RGB", (16, 16), (10, 200, 30)).save(src)
    r = cli("upscale", src, "--method", "lanczos", "-o", tmp_path / "o", "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["seed"] is None
    assert read(json.loads(r.stdout)["path"])[1]["job"]["seed"] is None
