"""Safety: pickle weights, remote code, path traversal, secrets in messages."""

from __future__ import annotations

import json
import pickle

import pytest

from diffcli.errors import DiffcliError, UsageError
from diffcli.models import hub, resolve
from diffcli.models.names import parse, safe_basename, url_filename, validate_repo_file, validate_revision
from diffcli.models.safety import scrub

from .fakehub import sd_repo_files
from helpers import cli

TOKEN = "hf_SuperSecretToken0123456789"


def _pickle_only_repo():
    files = sd_repo_files()
    del files["unet/diffusion_pytorch_model.safetensors"]
    del files["unet/diffusion_pytorch_model.fp16.safetensors"]
    return files


def test_pickle_only_component_is_refused_unless_allowed(fakehub):
    fakehub.add_repo("acme/pickly", _pickle_only_repo())
    with pytest.raises(UsageError, match="--allow-pickle"):
        hub.pull("acme/pickly", quiet=True)
    assert not any(p.endswith(".bin") for p in fakehub.paths_requested("GET"))
    snap, _, _ = hub.pull("acme/pickly", allow_pickle=True, quiet=True)
    assert (snap / "unet/diffusion_pytorch_model.bin").exists()
    # the text encoder has safetensors too: its .bin duplicate is still not fetched
    assert not (snap / "text_encoder/pytorch_model.bin").exists()
    with pytest.raises(UsageError, match="pickle"):
        resolve("acme/pickly", offline=True)
    assert resolve("acme/pickly", offline=True, allow_pickle=True).allow_pickle


def test_a_list_of_numbers_is_a_setting_and_a_mixed_pair_is_still_checked():
    """model_index.json may hold pipeline settings that are lists (Qwen-Image 2.1's sample_sigmas): no component;
    a pair naming a library beside a number is still a component, refused as custom code."""
    from diffcli.models.safety import check_model_index

    index = {"_class_name": "QwenImage21Pipeline", "vae": ["diffusers", "AutoencoderKLQwenImage21"]}
    assert check_model_index({**index, "sample_sigmas": [1.0, 0.5]}, "m") == ["vae"]
    with pytest.raises(UsageError, match="custom code"):
        check_model_index({**index, "sample_sigmas": ["evil_module", 5]}, "m")


@pytest.mark.parametrize(
    "change",
    [
        {"_class_name": ["my_pipeline", "MyPipeline"]},
        {"unet": ["my_unet_module", "FancyUNet"]},
        {"_extra_file": "pipeline.py"},
    ],
)
def test_custom_code_is_rejected(fakehub, change):
    files = sd_repo_files()
    index = json.loads(files["model_index.json"])
    if "_extra_file" in change:
        files["pipeline.py"] = b"import os; os.system('touch /tmp/pwned')\n"
    else:
        index.update(change)
    files["model_index.json"] = json.dumps(index).encode()
    fakehub.add_repo("acme/custom", files)
    with pytest.raises(UsageError, match="--trust-remote-code"):
        hub.pull("acme/custom", quiet=True)
    assert not any(p.endswith(".py") for p in fakehub.paths_requested("GET"))


@pytest.mark.parametrize("bad", ["../x.json", "unet/../../etc/passwd", "/etc/passwd", "a//b", "C:evil", "a\\b"])
def test_unsafe_repo_file_names_are_rejected(bad):
    with pytest.raises(UsageError):
        validate_repo_file(bad)


@pytest.mark.parametrize("name", ["org/../name", "../../x", "org/na me", "a/b/c", "org/name@../main", "org/name@/abs"])
def test_unsafe_model_names_are_rejected(name):
    with pytest.raises(UsageError):
        parse(name)


@pytest.mark.parametrize("url", ["https://example.com/..", "https://example.com/a/%2e%2e", "https://example.com/"])
def test_unsafe_url_file_names_are_rejected(url):
    with pytest.raises(UsageError):
        url_filename(url)


def test_revision_and_basename_validation():
    assert validate_revision("refs/pr/1") == "refs/pr/1"
    with pytest.raises(UsageError):
        validate_revision("main/../x")
    with pytest.raises(UsageError):
        safe_basename("..")


def test_token_never_appears_in_errors(fakehub, capsys):
    with pytest.raises(DiffcliError) as info:
        hub.pull("acme/private", token=TOKEN, quiet=True)
    assert TOKEN not in str(info.value)
    r = cli("models", "pull", "acme/private", "--token", TOKEN, "-q")
    assert r.exit_code == 2
    assert TOKEN not in r.stdout + r.stderr and "not found" in r.stderr
    r = cli("models", "pull", f"{fakehub.url}/files/missing.safetensors?token={TOKEN}", "--token", TOKEN, "-q")
    assert r.exit_code == 1 and TOKEN not in r.stdout + r.stderr
    assert TOKEN not in capsys.readouterr().err
    assert scrub(f"Authorization: Bearer {TOKEN}") == "Authorization: Bearer ***"


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_crafted_pickle_never_runs(tmp_path):
    import torch

    from diffcli.models.single_file import load_pipeline

    marker = tmp_path / "pwned"
    raw = tmp_path / "evil.ckpt"
    raw.write_bytes(pickle.dumps({"state_dict": _Evil(str(marker))}))
    zipped = tmp_path / "evil2.ckpt"
    torch.save({"state_dict": _Evil(str(marker))}, zipped)
    assert not marker.exists()
    for path in (raw, zipped):
        with pytest.raises(UsageError, match="pickle"):
            resolve(str(path), offline=True)  # refused by default
        ref = resolve(str(path), offline=True, allow_pickle=True)
        assert ref.kind == "single_file"
        with pytest.raises(UsageError, match="refused"):
            load_pipeline(ref, None, allow_pickle=True)
        assert not marker.exists()
