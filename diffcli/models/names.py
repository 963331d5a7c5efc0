"""Parse and validate what the user typed after --model (no I/O beyond `os.path`, no network)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from diffcli.errors import UsageError

# Same shape as huggingface_hub's REPO_ID_REGEX, but the namespace is required: `org/name`.
_REPO_PART = r"[A-Za-z0-9](?:[\w\-.]{0,94}[A-Za-z0-9_])?"
REPO_ID_RE = re.compile(rf"^{_REPO_PART}/{_REPO_PART}$")
# Branches, tags, commit hashes, `refs/pr/N`: no `..`, no leading `/`, no control characters.
REVISION_RE = re.compile(r"^[A-Za-z0-9][\w.\-/]{0,199}$")
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
SAFE_FILENAME_RE = re.compile(r"^[\w][\w.\-+ ]{0,199}$")

SAFETENSORS_EXT = (".safetensors",)
PICKLE_EXT = (".ckpt", ".pt", ".pth", ".bin")
GGUF_EXT = (".gguf",)  # quantized transformer weights (FLUX.1, SD 3.x), loaded with diffusers' GGUF support
CHECKPOINT_EXT = SAFETENSORS_EXT + PICKLE_EXT + GGUF_EXT


@dataclass(frozen=True)
class Source:
    """One parsed NAME. kind: bundled | alias | hub | url | file | dir."""

    kind: str
    name: str
    repo_id: str | None = None
    revision: str | None = None
    url: str | None = None
    path: Path | None = None


def validate_repo_id(repo_id: str) -> str:
    if ".." in repo_id or "--" in repo_id or not REPO_ID_RE.match(repo_id):
        raise UsageError(f"'{repo_id}' is not a valid Hugging Face repo id (expected org/name)")
    return repo_id


def validate_revision(revision: str) -> str:
    parts = revision.split("/")
    if not REVISION_RE.match(revision) or any(p in ("", ".", "..") for p in parts) or revision.endswith(".lock"):
        raise UsageError(f"'{revision}' is not a valid revision")
    return revision


def validate_repo_file(path: str) -> str:
    """A file path inside a repo, as listed by the hub: relative, no `..`, no backslashes."""
    if (
        not path
        or path.startswith("/")
        or "\\" in path
        or "\x00" in path
        or re.match(r"^[A-Za-z]:", path)
        or any(part in ("", ".", "..") for part in path.split("/"))
    ):
        raise UsageError(f"refusing unsafe file name '{path}' from the model source")
    return path


def safe_basename(name: str) -> str:
    """A downloaded file's name (from a URL): one plain component, no traversal."""
    if name in (".", "..") or not SAFE_FILENAME_RE.match(name) or ".." in name:
        raise UsageError(f"refusing unsafe file name '{name}'")
    return name


def redact_url(url: str) -> str:
    """The URL without credentials, query string or fragment (these may hold tokens)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
    except ValueError:  # a malformed host or port (check_url says so): the text up to the host's end
        scheme, _, rest = url.partition("://")
        host = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0].rpartition("@")[2]
        return f"{scheme}://{host}"
    return f"{parts.scheme}://{host}{parts.path}"


def check_url(url: str) -> None:
    """Refuse a download URL that names no host or port we can reach, or carries a user and password
    (`https://user:pass@host/…`, which downloads do not send): said without the credentials."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is no number or out of range
    except ValueError as exc:
        raise UsageError(f"'{redact_url(url)}' is not a valid URL ({exc})") from None
    if not parts.hostname:
        raise UsageError(f"'{redact_url(url)}' is not a valid URL (no host)")
    if "@" in parts.netloc:
        raise UsageError(f"'{redact_url(url)}': a user or password in the URL is not supported")


def url_filename(url: str) -> str:
    check_url(url)
    path = unquote(urlsplit(url).path)
    return safe_basename(path.rsplit("/", 1)[-1])


def parse(name: str, paths: bool = True) -> Source:
    """Classify NAME. Order: bundled, URL, existing local path, alias, hub id.

    PATHS False judges NAME by its text alone (a request that may name no file, e.g. over HTTP): no local
    path is looked at, so the answer is the same whatever the working directory holds; a name written as
    a path or URL is a usage error."""
    from diffcli.models.aliases import ALIASES

    if not name or not name.strip():
        raise UsageError("empty model name")
    from diffcli.bundled import MODEL_NAMES

    if name == "bundled":
        return Source("bundled", MODEL_NAMES[0])
    if name in MODEL_NAMES:
        return Source("bundled", name)
    lowered = name.lower()
    if not paths and (
        lowered.endswith(CHECKPOINT_EXT)
        or name.startswith((".", "/", "~", "\\"))
        or "\\" in name
        or os.path.isabs(name)
        or "://" in name
        or ".." in name.split("/")
    ):
        raise UsageError(f"model '{name}': name a model (shipped, alias or hub id), not a path or URL")
    if lowered.startswith(("http://", "https://")):
        url_filename(name)  # validates
        return Source("url", name, url=name)
    if "://" in name:
        raise UsageError(f"unsupported URL scheme in '{redact_url(name)}' (use http or https)")
    path = Path(name).expanduser()
    if paths and path.is_dir():
        return Source("dir", name, path=path.resolve())
    if paths and path.is_file():
        return Source("file", name, path=path.resolve())
    if lowered.endswith(CHECKPOINT_EXT) or name.startswith((".", "/", "~")) or os.path.isabs(name):
        raise UsageError(f"{name}: no such file or directory")
    base, _, revision = name.partition("@")
    if base in ALIASES:
        return Source(
            "alias", base, repo_id=ALIASES[base].repo_id, revision=validate_revision(revision) if revision else None
        )
    if "/" in base:
        validate_repo_id(base)
        return Source("hub", name, repo_id=base, revision=validate_revision(revision) if revision else None)
    from diffcli.models.aliases import alias_names

    raise UsageError(
        f"unknown model '{name}': give a Hugging Face repo id (org/name), an alias ({alias_names()}), "
        "a .safetensors path or URL, a diffusers directory, or 'tiny'"
    )
