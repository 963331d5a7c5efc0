"""Single-file checkpoints: family detection from headers, local configs, no network at load time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from diffcli import families
from diffcli.errors import UsageError
from diffcli.models import hub, resolve
from diffcli.models.checkpoint_info import detect_family, dtypes
from diffcli.models.single_file import CONFIGS, load_pipeline, materialize_config, tokenizer_repo

from .fakehub import safetensors_bytes

TE1 = "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"
TE2 = "cond_stage_model.model.token_embedding.weight"
XL = "conditioner.embedders.1.model.token_embedding.weight"
CONV_IN = "model.diffusion_model.input_blocks.0.0.weight"


def ckpt(tmp_path: Path, keys: dict, name="model.safetensors") -> Path:
    p = tmp_path / name
    p.write_bytes(safetensors_bytes(keys))
    return p


@pytest.mark.parametrize(
    "keys,family",
    [
        ({TE1: ("F16", [4, 2]), CONV_IN: ("F16", [8, 4, 3, 3])}, "sd1"),
        ({TE1: ("F16", [4, 2]), CONV_IN: ("F16", [8, 9, 3, 3])}, "sd1-inpaint"),
        ({TE2: ("F16", [4, 2]), CONV_IN: ("F16", [8, 4, 3, 3])}, "sd2"),
        ({XL: ("F16", [4, 2]), CONV_IN: ("F16", [8, 4, 3, 3])}, "sdxl"),
        ({"foo": ("F32", [2])}, "unknown"),
    ],
)
def test_family_from_safetensors_header(tmp_path, keys, family):
    assert detect_family(ckpt(tmp_path, keys)) == family


def test_shipped_configs_are_json_only_and_complete():
    with_configs = [f.name for f in families.families().values() if f.config_repo and f.variant_of is None]
    assert with_configs == ["sd1", "sd2", "sdxl"]  # every family whose single files diffcli completes
    for family in with_configs:
        d = CONFIGS / family
        index = json.loads((d / "model_index.json").read_text())
        for comp, value in index.items():
            if isinstance(value, list) and value[0]:
                assert (d / comp).is_dir(), (family, comp)
        assert all(p.suffix == ".json" for p in d.rglob("*") if p.is_file())


def _seed_tokenizer_cache(family: str) -> None:
    """Put tokenizer files where a `models pull` of a single file would have fetched them."""
    repo = tokenizer_repo(family)
    snap = hub.repo_folder(repo) / "snapshots" / ("c" * 40)
    for folder in [p.name for p in (CONFIGS / family).iterdir() if p.name.startswith("tokenizer")]:
        (snap / folder).mkdir(parents=True, exist_ok=True)
        (snap / folder / "vocab.json").write_text(json.dumps({"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2}))
        (snap / folder / "merges.txt").write_text("#version: 0.2\n")


def test_local_single_file_resolves_offline_and_loads_with_local_config_only(tmp_path, no_network, monkeypatch):
    path = ckpt(tmp_path, {TE1: ("F16", [4, 2]), CONV_IN: ("F16", [8, 4, 3, 3])})
    attempts = no_network()
    ref = resolve(str(path), offline=True)
    assert ref.kind == "single_file" and ref.source == "file" and ref.family == "sd1"
    assert Path(ref.config) == CONFIGS / "sd1"
    assert dtypes(path) == ["F16"]
    with pytest.raises(UsageError, match="tokenizer files"):
        load_pipeline(ref, None)
    _seed_tokenizer_cache("sd1")
    import diffusers

    seen = {}

    def fake_from_single_file(cls, checkpoint, **kwargs):
        seen.update(kwargs, checkpoint=checkpoint, cls=cls.__name__)
        return "pipeline"

    monkeypatch.setattr(diffusers.StableDiffusionPipeline, "from_single_file", classmethod(fake_from_single_file))
    assert load_pipeline(ref, None) == "pipeline"
    config = Path(seen["config"])
    assert seen["local_files_only"] is True and seen["cls"] == "StableDiffusionPipeline"
    assert (config / "tokenizer" / "vocab.json").is_file() and (config / "unet" / "config.json").is_file()
    assert attempts == []


def test_inpaint_single_file_gets_an_inpaint_config(tmp_path):
    _seed_tokenizer_cache("sdxl")
    config = materialize_config("sdxl-inpaint")
    assert json.loads((config / "model_index.json").read_text())["_class_name"] == "StableDiffusionXLInpaintPipeline"
    assert json.loads((config / "unet" / "config.json").read_text())["in_channels"] == 9
    assert (config / "tokenizer_2" / "merges.txt").is_file()
