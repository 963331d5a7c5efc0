"""`diffcli edit`: instruction editing (InstructPix2Pix, FLUX.1 Kontext) on the one engine, each edit the pixels
of a plain diffusers call with the same arguments, through the command, a batch line and --from."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny_edit_models import noise_image, plain_ip2p, plain_kontext

from helpers import cli, pixels, written

STEPS = ("--steps", "2", "--dtype", "float32", "--quiet", "--no-server")


@pytest.fixture(scope="module")
def tiny_ip2p(tmp_path_factory) -> Path:
    import tiny_edit_models

    return tiny_edit_models.build_ip2p(tmp_path_factory.mktemp("models") / "tiny-ip2p")


@pytest.fixture(scope="module")
def tiny_kontext(tmp_path_factory) -> Path:
    import tiny_edit_models

    return tiny_edit_models.build_kontext(tmp_path_factory.mktemp("models") / "tiny-kontext")


def record(path: Path) -> dict:
    with Image.open(path) as img:
        return json.loads(img.info["diffcli"])


def test_instruct_pix2pix_is_plain_diffusers_and_replays(tiny_ip2p, tmp_path):
    source = noise_image(tmp_path / "in.png", (40, 32))
    (made,) = written(
        cli("edit", source, "make it red", "-m", tiny_ip2p, "--seed", "3", "--image-cfg", "1.2", *STEPS, "-o", tmp_path)
    )
    assert np.array_equal(pixels(made), plain_ip2p(tiny_ip2p, source, "make it red", 3, image_cfg=1.2))
    job = record(made)["job"]
    assert (job["task"], job["prompt"], job["image_cfg"], job["cfg"], job["scheduler"]) == (
        "edit",
        "make it red",
        1.2,
        7.5,  # the family's (InstructPix2Pix's pipeline default), as --image-cfg's is 1.5
        "euler-a",
    )
    shown = cli("info", made)
    assert shown.exit_code == 0 and shown.stdout.startswith("make it red\n")
    assert "Image CFG scale: 1.2" in shown.stdout and "Task: edit" in shown.stdout
    (again,) = written(cli("edit", "--from", made, "-o", tmp_path / "again", "--quiet", "--no-server"))
    assert np.array_equal(pixels(again), pixels(made))
    # the default image guidance is the family's; the size follows the input, rounded down to a multiple of 8
    odd = noise_image(tmp_path / "odd.png", (44, 36), seed=1)
    (rounded,) = written(cli("edit", odd, "make it red", "-m", tiny_ip2p, "--seed", "3", *STEPS, "-o", tmp_path))
    assert Image.open(rounded).size == (40, 32) and record(rounded)["job"]["image_cfg"] == 1.5


def test_flux_kontext_is_plain_diffusers_at_the_input_size(tiny_kontext, tmp_path):
    source = noise_image(tmp_path / "in.png", (48, 32))
    (made,) = written(cli("edit", source, "red door", "-m", tiny_kontext, "--seed", "5", *STEPS, "-o", tmp_path))
    assert Image.open(made).size == (48, 32)  # not a Kontext training resolution near 1024x1024
    assert np.array_equal(pixels(made), plain_kontext(tiny_kontext, source, "red door", 5))
    job = record(made)["job"]
    assert (job["cfg"], job["scheduler"]) == (2.5, "flow-euler") and "image_cfg" not in job
    # -W/-H: that size instead (the input resized to it)
    (sized,) = written(
        cli(
            "edit",
            source,
            "red door",
            "-m",
            tiny_kontext,
            "-W",
            "32",
            "-H",
            "32",
            "--seed",
            "5",
            *STEPS,
            "-o",
            tmp_path,
        )
    )
    assert Image.open(sized).size == (32, 32)


def test_flux_kontext_with_a_mask_takes_a_reference_found_again_by_hash(tiny_kontext, tmp_path):
    source = noise_image(tmp_path / "in.png", (32, 32))
    reference = noise_image(tmp_path / "ref.png", (32, 32), seed=2)
    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (0, 0, 16, 32))
    mask.save(tmp_path / "mask.png")
    out = tmp_path / "out"
    args = ("--mask", tmp_path / "mask.png", "-r", reference, "-m", tiny_kontext, "--seed", "2", *STEPS)
    (made,) = written(cli("edit", source, "red door", *args, "-o", out))
    expected = plain_kontext(tiny_kontext, source, "red door", 2, mask=tmp_path / "mask.png", reference=reference)
    assert np.array_equal(pixels(made), expected)
    (ref,) = record(made)["references"]
    assert ref["path"] == str(reference.resolve()) and len(ref["sha256"]) == 64
    assert f'References: "ref.png: {ref["sha256"][:12]}"' in cli("info", made).stdout
    # the reference moved beside the image: --from finds it by its hash, never by the name alone
    shutil.move(reference, out / "moved.png")
    (again,) = written(cli("edit", "--from", made, "-o", tmp_path / "again", "--quiet", "--no-server"))
    assert np.array_equal(pixels(again), pixels(made))
    assert record(again)["job"]["references"] == [str((out / "moved.png").resolve())]
    (out / "moved.png").unlink()
    gone = cli("edit", "--from", made, "-o", tmp_path / "again", "--quiet", "--no-server")
    assert gone.exit_code == 2 and "not found by hash" in gone.stderr


def test_an_edit_line_of_a_batch_is_the_command_s_image(tiny_ip2p, tiny_kontext, tmp_path):
    source = noise_image(tmp_path / "in.png", (32, 32))
    lines = [
        {"task": "edit", "image": str(source), "prompt": "make it red", "model": str(tiny_ip2p), "seed": 4},
        {"image": str(source), "prompt": "red door", "model": str(tiny_kontext), "seed": 4},  # --task edit
    ]
    (tmp_path / "jobs.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    ran = cli(
        "batch", tmp_path / "jobs.jsonl", "--task", "edit", "--steps", "2", "--dtype", "float32", "-o", tmp_path / "b"
    )
    assert ran.exit_code == 0, ran.stderr
    ip2p, kontext = written(ran)
    assert np.array_equal(pixels(ip2p), plain_ip2p(tiny_ip2p, source, "make it red", 4))
    assert np.array_equal(pixels(kontext), plain_kontext(tiny_kontext, source, "red door", 4))


def _usage_error(*args) -> str:
    result = cli(*args, "--quiet", "--no-server")
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_what_an_edit_cannot_take_is_one_line_exit_2(tiny_ip2p, tiny_kontext, tmp_path):
    source = noise_image(tmp_path / "in.png", (32, 32))
    refused = _usage_error("edit", source, "make it red", "-m", "tiny")
    assert "cannot edit by instruction" in refused and "instruct-pix2pix, flux-kontext" in refused
    refused = _usage_error("edit", source, "make it red", "-m", tiny_ip2p, "-r", source)
    assert "-r/--reference does not apply" in refused and "no reference images" in refused
    refused = _usage_error("edit", source, "red door", "-m", tiny_kontext, "-r", source)
    assert "FluxKontextPipeline takes the one input image" in refused and "with --mask" in refused
    refused = _usage_error("edit", source, "red door", "-m", tiny_kontext, "--image-cfg", "2")
    assert "--image-cfg does not apply" in refused
    assert "edits the whole image" in _usage_error("edit", source, "x", "-m", tiny_ip2p, "--mask", source)
    assert "needs an instruction" in _usage_error("edit", source, "-m", tiny_ip2p)
    assert "use `diffcli edit" in _usage_error("txt2img", "castle", "-m", tiny_ip2p)


def test_the_edit_families_are_recognised_from_their_fixtures(tiny_ip2p, tiny_kontext):
    from diffcli.models.layout import read_layout

    for model, seen in ((tiny_ip2p, ("sd1", "sd1-ip2p")), (tiny_kontext, ("flux", "flux-kontext"))):
        layout = read_layout(model)
        assert (layout.family, layout.settings_family) == seen


def test_the_mcp_edit_tool_is_the_command_s_edit(tiny_ip2p, tmp_path):
    pytest.importorskip("mcp")
    from mcp_session import McpServer, images, isolated_env, texts

    source = noise_image(tmp_path / "in.png", (32, 32))
    server = McpServer(["--out", str(tmp_path / "out"), "--no-server"], isolated_env(tmp_path), tmp_path / "mcp.log")
    try:
        arguments = {"image": str(source), "prompt": "make it red", "model": str(tiny_ip2p), "steps": 2, "seed": 9}
        result = server.call("edit", {**arguments, "dtype": "float32", "image_cfg": 1.3})
        assert not result.is_error, (texts(result), server.log())
        (image,) = images(result)
        assert np.array_equal(image.astype(np.int16), plain_ip2p(tiny_ip2p, source, "make it red", 9, image_cfg=1.3))
        refused = server.call("edit", {**arguments, "references": [str(source)]})
        assert refused.is_error and "-r/--reference does not apply" in texts(refused)[0]
    finally:
        server.close()
