"""Load a single-file (original/LDM format) checkpoint as a diffusers pipeline, with no network.

diffcli ships the diffusers configs of each supported family in `diffcli/models/configs/<family>`
(JSON only). The CLIP tokenizer vocabularies (vocab.json/merges.txt, ~1.5 MB each) are not shipped:
`fetch_tokenizers` takes them from the family's reference repo on the hub into the standard hub
cache when a single file is pulled, and `load_pipeline` only ever reads them from there.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from diffcli import families, loading, paths
from diffcli.errors import RuntimeFailure, UsageError

CONFIGS = Path(__file__).parent / "configs"
TOKENIZER_FILES = ("vocab.json", "merges.txt")


def tokenizer_repo(family: str | None) -> str | None:
    """The diffusers repo whose tokenizer/ folders complete FAMILY's single-file checkpoints (its config repo)."""
    spec = families.get(family)
    return spec.config_repo if spec is not None else None


def base_family(family: str | None) -> str | None:
    if not family:
        return None
    base = family.replace("-inpaint", "")
    return base if tokenizer_repo(base) else None


def config_dir_for(family: str | None) -> Path | None:
    """The shipped config directory for a family (None when diffcli has none)."""
    base = base_family(family)
    return CONFIGS / base if base and (CONFIGS / base).is_dir() else None


def _tokenizer_folders(config: Path) -> list[str]:
    return sorted(p.name for p in config.iterdir() if p.is_dir() and p.name.startswith("tokenizer"))


def _cached_tokenizer_file(repo_id: str, folder: str, filename: str) -> Path | None:
    from diffcli.models import hub

    base = hub.repo_folder(repo_id) / "snapshots"
    if not base.is_dir():
        return None
    for snap in sorted(base.iterdir()):
        candidate = snap / folder / filename
        if candidate.is_file():
            return candidate
    return None


def fetch_tokenizers(family: str | None, *, token: str | None = None, quiet: bool = False, progress=None) -> None:
    """Download the family's tokenizer files into the hub cache (a few MB; done once).

    PROGRESS: see diffcli.models.progress (`quiet=True` is "quiet")."""
    base = base_family(family)
    config = config_dir_for(family)
    if base is None or config is None:
        return
    repo = tokenizer_repo(base)
    wanted = [
        (f, n)
        for f in _tokenizer_folders(config)
        for n in TOKENIZER_FILES
        if _cached_tokenizer_file(repo, f, n) is None
    ]
    if not wanted:
        return
    from huggingface_hub import hf_hub_download

    from diffcli.models import hub
    from diffcli.models.progress import Feedback

    feedback = Feedback.of(progress, quiet)
    with (
        hub.hub_errors(f"tokenizer files from {repo}", token),
        feedback.bar(f"pulling {base} tokenizer files", None, model=repo) as bar,
    ):
        for folder, name in wanted:
            hf_hub_download(
                repo,
                f"{folder}/{name}",
                cache_dir=str(hub.hub_cache_dir()),
                endpoint=hub.endpoint(),
                token=token or None,
                tqdm_class=feedback.tqdm_class(bar),
            )


def materialize_config(family: str) -> Path:
    """A complete local config dir for `family` (shipped JSON + cached tokenizer files)."""
    base = base_family(family)
    src = config_dir_for(family)
    if base is None or src is None:
        raise UsageError(
            f"single-file checkpoints of family '{family}' are not supported; "
            "convert it to a diffusers directory, or use a sd1/sd2/sdxl checkpoint"
        )
    dest = paths.home() / "configs" / family
    repo = tokenizer_repo(base)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    for folder in _tokenizer_folders(src):
        for name in TOKENIZER_FILES:
            cached = _cached_tokenizer_file(repo, folder, name)
            if cached is None:
                shutil.rmtree(tmp, ignore_errors=True)
                raise UsageError(
                    f"the {base} tokenizer files are not on this machine; run `diffcli models pull` on the "
                    f"checkpoint once while online (it fetches {repo}/{folder}/{name})"
                )
            shutil.copyfile(cached, tmp / folder / name)
    if family.endswith("-inpaint"):
        index = json.loads((tmp / "model_index.json").read_text())
        index["_class_name"] = families.pipeline_class_for(index["_class_name"], "inpaint") or index["_class_name"]
        (tmp / "model_index.json").write_text(json.dumps(index, indent=2))
        unet = json.loads((tmp / "unet" / "config.json").read_text())
        unet["in_channels"] = 9
        (tmp / "unet" / "config.json").write_text(json.dumps(unet, indent=2))
    shutil.rmtree(dest, ignore_errors=True)
    tmp.replace(dest)
    return dest


