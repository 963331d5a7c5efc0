"""Aliases of the SD 3.x and FLUX.1 repos: gated ones say how to get access."""

from __future__ import annotations

import json

import pytest

from diffcli.errors import UsageError
from diffcli.models import resolve

from helpers import cli


def test_a_gated_alias_says_how_to_get_access(fakehub):
    with pytest.raises(UsageError) as err:
        resolve("flux-dev", quiet=True)
    text = str(err.value)
    assert "gated" in text and "https://huggingface.co/black-forest-labs/FLUX.1-dev" in text
    assert "HF_TOKEN" in text and "diffcli models pull flux-dev --token" in text
    r = cli("txt2img", "castle", "-m", "sd35-large", "--quiet")
    assert r.exit_code == 2 and "(stabilityai/stable-diffusion-3.5-large) is a gated model" in r.stderr
    assert "Traceback" not in r.stderr


def test_flow_aliases_are_listed_with_their_settings():
    rows = {row["name"]: row for row in json.loads(cli("models", "aliases", "--json").stdout)}
    assert rows["flux-schnell"]["family"] == "flux" and not rows["flux-schnell"]["gated"]
    assert rows["flux-schnell"]["defaults"]["steps"] == 4 and rows["flux-dev"]["gated"]
    assert {rows[n]["defaults"]["scheduler"] for n in ("sd35-large", "sd35-medium", "flux-dev")} == {"flow-euler"}


def test_a_flux_transformer_file_pulls_from_a_url_and_asks_for_a_base(fakehub):
    from .fakehub import safetensors_bytes

    data = safetensors_bytes(
        {"double_blocks.0.img_attn.qkv.weight": ("F16", [12, 4]), "single_blocks.0.linear1.weight": ("F16", [8, 4])}, 1
    )
    fakehub.plain["/files/flux1-finetune.safetensors"] = (data, {})
    url = f"{fakehub.url}/files/flux1-finetune.safetensors"
    r = cli("models", "pull", url)
    assert r.exit_code == 0, r.stderr
    assert "flux transformer: use it with --base" in r.stderr
    ref = resolve(url, offline=True)
    assert ref.kind == "single_file" and ref.family == "flux"
    r = cli("txt2img", "castle", "-m", url, "--offline")
    assert r.exit_code == 2 and "--base" in r.stderr


def test_a_flux_repo_pulls_by_alias_complete_for_offline_use(fakehub, tiny_flux, no_network):
    from pathlib import Path

    from diffcli.models.aliases import ALIASES
    from diffcli.models.hub import snapshot_missing

    files = {p.relative_to(tiny_flux).as_posix(): p.read_bytes() for p in Path(tiny_flux).rglob("*") if p.is_file()}
    fakehub.add_repo(ALIASES["flux-schnell"].repo_id, files)
    assert cli("models", "pull", "flux-schnell", "-q").exit_code == 0
    attempts = no_network()
    ref = resolve("flux-schnell", offline=True)
    assert attempts == [] and ref.family == "flux" and ref.defaults["steps"] == 4
    pulled = {p.relative_to(ref.path).as_posix() for p in Path(ref.path).rglob("*") if p.is_file()}
    assert pulled == set(files) and snapshot_missing(Path(ref.path), allow_pickle=False) == []
    listed = {row["name"]: row for row in json.loads(cli("models", "list", "--json").stdout)}
    assert listed["flux-schnell"]["family"] == "flux"
