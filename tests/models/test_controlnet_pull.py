"""`diffcli models pull` of a ControlNet repo (config.json + weights at the top level), against the fake hub."""

from __future__ import annotations

import json

from diffcli.models import hub

from .fakehub import safetensors_bytes
from helpers import cli


def controlnet_repo_files() -> dict[str, bytes]:
    return {
        "config.json": json.dumps(
            {"_class_name": "ControlNetModel", "_diffusers_version": "0.42.1", "cross_attention_dim": 768}
        ).encode(),
        "diffusion_pytorch_model.safetensors": safetensors_bytes(
            {"controlnet_cond_embedding.conv_in.weight": ("F32", [8])}, 3
        ),
        "diffusion_pytorch_model.fp16.safetensors": safetensors_bytes(
            {"controlnet_cond_embedding.conv_in.weight": ("F16", [8])}, 5
        ),
        "diffusion_pytorch_model.bin": b"PK-not-really-a-pickle" * 4,
        "README.md": b"# a ControlNet\n",
        "images/example.png": b"not fetched",
    }


def test_pull_a_controlnet_repo_fetches_its_config_and_one_set_of_weights(fakehub):
    fakehub.add_repo("acme/cn-canny", controlnet_repo_files())
    r = cli("models", "pull", "acme/cn-canny", "-q")
    assert r.exit_code == 0, r.stderr
    snap, _, entry = hub.find_local("acme/cn-canny", None)
    assert sorted(entry["files"]) == ["config.json", "diffusion_pytorch_model.safetensors"]
    rows = {row["name"]: row for row in json.loads(cli("models", "list", "--json").stdout)}
    assert rows["acme/cn-canny"]["family"] == "controlnet" and rows["acme/cn-canny"]["source"] == "hub"
    fp16 = cli("models", "pull", "acme/cn-canny", "--variant", "fp16", "--force", "-q")
    assert fp16.exit_code == 0, fp16.stderr
    assert "diffusion_pytorch_model.fp16.safetensors" in hub.find_local("acme/cn-canny", None)[2]["files"]


def test_pull_refuses_a_repo_that_is_neither_a_pipeline_nor_a_controlnet(fakehub):
    fakehub.add_repo(
        "acme/vae",
        {
            "config.json": json.dumps({"_class_name": "AutoencoderKL"}).encode(),
            "diffusion_pytorch_model.safetensors": safetensors_bytes(),
        },
    )
    r = cli("models", "pull", "acme/vae", "-q")
    assert r.exit_code == 2 and "nor a ControlNet" in r.stderr


def test_pull_a_single_file_controlnet_by_url(fakehub):
    # a ControlNet file in the original lllyasviel/A1111 key layout, fetched by URL: listed as family controlnet
    keys = {
        "control_model.input_hint_block.0.weight": ("F16", [16, 3, 3, 3]),
        "control_model.zero_convs.0.0.weight": ("F16", [32, 32, 1, 1]),
        "control_model.input_blocks.0.0.weight": ("F16", [32, 4, 3, 3]),
    }
    fakehub.plain["/files/control_v11p_sd15_canny.safetensors"] = (safetensors_bytes(keys, 2), {})
    url = f"{fakehub.url}/files/control_v11p_sd15_canny.safetensors"
    r = cli("models", "pull", url, "-q")
    assert r.exit_code == 0, r.stderr
    rows = {row["name"]: row for row in json.loads(cli("models", "list", "--json").stdout)}
    assert rows[url]["family"] == "controlnet" and rows[url]["source"] == "url"
