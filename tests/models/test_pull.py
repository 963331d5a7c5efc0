"""Pulling hub models through a real HTTP server that speaks the hub protocol."""

from __future__ import annotations

from pathlib import Path

from diffcli.models import hub, resolve

NEEDED = {
    "model_index.json",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "tokenizer/merges.txt",
    "tokenizer/tokenizer_config.json",
    "tokenizer/vocab.json",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
}


def files_in(snap: Path) -> set[str]:
    return {p.relative_to(snap).as_posix() for p in snap.rglob("*") if p.is_file()}


def test_pull_fetches_only_what_the_pipeline_needs(fakehub, sd_repo):
    snap, commit, entry = hub.pull(sd_repo, quiet=True)
    assert files_in(snap) == NEEDED
    assert commit == fakehub.repos[sd_repo].commit
    # standard huggingface_hub cache layout, so other tools reuse it
    assert snap == hub.hub_cache_dir() / "models--acme--tiny-sd" / "snapshots" / commit
    assert (hub.hub_cache_dir() / "models--acme--tiny-sd" / "refs" / "main").read_text() == commit
    got = fakehub.paths_requested("GET")
    assert not any(p.endswith((".bin", ".ckpt", ".msgpack", ".onnx", "README.md")) for p in got)
    assert entry["status"] == "complete" and set(entry["files"]) == NEEDED


def test_variant_fp16_replaces_plain_weights(fakehub, sd_repo):
    snap, _, _ = hub.pull(sd_repo, variant="fp16", quiet=True)
    got = files_in(snap)
    assert "unet/diffusion_pytorch_model.fp16.safetensors" in got
    assert "unet/diffusion_pytorch_model.safetensors" not in got
    # no fp16 text encoder in the repo: falls back to the plain weights
    assert "text_encoder/model.safetensors" in got


def test_resolve_pulls_missing_then_uses_cache_offline_without_network(fakehub, sd_repo, no_network):
    ref = resolve(sd_repo, quiet=True)
    assert ref.source == "hub" and ref.kind == "diffusers" and ref.repo_id == sd_repo
    assert ref.family == "sd1" and ref.revision == fakehub.repos[sd_repo].commit
    n = len(fakehub.requests)
    attempts = no_network()
    again = resolve(sd_repo, offline=True)
    assert again.path == ref.path
    assert len(fakehub.requests) == n and attempts == []
