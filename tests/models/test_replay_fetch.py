"""Issue 26, item 10: nothing named only inside a --from image (its VAE decoder, ControlNets, --base) is ever
fetched, whatever else the command line says; named on the command line, it is fetched as usual. The hub is
a real HTTP server on 127.0.0.1 that records every request (fakehub.py)."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, PngImagePlugin

from .fakehub import safetensors_bytes
from helpers import cli

FAST = ["--steps", "1", "--dtype", "float32", "--no-server", "--json"]


def _recorded(path: Path, job: dict) -> Path:
    """A PNG carrying a diffcli record, as anyone could craft one."""
    info = PngImagePlugin.PngInfo()
    info.add_text("diffcli", json.dumps({"diffcli": "0", "job": job}))
    Image.new("RGB", (32, 32), (90, 120, 200)).save(path, pnginfo=info)
    return path


def _control_map(tmp_path: Path) -> Path:
    path = tmp_path / "map.png"
    Image.new("RGB", (32, 32), (255, 255, 255)).save(path)
    return path


def _warnings(result) -> list[str]:
    """The warning lines a command showed (its JSON events on stderr)."""
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    return [e["message"] for e in events if e["event"] == "warning"]


def test_another_model_fetches_no_decoder_or_controlnet_named_in_the_image(fakehub, tiny_sd, tmp_path):
    control = f"acme/controlnet:{_control_map(tmp_path)}:1.0:0.0:1.0"
    img = _recorded(
        tmp_path / "r.png",
        {
            "task": "txt2img",
            "prompt": "castle",
            "model": "someone/recorded",
            "seed": 1,
            "vae_decoder": "acme/taesd",
            "control": [control],
        },
    )
    r = cli("txt2img", "--from", img, "--model", tiny_sd, "-o", tmp_path / "o", *FAST)
    assert fakehub.requests == []
    assert r.exit_code == 0, r.stderr
    lines = _warnings(r)
    assert len(lines) == 2, lines
    assert all("not used" in line for line in lines)
    assert any("--vae-decoder acme/taesd" in line for line in lines)
    assert any(f"--control {control}" in line for line in lines)
    with Image.open(json.loads(r.stdout.splitlines()[0])["path"]) as made:
        job = json.loads(made.info["diffcli"])["job"]
    assert job["vae_decoder"] == "full" and job["control"] is None


def test_a_replay_fetches_no_decoder_named_in_the_image_but_one_named_by_a_flag(fakehub, tiny_sd, tmp_path):
    img = _recorded(
        tmp_path / "r.png",
        {"task": "txt2img", "prompt": "castle", "model": str(tiny_sd), "seed": 1, "vae_decoder": "acme/taesd"},
    )
    r = cli("txt2img", "--from", img, "-o", tmp_path / "o", *FAST)
    assert fakehub.requests == []
    assert r.exit_code == 0, r.stderr
    assert len(_warnings(r)) == 1 and "--vae-decoder acme/taesd" in _warnings(r)[0]
    # named on the command line, it is fetched (the fake hub has no such repo: the error says so)
    named = cli("txt2img", "--from", img, "--vae-decoder", "acme/taesd", "-o", tmp_path / "n", *FAST)
    assert any("acme/taesd" in p for p in fakehub.paths_requested()), fakehub.requests
    assert named.exit_code == 2 and not (tmp_path / "n").exists()


def test_another_model_fetches_no_base_named_in_the_image(fakehub, tmp_path):
    # a FLUX.1 transformer file (what its tensor names say): its other components come from --base
    transformer = tmp_path / "flux-transformer.safetensors"
    transformer.write_bytes(
        safetensors_bytes(
            {"double_blocks.0.img_attn.qkv.weight": ("F32", [4]), "single_blocks.0.linear1.weight": ("F32", [4])}
        )
    )
    img = _recorded(
        tmp_path / "r.png",
        {"task": "txt2img", "prompt": "castle", "model": "someone/recorded.gguf", "base": "acme/flux-base", "seed": 1},
    )
    r = cli("txt2img", "--from", img, "--model", transformer, "-o", tmp_path / "o", *FAST)
    assert fakehub.requests == []
    assert r.exit_code == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--base acme/flux-base" in lines[0] and "Traceback" not in r.stderr, lines
