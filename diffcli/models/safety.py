"""Safety rules: no pickle weights by default, no remote code, no secrets in messages."""

from __future__ import annotations

import re

from diffcli.errors import UsageError
from diffcli.models.names import PICKLE_EXT

TRUSTED_LIBRARIES = {"diffusers", "transformers"}
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TOKEN_PATTERNS = (
    re.compile(r"hf_[A-Za-z0-9]{8,}"),
    re.compile(r"(?i)(authorization:?\s*bearer\s+)\S+"),
    re.compile(r"(?i)([?&](?:token|access_token|sig|signature|x-amz-signature)=)[^&\s]+"),
)


def is_pickle(path: str) -> bool:
    return str(path).lower().endswith(PICKLE_EXT)


def refuse_pickle(what: str) -> UsageError:
    return UsageError(
        f"{what}: pickle weights (.ckpt/.bin/.pt) can run code when loaded, so diffcli refuses them by default; "
        "use a .safetensors version, or pass --allow-pickle if you trust the source (loaded with weights_only=True)"
    )


def remote_code_error(where: str, detail: str, pull_name: str | None = None) -> UsageError:
    """diffcli never fetches nor runs a repo's code. Only `models pull` has --trust-remote-code: it downloads the
    rest of such a repo (configs and weights) for a pipeline that loads without that code."""
    hint = (
        f"; `diffcli models pull {pull_name} --trust-remote-code` downloads the rest of it anyway (never the code)"
        if pull_name
        else ""
    )
    return UsageError(f"{where}: {detail}; diffcli never fetches or runs code from a model repo{hint}")


def check_model_index(
    index: dict,
    where: str,
    *,
    repo_files: list[str] | None = None,
    trust_remote_code: bool = False,
    pull_name: str | None = None,
) -> list[str]:
    """Reject pipelines that would run code not shipped by diffusers/transformers; return component names.

    PULL_NAME: the hub name for the `diffcli models pull NAME --trust-remote-code` hint (None: no hint)."""
    if not isinstance(index, dict) or not index:
        raise UsageError(f"{where}: model_index.json is empty or not a JSON object")

    def remote(detail: str) -> UsageError:
        return remote_code_error(where, detail, pull_name)

    class_name = index.get("_class_name")
    if isinstance(class_name, (list, tuple)):
        if not trust_remote_code:
            raise remote(f"custom pipeline '{'.'.join(map(str, class_name))}'")
    elif not isinstance(class_name, str) or not _IDENT.match(class_name):
        raise UsageError(f"{where}: model_index.json has no valid _class_name")
    py_files = [f for f in (repo_files or []) if f.endswith(".py")]
    if py_files and not trust_remote_code and any("/" not in f or f.split("/")[0] in index for f in py_files):
        raise remote(f"it ships pipeline code ({', '.join(sorted(py_files)[:3])})")
    components = []
    for key, value in index.items():
        if key.startswith("_") or not isinstance(value, (list, tuple)):
            continue
        if value and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            continue  # a pipeline setting, not a component (Qwen-Image 2.1's sample_sigmas)
        if len(value) != 2:
            raise UsageError(f"{where}: component '{key}' is malformed in model_index.json")
        library, cls = value
        if library is None and cls is None:
            continue  # optional component left out
        if "/" in key or key in (".", "..") or not _IDENT.match(key):
            raise UsageError(f"{where}: refusing unsafe component name '{key}'")
        if library not in TRUSTED_LIBRARIES or not isinstance(cls, str) or not _IDENT.match(cls):
            if not trust_remote_code:
                raise remote(f"component '{key}' uses custom code ('{library}', '{cls}')")
        components.append(key)
    return components


def scrub(text: str, token: str | None = None) -> str:
    """Remove a token (and anything that looks like one) from a message."""
    if token and isinstance(token, str):
        text = text.replace(token, "***")
    for pattern in _TOKEN_PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + "***", text)
    return text
