"""Where checkpoints fetched from URLs are kept: <diffcli home>/checkpoints/<id>/<file>, with a `source.json`
beside each (URL without query, sha256, size), what the registry records for it, so the registry can be
rebuilt from disk if `models.json` is ever damaged."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from diffcli import paths
from diffcli.errors import UsageError
from diffcli.models.names import redact_url, safe_basename, url_filename

SOURCE_FILE = "source.json"  # beside each checkpoint: what the registry records, for rebuilding it


def url_id(url: str) -> str:
    return hashlib.sha256(redact_url(url).encode()).hexdigest()[:16]


def registry_key(url: str) -> str:
    return f"url:{redact_url(url)}"


def target_path(url: str) -> Path:
    return paths.home() / "checkpoints" / url_id(url) / url_filename(url)


def checkpoints_dir() -> Path:
    return paths.home() / "checkpoints"


def write_source(dest: Path, entry: dict) -> None:
    """Record where DEST came from beside it (best effort: the registry holds the same)."""
    keep = ("url", "sha256", "size", "verified_against", "pulled_at")
    record = {"file": dest.name, **{k: entry[k] for k in keep if k in entry}}
    tmp = dest.parent / f".{SOURCE_FILE}.{os.getpid()}.tmp"
    try:
        tmp.write_text(json.dumps(record, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, dest.parent / SOURCE_FILE)
    except OSError:
        tmp.unlink(missing_ok=True)


def records_on_disk() -> dict[str, dict]:
    """Registry records of the checkpoints under <home>/checkpoints that have a `source.json`."""
    out: dict[str, dict] = {}
    try:
        folders = sorted(p for p in checkpoints_dir().iterdir() if p.is_dir())
    except OSError:
        return out
    for folder in folders:
        try:
            record = json.loads((folder / SOURCE_FILE).read_text(encoding="utf-8"))
            url = record["url"]
            path = folder / safe_basename(record["file"])
        except (OSError, ValueError, KeyError, TypeError, UsageError):
            continue
        if not isinstance(url, str) or folder.name != url_id(url) or not path.is_file():
            continue
        if record.get("size") is not None and path.stat().st_size != record["size"]:
            continue
        out[registry_key(url)] = {
            "source": "url",
            "url": redact_url(url),
            "path": str(path),
            "status": "complete",
            **{k: record[k] for k in ("sha256", "size", "verified_against", "pulled_at") if k in record},
            "rebuilt": True,
        }
    return out
