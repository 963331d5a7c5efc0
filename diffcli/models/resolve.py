"""Resolve what the user typed after --model into a local ModelRef, pulling it when allowed.

Sources: the bundled model ("tiny"), aliases (sd15, sdxl, ...), hub repo ids `org/name[@rev]`,
single-file checkpoints (local path or http(s) URL) and local diffusers directories (used in place).
Nothing here imports torch or diffusers; huggingface_hub is imported only when the network is needed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from diffcli import families
from diffcli.errors import RuntimeFailure, UsageError


@dataclass(frozen=True)
class ModelRef:
    """A model that is present on this machine and ready to load."""

    name: str  # what the user typed (or the alias)
    path: Path  # a diffusers directory, or a single checkpoint file when kind == "single_file"
    source: str  # bundled | local | hub | url | file
    kind: str = "diffusers"  # diffusers | single_file
    revision: str | None = None  # hub commit, when known
    config: str | None = None  # single_file: local diffusers config directory of its family
    defaults: dict = field(default_factory=dict)  # recommended settings from an alias
    family: str | None = None  # sd1 | sd2 | sdxl | ... when known without loading
    repo_id: str | None = None  # hub repo id (hub and alias sources)
    variant: str | None = None  # weights variant that was pulled (e.g. "fp16"): pass to from_pretrained
    allow_pickle: bool = False  # the model was resolved with --allow-pickle
    lora: Path | None = None  # a LoRA directory applied on top of this (base) model
    base: Path | None = None  # kind == "transformer_file": the diffusers model giving every other component
    base_name: str | None = None  # the base as the user named it


def default_model_name(task: str | None = None) -> str:
    """The model used when none is named: $DIFFCLI_MODEL, else the shipped model for TASK (`tiny-edit` for an
    edit, `tiny` otherwise: diffcli.bundled.TASK_MODELS)."""
    from diffcli.bundled import default_model

    return os.environ.get("DIFFCLI_MODEL") or default_model(task)


def offline_requested(offline: bool = False) -> bool:
    flag = (os.environ.get("HF_HUB_OFFLINE") or os.environ.get("DIFFCLI_OFFLINE") or "").strip().upper()
    return offline or flag in ("1", "ON", "YES", "TRUE")


def local_repo(name: str, *, offline: bool, not_here: str, allow_pickle: bool = False, progress="quiet") -> Path:
    """The local folder of the hub repo NAME (`org/name[@revision]`) for a component of a job (a
    ControlNet, a tiny decoder): the huggingface_hub cache's copy, else pulled with PROGRESS, unless
    offline, when NOT_HERE is the usage error."""
    from diffcli.models import hub, names

    repo_id, _, revision = name.partition("@")
    names.validate_repo_id(repo_id)
    found = hub.find_local(repo_id, revision or None, allow_pickle=allow_pickle, name=name)
    if found is None:
        if offline_requested(offline):
            raise UsageError(not_here)
        found = hub.pull(repo_id, revision or None, name=name, allow_pickle=allow_pickle, progress=progress)
    return Path(found[0])


def _not_present(name: str) -> UsageError:
    return UsageError(
        f"model '{name}' is not downloaded and offline mode is on; run `diffcli models pull {name}` while online"
    )


def resolve(
    name: str | None = None,
    *,
    offline: bool = False,
    allow_pickle: bool = False,
    token: str | None = None,
    quiet: bool = False,
    revision: str | None = None,
    variant: str | None = None,
    trust_remote_code: bool = False,
    pull: bool = True,
    sha256: str | None = None,
    progress="auto",
    paths: bool = True,
    task: str | None = None,
) -> ModelRef:
    """Find NAME locally; pull it first when it is missing (unless offline or pull=False).

    NAME None means the default model of TASK (DIFFCLI_MODEL, else the shipped model for the task:
    default_model_name); an empty NAME is a UsageError.
    PROGRESS says where a download's progress (and warnings such as a damaged registry) go:
    "auto" (a rich bar on stderr), "quiet" (nothing; also `quiet=True`), "json" (JSON lines on
    stderr, nothing on stdout), or a callable `emit(event, **data)` such as a JSON reporter's `emit`.
    PATHS False: NAME is judged by its text alone, never as a local path (names.parse).
    """
    from diffcli.models import registry
    from diffcli.models.progress import Feedback

    feedback = Feedback.of(progress, quiet)
    if name is None:
        name = default_model_name(task)
    elif not isinstance(name, str) or not name.strip():
        raise UsageError(
            f"empty model name: give --model a name, or leave it out for the default ('{default_model_name(task)}')"
        )
    with registry.warnings_to(feedback.warning):
        return _resolve(
            name,
            offline=offline,
            allow_pickle=allow_pickle,
            token=token,
            feedback=feedback,
            revision=revision,
            variant=variant,
            trust_remote_code=trust_remote_code,
            pull=pull,
            sha256=sha256,
            paths=paths,
        )


def _resolve(
    name: str,
    *,
    offline: bool,
    allow_pickle: bool,
    token: str | None,
    feedback,
    revision: str | None,
    variant: str | None,
    trust_remote_code: bool,
    pull: bool,
    sha256: str | None,
    paths: bool = True,
) -> ModelRef:
    from diffcli.models import names

    src = names.parse(name, paths=paths)
    offline = offline_requested(offline)
    token = token or None

    if src.kind == "bundled":
        return _resolve_bundled(src)

    if src.kind == "dir":
        return _resolve_dir(
            name,
            src.path,
            offline=offline,
            allow_pickle=allow_pickle,
            token=token,
            feedback=feedback,
            trust_remote_code=trust_remote_code,
            pull=pull,
        )

    if src.kind == "file":
        return _single_file(
            name,
            src.path,
            "file",
            allow_pickle,
            key=f"file:{src.path}",
            fetch=not offline and pull,
            token=token,
            feedback=feedback,
        )

    if src.kind == "url":
        return _resolve_url(
            src.url,
            offline=offline,
            allow_pickle=allow_pickle,
            token=token,
            feedback=feedback,
            pull=pull,
            sha256=sha256,
        )

    # hub repo or alias
    return _resolve_hub(
        name,
        src,
        offline=offline,
        allow_pickle=allow_pickle,
        token=token,
        feedback=feedback,
        revision=revision,
        variant=variant,
        trust_remote_code=trust_remote_code,
        pull=pull,
    )


def _resolve_bundled(src) -> ModelRef:
    """The bundled model SRC names (names.parse's result), checked to be installed."""
    from diffcli.bundled import MODEL_NAME, family, model_dir
    from diffcli.models import registry

    path = model_dir(src.name)
    if src.name != MODEL_NAME and not (path / "model_index.json").is_file():
        raise RuntimeFailure(f"the bundled model {src.name} is not installed ({path} is missing)")
    registry.touch(f"bundled:{src.name}", source="bundled")
    return ModelRef(name=src.name, path=path, source="bundled", family=family(src.name))


def _resolve_dir(
    name: str,
    path: Path,
    *,
    offline: bool,
    allow_pickle: bool,
    token: str | None,
    feedback,
    trust_remote_code: bool,
    pull: bool,
) -> ModelRef:
    """A local directory, used in place: a LoRA (on its base model) or a complete diffusers model."""
    from diffcli.models import lora, registry
    from diffcli.models.safety import refuse_pickle

    if lora.is_lora_dir(path) and not (path / "model_index.json").is_file():  # fused: a model as is
        return _lora(name, path, offline=offline, allow_pickle=allow_pickle, token=token, progress=feedback, pull=pull)
    if not (path / "model_index.json").is_file():
        raise UsageError(f"{name}: directory is not a diffusers model (no model_index.json)")
    from diffcli.models.hub import snapshot_missing

    missing = snapshot_missing(path, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code, name=name)
    if missing:
        if any(m.endswith("(weights)") for m in missing) and list(path.rglob("*.bin")) and not allow_pickle:
            raise refuse_pickle(name)
        raise UsageError(f"{name}: incomplete diffusers model (missing {', '.join(missing[:3])})")
    registry.touch(f"local:{path}", source="local", path=str(path))
    return ModelRef(name=name, path=path, source="local", family=_family(path), allow_pickle=allow_pickle)


def _resolve_url(
    url: str, *, offline: bool, allow_pickle: bool, token: str | None, feedback, pull: bool, sha256: str | None
) -> ModelRef:
    """A single-file checkpoint at URL: the downloaded copy, pulled first when missing and allowed."""
    from diffcli.models import names, url_store, urls

    found = urls.find_local(url)
    if found is None:
        if offline or not pull:
            raise _not_present(names.redact_url(url))
        found = urls.pull(url, sha256=sha256, allow_pickle=allow_pickle, token=token, progress=feedback)
    path, _entry = found
    return _single_file(
        names.redact_url(url),
        path,
        "url",
        allow_pickle,
        key=url_store.registry_key(url),
        fetch=not offline and pull,
        token=token,
        feedback=feedback,
    )


def _resolve_hub(
    name: str,
    src,
    *,
    offline: bool,
    allow_pickle: bool,
    token: str | None,
    feedback,
    revision: str | None,
    variant: str | None,
    trust_remote_code: bool,
    pull: bool,
) -> ModelRef:
    """A hub repo id or an alias (SRC): the local snapshot, pulled first when missing and allowed."""
    from diffcli.models import hub, names, registry
    from diffcli.models.aliases import ALIASES, alias_for_repo
    from diffcli.models.safety import is_pickle, refuse_pickle

    repo_id = src.repo_id
    rev = revision or src.revision
    if rev:
        names.validate_revision(rev)
    alias = src.name if src.kind == "alias" else alias_for_repo(repo_id)
    defaults = dict(ALIASES[alias].defaults) if alias else {}
    found = hub.find_local(repo_id, rev, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code, name=name)
    if found is None:
        if offline or not pull:
            raise _not_present(name)
        found = _pull_hub(
            name,
            repo_id,
            rev,
            alias=alias,
            variant=variant,
            allow_pickle=allow_pickle,
            trust_remote_code=trust_remote_code,
            token=token,
            feedback=feedback,
        )
    snap, commit, entry = found
    files = (entry or {}).get("files") or {}
    if not allow_pickle and any(is_pickle(f) for f in files):
        raise refuse_pickle(name)
    registry.touch(
        hub.registry_key(repo_id, rev),
        source="hub",
        repo_id=repo_id,
        commit=commit,
        revision=rev or "main",
        **({} if entry else {"status": "adopted"}),
    )
    return ModelRef(
        name=name,
        path=snap,
        source="hub",
        revision=commit,
        defaults=defaults,
        family=_family(snap) or (ALIASES[alias].family if alias else None),
        repo_id=repo_id,
        variant=(entry or {}).get("variant"),
        allow_pickle=allow_pickle,
    )


def _pull_hub(
    name: str,
    repo_id: str,
    rev: str | None,
    *,
    alias: str | None,
    variant: str | None,
    allow_pickle: bool,
    trust_remote_code: bool,
    token: str | None,
    feedback,
) -> tuple:
    """hub.pull for _resolve_hub, a gated alias's refusal said as how to get access."""
    from diffcli.models import hub
    from diffcli.models.aliases import ALIASES

    try:
        return hub.pull(
            repo_id,
            rev,
            name=name,
            variant=variant,
            allow_pickle=allow_pickle,
            trust_remote_code=trust_remote_code,
            token=token,
            progress=feedback,
            alias=alias,
        )
    except UsageError as exc:
        if alias and ALIASES[alias].gated and ("gated" in str(exc) or "not found" in str(exc)):
            raise _gated(name, repo_id) from None
        raise


def needs_base(ref: ModelRef) -> bool:
    """Whether REF is a transformer-only file (FLUX.1 / SD 3.x .safetensors or .gguf)."""
    family = families.get(ref.family) if ref.kind == "single_file" else None
    return family is not None and family.single_file == "transformer"


def attach_base(ref: ModelRef, base_name: str | None, **kw) -> ModelRef:
    """REF (a transformer-only file) with the other components of BASE_NAME, a diffusers model of the
    same family resolved like any --model (KW: resolve's options). REF itself when it needs no base;
    a usage error when a base is missing, of the wrong kind or family, or given where none applies."""
    from diffcli.models.layout import read_layout

    if not needs_base(ref):
        if base_name:
            raise UsageError(
                f"--base applies only to a FLUX.1 or SD 3.x transformer file (.safetensors or .gguf); "
                f"{ref.name} is not one"
            )
        return ref
    if not base_name:
        raise UsageError(
            f"{ref.name}: is a {ref.family} transformer only; name the diffusers model that supplies "
            f"its text encoders and VAE with --base (e.g. --base {families.get(ref.family).base_examples})"
        )
    base = resolve(base_name, **kw)
    if base.kind != "diffusers" or base.lora is not None:
        raise UsageError(
            f"--base {base_name}: must be a diffusers model (a folder, repo id or alias), not a "
            f"{'LoRA' if base.lora is not None else 'single file'}"
        )
    family = read_layout(base.path).family
    if family != ref.family:
        raise UsageError(f"--base {base_name}: is a {family} model; {ref.name} is a {ref.family} transformer")
    return replace(
        ref, kind="transformer_file", base=base.path, base_name=base.name, defaults=dict(base.defaults), revision=None
    )


def _gated(name: str, repo_id: str) -> UsageError:
    return UsageError(
        f"{name} ({repo_id}) is a gated model: accept its license at https://huggingface.co/{repo_id} "
        f"while logged in, then set HF_TOKEN to a token of that account, or run "
        f"`diffcli models pull {name} --token TOKEN` once"
    )


def _lora(name: str, path: Path, **kw) -> ModelRef:
    """A LoRA directory: its base model's ref, carrying the LoRA and the LoRA's own defaults."""
    from diffcli.models import lora, registry

    base_name = lora.lora_base(path)
    if Path(base_name).resolve() == path.resolve():
        raise UsageError(f"{name}: a LoRA directory cannot be its own base model")
    try:
        base = resolve(base_name, **kw)
    except UsageError as exc:
        raise UsageError(f"{name}: LoRA base model '{base_name}': {exc}") from None
    if base.lora is not None:
        raise UsageError(f"{name}: its base '{base_name}' is itself a LoRA; stacked LoRAs are not supported")
    registry.touch(f"local:{path}", source="local", path=str(path))
    return replace(base, name=name, lora=path, defaults={**base.defaults, **lora.lora_defaults(path)})


def _family(path: Path) -> str | None:
    from diffcli.models.layout import read_layout

    try:
        return read_layout(path).family
    except Exception:  # noqa: BLE001 - a family is a hint, never a reason to fail
        return None


def _single_file(
    name: str,
    path: Path,
    source: str,
    allow_pickle: bool,
    *,
    key: str,
    fetch: bool = False,
    token: str | None = None,
    feedback=None,
) -> ModelRef:
    from diffcli.models import registry
    from diffcli.models.checkpoint_info import detect_family
    from diffcli.models.names import CHECKPOINT_EXT
    from diffcli.models.safety import is_pickle, refuse_pickle
    from diffcli.models.single_file import config_dir_for, fetch_tokenizers

    if not str(path).lower().endswith(CHECKPOINT_EXT):
        raise UsageError(f"{name}: not a model (expected a .safetensors checkpoint or a diffusers directory)")
    if is_pickle(path) and not allow_pickle:
        raise refuse_pickle(name)
    family = detect_family(path)
    config = config_dir_for(family)
    if fetch and config is not None:
        try:
            fetch_tokenizers(family, token=token, progress=feedback)
        except (UsageError, RuntimeFailure):
            pass  # loading will say exactly what is missing; the checkpoint itself is here
    registry.touch(key, source=source, path=str(path))
    spec = families.get(family)
    defaults = dict(spec.defaults) if spec is not None else {}
    if spec is not None and spec.native_size:
        defaults.update(width=spec.native_size, height=spec.native_size)
    return ModelRef(
        name=name,
        path=Path(path),
        source=source,
        kind="single_file",
        config=str(config) if config else None,
        defaults=defaults,
        family=family,
        allow_pickle=allow_pickle,
    )
