"""Which files of a diffusers repo a pipeline needs (like diffusers' own download filtering).

Given the repo's file list and its model_index.json: the index, each component's configs and
tokenizer files, and one set of weights per component: safetensors (the requested variant when it
exists, else the plain one). No .bin/.ckpt duplicates, no ONNX/Flax/OpenVINO, no other variants.
"""

from __future__ import annotations

import re

from diffcli.models.safety import refuse_pickle

ROOT_FILES = ("model_index.json", "diffcli.json")
CONFIG_EXT = (".json", ".txt", ".model", ".tiktoken", ".jinja")  # configs, vocab/merges, sentencepiece, chat templates
WEIGHT_EXT = (".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".msgpack", ".onnx", ".h5", ".gguf", ".xml", ".pb")
_SHARD = re.compile(r"-\d{5}-of-\d{5}")


def _variant(filename: str) -> str | None:
    """`model.fp16.safetensors` -> fp16; `x.safetensors.index.fp16.json` -> fp16; plain -> None."""
    base = filename.rsplit("/", 1)[-1]
    if base.endswith(".json") and ".index." in base:
        tail = base.split(".index.", 1)[1][: -len(".json")]
        return tail or None
    stem = base.rsplit(".", 1)[0]
    stem = _SHARD.sub("", stem)
    return stem.split(".", 1)[1] if "." in stem else None


def _is_weight(filename: str) -> bool:
    return filename.lower().endswith(WEIGHT_EXT) or (".index." in filename and filename.endswith(".json"))


def _weights_of_kind(files: list[str], ext: str, variant: str | None) -> list[str]:
    chosen = [f for f in files if (f.endswith(ext) or (f.endswith(".json") and f"{ext}.index" in f))]
    if variant:
        wanted = [f for f in chosen if _variant(f) == variant]
        if any(f.endswith(ext) for f in wanted):
            return wanted
    return [f for f in chosen if _variant(f) is None]


def select_files(
    repo_files: list[str],
    components: list[str],
    *,
    variant: str | None = None,
    allow_pickle: bool = False,
    where: str = "model",
) -> list[str]:
    """The files to fetch, sorted; raises UsageError when a component has only pickle weights."""
    present = set(repo_files)
    selected = [f for f in ROOT_FILES if f in present]
    for comp in components:
        in_folder = [f for f in repo_files if f.startswith(comp + "/") and f.count("/") == 1]
        configs = [f for f in in_folder if f.endswith(CONFIG_EXT) and not _is_weight(f)]
        selected += configs
        weights = _weights_of_kind(in_folder, ".safetensors", variant)
        if not any(f.endswith(".safetensors") for f in weights):
            pickles = _weights_of_kind(in_folder, ".bin", variant)
            if any(f.endswith(".bin") for f in pickles):
                if not allow_pickle:
                    raise refuse_pickle(f"{where}: component '{comp}' has only pickle weights")
                weights = pickles
            else:
                weights = []
        selected += weights
    return sorted(set(selected))


def select_root_model_files(
    repo_files: list[str], *, variant: str | None = None, allow_pickle: bool = False, where: str = "model"
) -> list[str]:
    """The files of a one-model repo (a ControlNet: config.json and its weights at the top level), sorted."""
    root = [f for f in repo_files if "/" not in f]
    selected = [f for f in root if f.endswith(CONFIG_EXT) and not _is_weight(f)]
    weights = _weights_of_kind(root, ".safetensors", variant)
    if not any(f.endswith(".safetensors") for f in weights):
        weights = _weights_of_kind(root, ".bin", variant)
        if any(f.endswith(".bin") for f in weights) and not allow_pickle:
            raise refuse_pickle(f"{where}: only pickle weights")
    return sorted(set(selected + weights))
