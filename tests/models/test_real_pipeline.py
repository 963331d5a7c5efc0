"""A real (tiny) diffusers pipeline pulled from the fake hub loads with DiffusionPipeline, offline."""

from __future__ import annotations

from pathlib import Path

from diffcli.models import resolve


def test_pulled_tiny_sd_loads_offline(fakehub, tiny_sd, no_network):
    files = {p.relative_to(tiny_sd).as_posix(): p.read_bytes() for p in Path(tiny_sd).rglob("*") if p.is_file()}
    fakehub.add_repo("acme/real-sd", files)
    pulled = resolve("acme/real-sd", quiet=True)
    assert pulled.family == "sd1"
    attempts = no_network()
    ref = resolve("acme/real-sd", offline=True)
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(ref.path, use_safetensors=True, local_files_only=True)
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    assert attempts == []
