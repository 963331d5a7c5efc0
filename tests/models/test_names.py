"""NAME parsing, aliases, file selection (pure functions, no network)."""

from __future__ import annotations

import json

import pytest

from diffcli.errors import UsageError
from diffcli.models import resolve
from diffcli.models.aliases import ALIASES, SCHEDULERS
from diffcli.models.names import parse
from diffcli.models.selection import select_files


def test_parse_kinds(tmp_path):
    assert parse("tiny").kind == "bundled"
    assert parse("sdxl").kind == "alias" and parse("sdxl").repo_id == ALIASES["sdxl"].repo_id
    s = parse("org/name@v1.0")
    assert (s.kind, s.repo_id, s.revision) == ("hub", "org/name", "v1.0")
    assert parse("https://example.com/x/model.safetensors?download=1").kind == "url"
    f = tmp_path / "m.safetensors"
    f.write_bytes(b"")
    assert parse(str(f)).kind == "file"
    assert parse(str(tmp_path)).kind == "dir"
    with pytest.raises(UsageError, match="no such file"):
        parse(str(tmp_path / "missing.safetensors"))
    with pytest.raises(UsageError, match="unknown model"):
        parse("nonsense")
    with pytest.raises(UsageError, match="URL scheme"):
        parse("ftp://x/y.safetensors")


def test_aliases_are_documented_and_use_known_schedulers():
    doc = (__import__("pathlib").Path(__file__).parents[2] / "docs" / "models.md").read_text()
    for name, alias in ALIASES.items():
        assert alias.defaults.get("scheduler") in SCHEDULERS, name
        assert f"`{name}`" in doc and alias.repo_id in doc


REPO = [
    "model_index.json",
    "README.md",
    "v1-5-pruned.ckpt",
    "v1-5-pruned.safetensors",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "unet/diffusion_pytorch_model.bin",
    "unet/diffusion_pytorch_model.fp16.safetensors",
    "unet/diffusion_pytorch_model.non_ema.safetensors",
    "unet/diffusion_flax_model.msgpack",
    "text_encoder/config.json",
    "text_encoder/model-00001-of-00002.safetensors",
    "text_encoder/model-00002-of-00002.safetensors",
    "text_encoder/model.safetensors.index.json",
    "text_encoder/model.fp16-00001-of-00001.safetensors",
    "text_encoder/model.safetensors.index.fp16.json",
    "text_encoder/pytorch_model.bin",
    "tokenizer/vocab.json",
    "tokenizer/merges.txt",
    "tokenizer/special_tokens_map.json",
    "onnx/unet/model.onnx",
    "safety_checker/model.safetensors",
]


def test_select_plain():
    got = select_files(REPO, ["unet", "text_encoder", "tokenizer"])
    assert got == sorted(
        [
            "model_index.json",
            "unet/config.json",
            "unet/diffusion_pytorch_model.safetensors",
            "text_encoder/config.json",
            "text_encoder/model-00001-of-00002.safetensors",
            "text_encoder/model-00002-of-00002.safetensors",
            "text_encoder/model.safetensors.index.json",
            "tokenizer/vocab.json",
            "tokenizer/merges.txt",
            "tokenizer/special_tokens_map.json",
        ]
    )


def test_select_takes_processors_and_chat_templates_without_weights(tmp_path):
    """A processor component (Qwen-Image-Edit's `processor`, FLUX.2 [dev]'s Pixtral `tokenizer`): its configs,
    vocabularies and chat template (transformers 5 writes chat_template.jinja) are fetched, and a local copy
    without weights in it is complete."""
    from diffcli.models.hub import snapshot_missing

    files = ["model_index.json", "processor/processor_config.json", "processor/chat_template.jinja",
             "processor/tokenizer.json", "vae/config.json", "vae/diffusion_pytorch_model.safetensors"]  # fmt: skip
    assert select_files(files, ["processor", "vae"]) == sorted(files)
    index = {"_class_name": "QwenImageEditPlusPipeline", "processor": ["transformers", "Qwen2VLProcessor"],
             "vae": ["diffusers", "AutoencoderKLQwenImage"]}  # fmt: skip
    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(json.dumps(index) if name == "model_index.json" else "{}")
    assert snapshot_missing(tmp_path, allow_pickle=False) == []
    (tmp_path / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    assert snapshot_missing(tmp_path, allow_pickle=False) == ["vae/ (weights)"]


def test_select_variant():
    got = select_files(REPO, ["unet", "text_encoder"], variant="fp16")
    assert "unet/diffusion_pytorch_model.fp16.safetensors" in got
    assert "text_encoder/model.fp16-00001-of-00001.safetensors" in got
    assert "text_encoder/model.safetensors.index.fp16.json" in got
    assert not [f for f in got if f.endswith((".bin", ".msgpack")) or "non_ema" in f]
    assert "unet/diffusion_pytorch_model.safetensors" not in got


def test_resolve_local_dir_in_place_and_refuses_incomplete(tmp_path):
    (tmp_path / "model_index.json").write_text(
        '{"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"]}'
    )
    with pytest.raises(UsageError, match="incomplete"):
        resolve(str(tmp_path), offline=True)
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "config.json").write_text("{}")
    (tmp_path / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(UsageError, match="--allow-pickle"):
        resolve(str(tmp_path), offline=True)
    ref = resolve(str(tmp_path), offline=True, allow_pickle=True)
    assert ref.path == tmp_path.resolve() and ref.source == "local"


def test_resolving_imports_no_heavy_libraries(tmp_path):
    import subprocess
    import sys

    (tmp_path / "model_index.json").write_text(
        '{"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"]}'
    )
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    code = (
        "import sys\n"
        "import diffcli.cli.app\n"
        "from diffcli.models import resolve\n"
        f"resolve({str(tmp_path)!r}, offline=True)\n"
        "try:\n    resolve('acme/absent', offline=True)\nexcept Exception as e:\n    pass\n"
        "heavy = [m for m in ('torch', 'diffusers', 'transformers', 'huggingface_hub') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
