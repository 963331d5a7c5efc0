"""--vae-decoder (diffcli.vae_decoder): a tiny AutoencoderTiny decodes for one call, recorded and replayed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffcli.metadata import parameters_fields

from helpers import cli, pixels, written

FAST = ["--steps", "2", "--dtype", "float32", "--quiet", "--no-server"]


@pytest.fixture(scope="module")
def tiny_taesd(tmp_path_factory) -> Path:
    """An AutoencoderTiny (random weights) for tests/tiny_models.py's SD model: 2 pixels per latent."""
    import torch
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("models") / "tiny-taesd"
    AutoencoderTiny(
        encoder_block_out_channels=(16, 16),
        decoder_block_out_channels=(16, 16),
        num_encoder_blocks=(1, 1),
        num_decoder_blocks=(1, 1),
    ).save_pretrained(path)
    return path


def _one(result) -> Path:
    assert result.exit_code == 0, result.stderr
    (path,) = written(result)
    return path


def test_the_tiny_decoder_decodes_is_recorded_replayed_and_leaves_the_vae_alone(tiny_sd, tiny_taesd, tmp_path):
    def make(*args, out="o"):
        return _one(cli("txt2img", "red house", "-m", tiny_sd, "--seed", "3", *FAST, *args, "-o", tmp_path / out))

    full = make()
    tiny = make("--vae-decoder", str(tiny_taesd), out="t")
    assert pixels(tiny).shape == pixels(full).shape and np.abs(pixels(tiny) - pixels(full)).mean() > 1
    with Image.open(tiny) as im:
        record, parameters = json.loads(im.info["diffcli"]), im.info["parameters"]
    assert record["job"]["vae_decoder"] == str(tiny_taesd.resolve())
    assert parameters_fields(parameters)["VAE"] == "tiny-taesd"
    with Image.open(full) as im:
        assert json.loads(im.info["diffcli"])["job"]["vae_decoder"] == "full"
        assert "VAE" not in parameters_fields(im.info["parameters"])
    replayed = make("--from", str(tiny), out="r")
    assert np.array_equal(pixels(replayed), pixels(tiny))
    # a batch file: the same jobs, one with the tiny decoder and one without (the VAE's own again), give
    # the same pixels as their commands
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(
        json.dumps({"prompt": "red house", "seed": 3, "vae_decoder": str(tiny_taesd)})
        + "\n"
        + json.dumps({"prompt": "red house", "seed": 3})
        + "\n"
    )
    b = cli(
        "batch",
        jobs,
        "-m",
        tiny_sd,
        "--steps",
        "2",
        "--batch-size",
        "2",
        "--dtype",
        "float32",
        "-q",
        "-o",
        tmp_path / "b",
    )
    assert b.exit_code == 0, b.stderr
    made = [Path(p) for p in b.stdout.split()]
    assert np.array_equal(pixels(made[0]), pixels(tiny)) and np.array_equal(pixels(made[1]), pixels(full))


def test_an_absent_or_unfit_decoder_is_a_usage_error_before_loading(tiny_sd, tiny_sdxl, tiny_taesd, tmp_path):
    absent = cli("txt2img", "red house", "-m", tiny_sd, "--vae-decoder", "tiny", "--offline", *FAST)
    assert absent.exit_code == 2
    assert absent.stderr.strip().splitlines() == [
        "diffcli: error: --vae-decoder: madebyollin/taesd is not downloaded (and nothing is fetched here); run "
        "`diffcli models pull madebyollin/taesd` while online"
    ]
    assert (
        "madebyollin/taesdxl"
        in cli("txt2img", "x", "-m", tiny_sdxl, "--vae-decoder", "tiny", "--offline", *FAST).stderr
    )
    no_folder = cli("txt2img", "x", "-m", tiny_sd, "--vae-decoder", str(tmp_path / "nothing"), *FAST)
    assert no_folder.exit_code == 2 and "no such folder" in no_folder.stderr
    bundled = cli("txt2img", "x", "--vae-decoder", str(tiny_taesd), *FAST)  # the bundled VAE: 4 pixels per latent
    assert bundled.exit_code == 2 and "pixels per latent" in bundled.stderr and "Traceback" not in bundled.stderr


def test_a_served_request_takes_the_decoder_as_a_job_field(tiny_taesd):
    from diffcli.errors import UsageError
    from diffcli.serve.worker import parse_request

    job, _ = parse_request({"job": {"prompt": "x", "vae_decoder": str(tiny_taesd)}, "opts": {"out": "/tmp/o"}})
    assert job.vae_decoder == str(tiny_taesd)
    with pytest.raises(UsageError, match="vae_decoder"):
        parse_request({"job": {"prompt": "x", "vae_decoder": 3}, "opts": {"out": "/tmp/o"}})


@pytest.mark.parametrize("fixture", ["tiny_zimage", "tiny_chroma"])
def test_a_tiny_decoder_decodes_chroma_and_z_image_for_one_job(fixture, request, tmp_path):
    """The 2026 families whose VAE is FLUX.1's (their family's tiny decoder is taef1): an AutoencoderTiny folder
    with the model's latent channels decodes one job (recorded), and the next job has the full VAE's exact
    pixels."""
    import torch
    from diffusers import AutoencoderTiny

    model = request.getfixturevalue(fixture)
    torch.manual_seed(0)
    decoder = tmp_path / "taef"
    AutoencoderTiny(
        latent_channels=json.loads((model / "vae" / "config.json").read_text())["latent_channels"],
        encoder_block_out_channels=(16, 16),
        decoder_block_out_channels=(16, 16),
        num_encoder_blocks=(1, 1),
        num_decoder_blocks=(1, 1),
    ).save_pretrained(decoder)
    jobs = tmp_path / "jobs.jsonl"
    line = {"prompt": "red house", "seed": 3, "width": 32, "height": 32}
    jobs.write_text("".join(json.dumps(x) + "\n" for x in (line, {**line, "vae_decoder": str(decoder)}, line)))
    b = cli("batch", jobs, "-m", model, "--steps", "2", "--dtype", "float32", "-q", "-o", tmp_path / "b")
    assert b.exit_code == 0, b.stderr
    full, tiny, after = [Path(p) for p in b.stdout.split()]
    assert pixels(tiny).shape == pixels(full).shape and np.abs(pixels(tiny) - pixels(full)).mean() > 1
    assert np.array_equal(pixels(after), pixels(full))
    with Image.open(tiny) as im:
        assert json.loads(im.info["diffcli"])["job"]["vae_decoder"] == str(decoder.resolve())
