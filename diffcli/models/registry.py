"""diffcli's small JSON registry of models it fetched or used: manifests and last-used times.

Lives at `<diffcli home>/models.json`; every write is atomic (temp file + os.replace) under a lock.
A damaged registry is never silently replaced: it is kept aside as `models.json.corrupt-<time>`,
reported once (a warning), and rebuilt from what is on disk (URL checkpoints carry a `source.json`
next to them; hub models are found again in the hub cache by `models list`).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from diffcli import paths
from diffcli.errors import RuntimeFailure

VERSION = 1


class HomeUnusable(RuntimeFailure):
    """diffcli's data directory cannot be created or written (exit 1)."""


def registry_path() -> Path:
    return paths.home() / "models.json"


def home_unusable(exc: OSError, path: Path | None = None) -> HomeUnusable:
    """A one-line error for an unusable DIFFCLI_HOME (not a directory, read-only, no permission, disk full)."""
    home = paths.home()
    why = exc.strerror or type(exc).__name__
    where = f" ({path})" if path is not None and Path(path) != home else ""
    source = "DIFFCLI_HOME" if os.environ.get("DIFFCLI_HOME") else "set DIFFCLI_HOME to choose another"
    return HomeUnusable(
        f"diffcli's data directory {home} is not usable: {why.lower()}{where}; make it a writable directory ({source})"
    )


def ensure_dir(path: Path) -> Path:
    """mkdir -p under the diffcli home, turning OS errors into one clear HomeUnusable."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(13, "Permission denied", str(path))
    except OSError as exc:
        raise home_unusable(exc, path) from None
    return path


def locks_dir() -> Path:
    return ensure_dir(paths.home() / "locks")


_held = threading.local()  # lock names this thread holds: file_lock is re-entrant within a thread


@contextmanager
def file_lock(name: str, timeout: float = -1, waiting=None):
    """An inter-process lock under <home>/locks (filelock ships with huggingface_hub).

    `waiting`: a note (str, or a callable taking the note) for when another process holds the lock
    (e.g. pulls the same model); a str is written to stderr."""
    from filelock import FileLock, Timeout

    held = _held.__dict__.setdefault("names", {})
    if held.get(name):
        held[name] += 1
        try:
            yield
        finally:
            held[name] -= 1
        return
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:180]
    lock = FileLock(str(locks_dir() / f"{safe}.lock"))
    try:
        lock.acquire(timeout=0.5 if waiting else timeout)
    except Timeout:
        if not waiting:
            raise
        if callable(waiting):
            waiting()
        else:
            sys.stderr.write(f"{waiting}\n")
            sys.stderr.flush()
        lock.acquire(timeout=timeout)
    except OSError as exc:
        raise home_unusable(exc, locks_dir()) from None
    held[name] = 1
    try:
        yield
    finally:
        held.pop(name, None)
        lock.release()


# ---------------------------------------------------------------- warnings


def _plain_warning(message: str) -> None:
    sys.stderr.write(f"diffcli: warning: {message}\n")
    sys.stderr.flush()


_warn = threading.local()


@contextmanager
def warnings_to(handler):
    """Send registry warnings to `handler(message)` (e.g. a JSON event) inside this block."""
    old = getattr(_warn, "handler", None)
    _warn.handler = handler
    try:
        yield
    finally:
        _warn.handler = old


_reported: set[str] = set()  # warnings already given by this process


def warn(message: str, *, once: str | None = None) -> None:
    """A warning for the user (stderr, or the handler set by warnings_to); `once`: a key to give it only once."""
    if once is not None:
        if once in _reported:
            return
        _reported.add(once)
    (getattr(_warn, "handler", None) or _plain_warning)(message)


# ---------------------------------------------------------------- reading, damage, rebuilding


def _empty() -> dict:
    return {"version": VERSION, "models": {}}


def _parse(raw: str) -> dict | None:
    """The registry in RAW, or None when it is damaged."""
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        return None
    data["models"] = {k: v for k, v in data["models"].items() if isinstance(k, str) and isinstance(v, dict)}
    return data


def _read() -> str | None:
    """The registry's text; None when there is none yet."""
    path = registry_path()
    try:
        return path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return None
    except UnicodeDecodeError:
        return "\ufffd"  # damaged
    except OSError as exc:
        raise RuntimeFailure(
            f"cannot read diffcli's model registry {path}: {(exc.strerror or str(exc)).lower()}; check its permissions"
        ) from None


def rebuild() -> dict:
    """A registry made from what is on disk: URL checkpoints with their `source.json`.

    Hub models need no record to be found: `models list` and `resolve` find them in the hub cache
    (listed as `adopted`, verified against the cache's blob names)."""
    from diffcli.models.url_store import records_on_disk

    return {"version": VERSION, "models": records_on_disk()}


def _recover(raw: str) -> dict:
    """Keep the damaged registry aside, rebuild, write, and warn (once: the damaged file is gone)."""
    path = registry_path()
    data = rebuild()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    try:
        os.replace(path, aside)
    except OSError as exc:
        warn(
            f"the model registry {path} is damaged and cannot be moved aside ({exc.strerror or exc}); "
            f"using {len(data['models'])} record(s) rebuilt from disk for now",
            once=str(path),
        )
        return data
    rebuilt = f"rebuilt {len(data['models'])} record(s) from disk" if data["models"] else "started a new one"
    warn(
        f"the model registry was damaged: kept it as {aside} and {rebuilt}; downloaded hub models are "
        "found again in the hub cache (listed as adopted)"
    )
    try:
        _write(data)
    except (OSError, RuntimeFailure):
        pass
    return data


def load() -> dict:
    raw = _read()
    if raw is None:
        return _empty()
    data = _parse(raw)
    if data is not None:
        return data
    try:
        lock = file_lock("registry")
        lock.__enter__()
    except (OSError, RuntimeFailure):
        return _recover(raw)  # a read-only home: no lock, and nothing will be written anyway
    try:
        raw = _read()  # another process may have recovered it meanwhile
        if raw is None:
            return _empty()
        data = _parse(raw)
        return data if data is not None else _recover(raw)
    finally:
        lock.__exit__(None, None, None)


def _write(data: dict) -> None:
    path = registry_path()
    ensure_dir(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=".models.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise home_unusable(exc, path.parent) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise home_unusable(exc, path) from None
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


TOUCH_EVERY_S = 60.0  # "last used" is kept to the minute: a model used again sooner is not written again


def touch(key: str, **fields) -> None:
    """Record that a model was used now (best effort: a read-only home is not an error). Skipped, lock
    and write, when the entry says the same and was touched less than TOUCH_EVERY_S ago (a served
    call's client and server both resolve the model; so do scripts of many short calls)."""
    try:
        entry = load()["models"].get(key)
        if (
            entry
            and all(entry.get(k) == v for k, v in fields.items())
            and 0 <= time.time() - entry.get("last_used", 0) < TOUCH_EVERY_S
        ):
            return
        update(key, last_used=time.time(), **fields)
    except (OSError, RuntimeFailure):
        pass
