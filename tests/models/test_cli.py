"""`diffcli models pull|list|info|rm|verify` through the real Typer app (and once as a subprocess)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from diffcli.models import hub, registry, resolve

from .fakehub import sd_repo_files
from helpers import cli, subprocess_cli

UNET = "unet/diffusion_pytorch_model.safetensors"


def test_pull_prints_path_on_stdout_and_progress_on_stderr(fakehub, sd_repo):
    r = cli("models", "pull", sd_repo)
    assert r.exit_code == 0, r.stderr
    snap = Path(r.stdout.strip())
    assert (snap / "model_index.json").is_file()
    assert "pulling acme/tiny-sd" in r.stderr  # rich progress bar goes to stderr


def test_list_and_info(fakehub, sd_repo):
    assert cli("models", "pull", sd_repo, "-q").exit_code == 0
    resolve(sd_repo)  # records last use
    r = cli("models", "list", "--json")
    assert r.exit_code == 0, r.stderr
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert rows[sd_repo]["source"] == "hub" and rows[sd_repo]["family"] == "sd1"
    assert rows[sd_repo]["size"] > 0 and rows[sd_repo]["last_used"]
    if "tiny" in rows:
        assert rows["tiny"]["source"] == "bundled"
    table = cli("models", "list")
    assert sd_repo in table.stdout and "sd1" in table.stdout
    r = cli("models", "info", sd_repo, "--json")
    assert r.exit_code == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["components"]["unet"] == "diffusers.UNet2DConditionModel"
    assert d["dtypes"] == ["F32"] and d["revision"] == fakehub.repos[sd_repo].commit
    assert {f["file"] for f in d["files"]} >= {UNET, "model_index.json"}
    assert d["recommended"]["steps"] and d["recommended"]["scheduler"]
    assert "components:" in cli("models", "info", sd_repo).stdout


def test_alias_pull_uses_alias_defaults(fakehub):
    fakehub.add_repo("stabilityai/sd-turbo", sd_repo_files())
    r = cli("models", "pull", "sd-turbo", "-q")
    assert r.exit_code == 0, r.stderr
    ref = resolve("sd-turbo", offline=True)
    assert ref.defaults == {"steps": 1, "cfg": 0.0, "scheduler": "euler-a", "width": 512, "height": 512}
    names = [row["name"] for row in json.loads(cli("models", "list", "--json").stdout)]
    assert "sd-turbo" in names


def test_rm_asks_plans_and_keeps_other_revisions_intact(fakehub):
    files = sd_repo_files()
    repo = fakehub.add_repo("acme/two", files)
    v2 = dict(files)
    v2["unet/diffusion_pytorch_model.safetensors"] = files[UNET][:-4] + b"\x01\x02\x03\x04"
    repo.refs["v2"] = "b" * 40
    repo.by_commit["b" * 40] = v2
    assert cli("models", "pull", "acme/two", "-q").exit_code == 0
    assert cli("models", "pull", "acme/two@v2", "-q").exit_code == 0
    r = cli("models", "rm", "acme/two@v2")  # no terminal, no -y: refused before a word of removing
    assert r.exit_code == 2 and "-y" in r.stderr and r.stdout == "" and "removing" not in r.stderr
    r = cli("models", "rm", "acme/two@v2", "--dry-run")
    assert r.exit_code == 0 and "would remove" in r.stderr and "b" * 40 in r.stdout
    assert (hub.repo_folder("acme/two") / "snapshots" / ("b" * 40)).is_dir()
    r = cli("models", "rm", "acme/two@v2", "-y")
    assert r.exit_code == 0, r.stderr
    assert not (hub.repo_folder("acme/two") / "snapshots" / ("b" * 40)).exists()
    # the main revision shares all blobs but the UNet: still complete and intact
    assert cli("models", "verify", "acme/two").exit_code == 0
    assert resolve("acme/two", offline=True).revision == repo.commit
    blobs = list((hub.repo_folder("acme/two") / "blobs").iterdir())
    assert len(blobs) == 11
    assert cli("models", "rm", "acme/two", "-y").exit_code == 0
    assert not hub.repo_folder("acme/two").exists()
    assert not [k for k in registry.entries() if "acme/two" in k]


def test_rm_refuses_bundled_and_user_files(tmp_path):
    assert cli("models", "rm", "tiny", "-y").exit_code == 2
    f = tmp_path / "mine.safetensors"
    f.write_bytes(b"x")
    r = cli("models", "rm", str(f), "-y")
    assert r.exit_code == 2 and f.exists()


def test_verify_detects_and_repairs_damage(fakehub, sd_repo):
    assert cli("models", "pull", sd_repo, "-q").exit_code == 0
    assert cli("models", "verify").exit_code == 0
    blob = Path(os.path.realpath(resolve(sd_repo, offline=True).path / UNET))
    blob.write_bytes(b"\0" * blob.stat().st_size)  # same size, wrong content
    r = cli("models", "verify", sd_repo)
    assert r.exit_code == 1 and "damaged" in r.stdout and "hash mismatch" in r.stdout
    r = cli("models", "verify", sd_repo, "--repair", "-q")
    assert r.exit_code == 0, r.stdout + r.stderr
    assert "repaired" in r.stdout
    assert cli("models", "verify", sd_repo, "--json").exit_code == 0


def test_verify_model_fetched_by_another_tool(fakehub, sd_repo):
    """A snapshot downloaded with plain huggingface_hub is reused (adopted) and verifiable."""
    from huggingface_hub import snapshot_download

    snap = snapshot_download(
        sd_repo,
        cache_dir=str(hub.hub_cache_dir()),
        endpoint=fakehub.url,
        allow_patterns=["*.json", "*.txt", "*/*.safetensors"],
        ignore_patterns=["*fp16*"],
    )
    ref = resolve(sd_repo, offline=True)
    assert ref.path == Path(snap)
    assert cli("models", "verify", sd_repo).exit_code == 0
    rows = {row["name"]: row for row in json.loads(cli("models", "list", "--json").stdout)}
    assert rows[sd_repo]["status"] in ("adopted", "complete")


def test_subprocess_pull_offline_message(fakehub, sd_repo):
    r = subprocess_cli("models", "pull", sd_repo, "-q", timeout=60)
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip()).is_dir()
    r = subprocess_cli("models", "info", "acme/other", timeout=60, env={"HF_HUB_OFFLINE": "1"})
    assert r.returncode == 2
    assert r.stderr.startswith("diffcli: error: ") and "diffcli models pull acme/other" in r.stderr
    assert "Traceback" not in r.stderr