def check_pickle(path: Path) -> None:
    """Load a pickle checkpoint with weights_only=True: anything but tensors is refused, never run."""
    import pickle
    import warnings

    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, ValueError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"{path}: refused: the pickle holds more than tensors ({first})") from None


def load_pipeline(ref, torch_dtype=None, allow_pickle: bool = False):
    """Build a DiffusionPipeline from `ref` (kind == "single_file") using a local config only."""
    from diffcli.models.safety import is_pickle, refuse_pickle

    path = Path(ref.path)
    if is_pickle(path):
        if not (allow_pickle or getattr(ref, "allow_pickle", False)):
            raise refuse_pickle(str(path))
        check_pickle(path)
    if ref.config:
        config = Path(ref.config)
        if not (config / "model_index.json").is_file():
            raise UsageError(f"{config}: not a diffusers config directory")
        # A shipped family dir lacks tokenizer vocabularies: complete it from the hub cache.
        if config.resolve().parent == CONFIGS.resolve():
            config = materialize_config(ref.family or config.name)
    else:
        config = materialize_config(ref.family or "unknown")
    import diffusers

    index = json.loads((config / "model_index.json").read_text())
    pipeline_cls = getattr(diffusers, str(index.get("_class_name")), None)
    if pipeline_cls is None or not hasattr(pipeline_cls, "from_single_file"):
        raise UsageError(f"{config}: pipeline {index.get('_class_name')} cannot load single files")
    kwargs = {"torch_dtype": torch_dtype} if torch_dtype is not None else {}
    try:
        return loading.from_single_file(pipeline_cls, str(path), config=str(config), local_files_only=True, **kwargs)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise RuntimeFailure(f"{path}: cannot load as a {ref.family or 'diffusers'} checkpoint ({first})") from None


def load_with_base(ref, torch_dtype=None):
    """A pipeline of REF's base model (ref.base, a diffusers folder) with its transformer loaded from the
    single file REF.path instead: a .safetensors (the original BFL/SAI layout or diffusers') or a .gguf,
    whose quantized weights stay quantized (diffusers' GGUF support dequantizes each layer as it runs)."""
    import diffusers

    path, base = Path(ref.path), Path(ref.base)
    index = json.loads((base / "model_index.json").read_text())
    cls = getattr(diffusers, str((index.get("transformer") or [None, None])[1]), None)
    if cls is None or not hasattr(cls, "from_single_file"):
        raise UsageError(f"--base {ref.base_name}: has no transformer that loads from a single file")
    dtype = {"torch_dtype": torch_dtype} if torch_dtype is not None else {}
    kwargs = dict(dtype)
    if path.suffix.lower() == ".gguf":
        from diffusers.utils import is_gguf_available

        if not is_gguf_available():
            raise UsageError(f"{path}: loading GGUF files needs the gguf package: pip install 'diffcli[gguf]'")
        import torch

        kwargs["quantization_config"] = diffusers.GGUFQuantizationConfig(compute_dtype=torch_dtype or torch.float32)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # `torch_dtype` is renamed `dtype` in newer diffusers
        try:
            transformer = loading.from_single_file(
                cls, str(path), config=str(base), subfolder="transformer", local_files_only=True, **kwargs
            )
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise RuntimeFailure(
                f"{path}: cannot load as a {ref.family} transformer of {ref.base_name} ({first})"
            ) from None
        return loading.from_pretrained(
            diffusers.DiffusionPipeline,
            str(base),
            transformer=transformer,
            use_safetensors=True,
            local_files_only=True,
            **dtype,
        )
