"""Interrupted, damaged and concurrent downloads never leave something that looks complete."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from diffcli.errors import RuntimeFailure, UsageError
from diffcli.models import hub, registry, resolve, verify

from .fakehub import Fault, sd_repo_files

UNET = "unet/diffusion_pytorch_model.safetensors"


def blobs(repo_id: str) -> list[Path]:
    d = hub.repo_folder(repo_id) / "blobs"
    return sorted(d.iterdir()) if d.is_dir() else []


def assert_not_usable(name: str) -> None:
    with pytest.raises(UsageError, match="models pull"):
        resolve(name, offline=True)


def test_connection_cut_mid_file_is_resumed_with_range(fakehub, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 65536)  # resume works at chunk granularity
    fakehub.add_repo("acme/big", sd_repo_files(big=400_000))
    fakehub.faults[f"acme/big/{UNET}"] = Fault(cut_after=150_000, times=1)
    snap, _, _ = hub.pull("acme/big", quiet=True)
    resumed = [h for m, p, h in fakehub.requests if m == "GET" and p.endswith(UNET) and "Range" in h]
    assert resumed, "the second request should resume with a Range header"
    assert not verify.verify("acme/big")[0].damaged
    assert (snap / UNET).stat().st_size == len(fakehub.repos["acme/big"].files[UNET])


def test_wrong_size_is_an_error_and_nothing_enters_the_cache(fakehub):
    repo = fakehub.add_repo("acme/short", sd_repo_files())
    fakehub.faults[f"acme/short/{UNET}"] = Fault(short=7, times=-1)
    with pytest.raises(RuntimeFailure, match="download failed|size"):
        hub.pull("acme/short", quiet=True)
    assert not (hub.repo_folder("acme/short") / "snapshots" / repo.commit / UNET).exists()
    assert not [b for b in blobs("acme/short") if b.stat().st_size == len(repo.files[UNET]) - 7]
    assert_not_usable("acme/short")


def test_wrong_hash_is_an_error_and_is_discarded_then_a_clean_pull_works(fakehub):
    repo = fakehub.add_repo("acme/bad", sd_repo_files())
    fakehub.faults[f"acme/bad/{UNET}"] = Fault(corrupt=True, times=-1)
    with pytest.raises(RuntimeFailure, match="hash mismatch"):
        hub.pull("acme/bad", quiet=True)
    assert not (hub.repo_folder("acme/bad") / "snapshots" / repo.commit / UNET).exists()
    import hashlib

    bad_blob = hub.repo_folder("acme/bad") / "blobs" / hashlib.sha256(repo.files[UNET]).hexdigest()
    assert not bad_blob.exists()
    assert registry.get(hub.registry_key("acme/bad", None))["status"] == "partial"
    assert_not_usable("acme/bad")
    del fakehub.faults[f"acme/bad/{UNET}"]
    ref = resolve("acme/bad", quiet=True)
    assert (ref.path / UNET).read_bytes() == repo.files[UNET]


def _spawn_pull(name: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "diffcli", "models", "pull", name, "-q", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )


def _wait_for(cond, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return False


def test_killed_pull_leaves_nothing_complete_and_next_pull_finishes(fakehub):
    repo = fakehub.add_repo("acme/slow", sd_repo_files(big=2_000_000))
    fakehub.faults[f"acme/slow/{UNET}"] = Fault(delay=0.2, times=1)
    proc = _spawn_pull("acme/slow")
    try:
        assert _wait_for(lambda: any(p.endswith(UNET) for p in fakehub.paths_requested("GET")))
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    snap = hub.repo_folder("acme/slow") / "snapshots" / repo.commit
    assert not (snap / UNET).exists()
    assert not (hub.repo_folder("acme/slow") / "refs" / "main").exists()
    assert_not_usable("acme/slow")
    snap2, _, _ = hub.pull("acme/slow", quiet=True)  # the fault was for one response only
    assert (snap2 / UNET).read_bytes() == repo.files[UNET]
    assert not verify.verify("acme/slow")[0].damaged
    assert resolve("acme/slow", offline=True).path == snap2


def test_two_processes_pulling_at_once_end_with_one_correct_copy(fakehub):
    repo = fakehub.add_repo("acme/race", sd_repo_files(big=600_000))
    fakehub.faults[f"acme/race/{UNET}"] = Fault(delay=0.05, times=-1)
    procs = [_spawn_pull("acme/race"), _spawn_pull("acme/race")]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    paths = {o[0].strip() for o in outs}
    assert len(paths) == 1
    snap = Path(paths.pop())
    assert (snap / UNET).read_bytes() == repo.files[UNET]
    names = [b.name for b in blobs("acme/race")]
    assert not [n for n in names if "incomplete" in n]
    assert len(names) == len(set(names)) == 11  # one blob per needed file
    unet_gets = [p for p in fakehub.paths_requested("GET") if p.endswith(UNET)]
    assert len(unet_gets) == 1  # the second process waited and reused the first one's download
    assert not verify.verify("acme/race")[0].damaged


def test_missing_model_offline_fails_fast_without_network(fakehub, no_network, monkeypatch):
    attempts = no_network()
    t0 = time.monotonic()
    with pytest.raises(UsageError, match=r"diffcli models pull acme/absent"):
        resolve("acme/absent", offline=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UsageError, match=r"diffcli models pull sd15"):
        resolve("sd15")
    assert time.monotonic() - t0 < 2 and attempts == [] and fakehub.requests == []
