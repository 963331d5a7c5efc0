"""Single-file checkpoints from plain http(s) URLs."""

from __future__ import annotations

import hashlib
import threading

import pytest

from diffcli.errors import RuntimeFailure, UsageError
from diffcli.models import resolve, url_store, urls, verify

from .fakehub import Fault, safetensors_bytes

SD1_KEYS = {
    "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": ("F16", [8, 4]),
    "model.diffusion_model.input_blocks.0.0.weight": ("F16", [8, 4, 3, 3]),
    "first_stage_model.decoder.conv_in.weight": ("F16", [4, 4, 3, 3]),
}


@pytest.fixture
def ckpt(fakehub):
    data = safetensors_bytes({**SD1_KEYS, "big": ("F32", [100_000])}, 3)
    fakehub.plain["/files/model.safetensors"] = (data, {})
    return f"{fakehub.url}/files/model.safetensors", data


def test_url_pull_stores_under_diffcli_home_and_records_hash(ckpt, isolated_home):
    url, data = ckpt
    path, entry = urls.pull(url, quiet=True)
    assert path.read_bytes() == data
    assert str(path).startswith(str(isolated_home / "diffcli" / "checkpoints"))
    assert entry["sha256"] == hashlib.sha256(data).hexdigest() and entry["status"] == "complete"
    ref = resolve(url, offline=True)
    assert ref.kind == "single_file" and ref.source == "url" and ref.family == "sd1"
    assert ref.config and ref.config.endswith("sd1")
    assert not verify.verify(url)[0].damaged


def test_url_hash_mismatch_keeps_nothing(ckpt):
    url, data = ckpt
    with pytest.raises(RuntimeFailure, match="sha256 mismatch"):
        urls.pull(url + "#sha256=" + "0" * 64, quiet=True)
    folder = url_store.target_path(url).parent
    assert not [p for p in folder.iterdir()] if folder.exists() else True
    with pytest.raises(UsageError, match="models pull"):
        resolve(url, offline=True)


def test_url_server_sha256_header_is_checked(fakehub):
    data = safetensors_bytes(SD1_KEYS, 1)
    fakehub.plain["/files/lying.safetensors"] = (data, {"X-Linked-Etag": '"' + "ab" * 32 + '"'})
    with pytest.raises(RuntimeFailure, match="sha256 mismatch"):
        urls.pull(f"{fakehub.url}/files/lying.safetensors", quiet=True)
    assert not url_store.target_path(f"{fakehub.url}/files/lying.safetensors").exists()


def test_url_cut_off_then_resumed_with_range(ckpt, fakehub):
    url, data = ckpt
    fakehub.faults["/files/model.safetensors"] = Fault(cut_after=150_000, times=1)
    with pytest.raises(RuntimeFailure, match="resume"):
        urls.pull(url, quiet=True)
    part = url_store.target_path(url).with_name("model.safetensors.incomplete")
    assert part.exists() and not url_store.target_path(url).exists()
    with pytest.raises(UsageError):
        resolve(url, offline=True)
    path, _ = urls.pull(url, quiet=True)
    assert path.read_bytes() == data
    assert fakehub.requests[-1][2].get("Range") == f"bytes={part.stat().st_size if part.exists() else 150_000}-"


def test_url_size_mismatch_is_an_error(ckpt, fakehub):
    url, data = ckpt
    fakehub.plain["/files/model.safetensors"] = (data, {"X-Linked-Size": str(len(data) + 10)})
    with pytest.raises(RuntimeFailure, match="expected"):
        urls.pull(url, quiet=True)
    assert not url_store.target_path(url).exists()


def test_concurrent_url_pulls_share_one_download(ckpt, fakehub):
    url, data = ckpt
    fakehub.faults["/files/model.safetensors"] = Fault(delay=0.02, times=-1)
    results, errors = [], []

    def run():
        try:
            results.append(urls.pull(url, quiet=True)[0])
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    [t.start() for t in threads]
    [t.join(60) for t in threads]
    assert not errors and len(set(results)) == 1
    assert results[0].read_bytes() == data
    assert len([p for p in fakehub.paths_requested("GET") if p.endswith("model.safetensors")]) == 1


def test_pickle_url_refused_without_allow_pickle(fakehub):
    fakehub.plain["/files/old.ckpt"] = (b"x" * 10, {})
    with pytest.raises(UsageError, match="--allow-pickle"):
        urls.pull(f"{fakehub.url}/files/old.ckpt", quiet=True)
    assert fakehub.requests == []


def test_rm_url_checkpoint(ckpt):
    from helpers import cli

    url, _ = ckpt
    path, _ = urls.pull(url, quiet=True)
    r = cli("models", "rm", url, "--dry-run")
    assert r.exit_code == 0 and str(path) in r.stdout and path.exists()
    r = cli("models", "rm", url, "-y")
    assert r.exit_code == 0, r.stderr
    assert not path.exists() and urls.find_local(url) is None
    assert url not in cli("models", "list", "--json").stdout


def test_cli_pull_of_sd1_checkpoint_fetches_tokenizer_files(ckpt, fakehub):
    from diffcli.models.single_file import _cached_tokenizer_file, tokenizer_repo

    from .fakehub import sd_repo_files
    from helpers import cli

    fakehub.add_repo(tokenizer_repo("sd1"), sd_repo_files())
    url, _ = ckpt
    r = cli("models", "pull", url, "-q")
    assert r.exit_code == 0, r.stderr
    assert _cached_tokenizer_file(tokenizer_repo("sd1"), "tokenizer", "vocab.json") is not None
