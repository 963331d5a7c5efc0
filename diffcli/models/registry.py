"""diffcli's small JSON registry of models it fetched or used: manifests and last-used times.

Lives at `<diffcli home>/models.json`; every write is atomic (temp file + os.replace) under a lock.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from diffcli import paths

VERSION = 1


def registry_path() -> Path:
    return paths.home() / "models.json"


def locks_dir() -> Path:
    d = paths.home() / "locks"
    d.mkdir(parents=True, exist_ok=True)
    return d


@contextmanager
def file_lock(name: str, timeout: float = -1, waiting: str | None = None):
    """An inter-process lock under <home>/locks (filelock ships with huggingface_hub).

    `waiting`: a note for stderr when another process holds the lock (e.g. pulls the same model)."""
    from filelock import FileLock, Timeout

    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:180]
    lock = FileLock(str(locks_dir() / f"{safe}.lock"))
    try:
        lock.acquire(timeout=0.5 if waiting else timeout)
    except Timeout:
        if not waiting:
            raise
        import sys

        sys.stderr.write(f"{waiting}\n")
        sys.stderr.flush()
        lock.acquire(timeout=timeout)
    try:
        yield
    finally:
        lock.release()


def load() -> dict:
    try:
        data = json.loads(registry_path().read_text(encoding="utf-8"))
        if isinstance(data, dict) and isinstance(data.get("models"), dict):
            return data
    except (OSError, ValueError):
        pass
    return {"version": VERSION, "models": {}}


def _write(data: dict) -> None:
    path = registry_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".models.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def get(key: str) -> dict | None:
    return load()["models"].get(key)


def entries() -> dict[str, dict]:
    return load()["models"]


def update(key: str, **fields) -> dict:
    with file_lock("registry"):
        data = load()
        entry = data["models"].setdefault(key, {})
        entry.update(fields)
        _write(data)
        return entry


def remove(key: str) -> None:
    with file_lock("registry"):
        data = load()
        if data["models"].pop(key, None) is not None:
            _write(data)


def touch(key: str, **fields) -> None:
    """Record that a model was used now (best effort: a read-only home is not an error)."""
    try:
        update(key, last_used=time.time(), **fields)
    except OSError:
        pass
