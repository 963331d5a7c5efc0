"""Single-file checkpoints fetched from http(s) URLs, kept under <diffcli home>/checkpoints.

A download goes to `<file>.incomplete` (resumed with a Range request next time), is checked
against the size and sha256 the server or the user recorded, and only then renamed into place
with os.replace, all under a per-URL file lock. A `source.json` beside it (URL without query,
sha256, size) lets the registry be rebuilt from disk if `models.json` is ever damaged.
"""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path
from urllib.parse import urlsplit

from diffcli.errors import RuntimeFailure, UsageError
from diffcli.models import registry
from diffcli.models.hashing import SHA256_RE, sha256_file
from diffcli.models.names import redact_url, url_filename
from diffcli.models.safety import is_pickle, refuse_pickle, scrub
from diffcli.models.url_store import SOURCE_FILE, checkpoints_dir, registry_key, target_path, url_id, write_source

CHUNK = 1 << 20
_DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)
TIMEOUT = float(os.environ.get("DIFFCLI_DOWNLOAD_TIMEOUT", "30"))


def find_local(url: str) -> tuple[Path, dict] | None:
    entry = registry.get(registry_key(url))
    if entry and entry.get("status") == "complete":
        path = Path(entry["path"])
        if path.is_file():
            if not (path.parent / SOURCE_FILE).exists() and path.parent.parent == checkpoints_dir():
                write_source(path, entry)  # a download from before source.json: record it now
            return path, entry
    return None


def _expected_from_url(url: str) -> str | None:
    frag = urlsplit(url).fragment
    if frag.startswith("sha256="):
        value = frag.split("=", 1)[1].lower()
        if SHA256_RE.match(value):
            return value
        raise UsageError("the #sha256= part of the URL is not a sha256 hex digest")
    return None


def _auth_headers(url: str, token: str | None) -> dict:
    if not token:
        return {}
    host = urlsplit(url).hostname or ""
    ep = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname
    return {"Authorization": f"Bearer {token}"} if host in ("huggingface.co", ep) else {}


def _open(url: str, headers: dict):
    import http.client
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url.split("#", 1)[0], headers={"User-Agent": "diffcli", **headers})
    try:
        return urllib.request.urlopen(req, timeout=TIMEOUT)
    except http.client.InvalidURL:  # (check_url refuses what it knows of earlier)
        raise urllib.error.URLError("invalid URL") from None  # (its text may hold what redact_url hides)


def pull(
    url: str,
    *,
    sha256: str | None = None,
    allow_pickle: bool = False,
    token: str | None = None,
    quiet: bool = False,
    force: bool = False,
    progress=None,
) -> tuple[Path, dict]:
    """Download URL once; return (local file, registry entry). PROGRESS: see diffcli.models.progress."""
    from diffcli.models.progress import Feedback

    feedback = Feedback.of(progress, quiet)

    shown = redact_url(url)
    name = url_filename(url)
    _check_checkpoint_name(name, shown, allow_pickle)
    expected = (sha256 or _expected_from_url(url) or "").lower() or None
    if expected and not SHA256_RE.match(expected):
        raise UsageError("--sha256 must be 64 hex digits")
    dest = target_path(url)
    key = registry_key(url)
    with registry.file_lock("url-" + url_id(url), waiting=feedback.waiting(f"waiting for another download of {name}…")):
        found = find_local(url)
        if found and not force:
            return found
        fresh = not dest.parent.exists()
        registry.ensure_dir(dest.parent)
        part = dest.with_name(dest.name + ".incomplete")
        before = registry.get(key)
        registry.update(key, source="url", url=shown, path=str(dest), status="partial", started_at=time.time())
        offset = part.stat().st_size if part.exists() else 0
        try:
            resp = _request(url, shown, part, offset, token)
        except RuntimeFailure:
            if not part.exists():  # nothing came: no partial pull to resume is left behind
                if before is None:
                    registry.remove(key)
                if fresh:
                    _rmdir(dest.parent)
            raise
        with resp:
            if offset and resp.status != 206:
                offset = 0  # server ignored the Range header: start over
            total = _total_size(resp, offset)
            if not expected:
                expected = _etag_sha256(resp)
            written = _write_body(resp, part, offset, total, feedback, name=name, shown=shown)
        digest = _check_download(part, written, total, expected, shown)
        os.replace(part, dest)
        entry = registry.update(
            key,
            status="complete",
            sha256=digest,
            size=written,
            verified_against=("source" if expected else "download"),
            pulled_at=time.time(),
        )
        write_source(dest, entry)
    return dest, entry


def _rmdir(path: Path) -> None:
    try:
        path.rmdir()  # only if empty
    except OSError:
        pass


def _check_checkpoint_name(name: str, shown: str, allow_pickle: bool) -> None:
    """Refuse a file NAME that is a pickle (unless allowed) or not a checkpoint at all."""
    if is_pickle(name) and not allow_pickle:
        raise refuse_pickle(shown)
    if not name.lower().endswith((".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf")):
        raise UsageError(
            f"{shown}: not a checkpoint file (expected .safetensors, or .gguf for a FLUX.1/SD 3.x transformer)"
        )


def _request(url: str, shown: str, part: Path, offset: int, token: str | None):
    """The open response for URL, resuming after OFFSET bytes of PART; a RuntimeFailure when it cannot open."""
    import urllib.error

    headers = _auth_headers(url, token)
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        return _open(url, headers)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # our partial file is already complete (or bogus): restart
            part.unlink(missing_ok=True)
            raise RuntimeFailure(f"{shown}: resume refused by server; run the pull again") from None
        raise RuntimeFailure(scrub(f"{shown}: HTTP {exc.code} {exc.reason}", token)) from None
    except (urllib.error.URLError, OSError) as exc:
        raise RuntimeFailure(scrub(f"{shown}: cannot download ({getattr(exc, 'reason', exc)})", token)) from None


def _total_size(resp, offset: int) -> int | None:
    """The whole file's size in bytes as the response tells it (X-Linked-Size, else Content-Length), or None."""
    length = resp.headers.get("Content-Length")
    total = (int(length) + offset) if length and length.isdigit() else None
    linked = (resp.headers.get("X-Linked-Size") or "").strip()
    if linked.isdigit():
        total = int(linked)
    return total


def _etag_sha256(resp) -> str | None:
    """The file's sha256 when the response's (X-Linked-)ETag is one, else None."""
    etag = (resp.headers.get("X-Linked-Etag") or resp.headers.get("ETag") or "").strip('W/"').lower()
    return etag if SHA256_RE.match(etag) else None


def _write_body(resp, part: Path, offset: int, total: int | None, feedback, *, name: str, shown: str) -> int:
    """Write RESP's body into PART after OFFSET bytes, with a progress bar; return the bytes PART now holds."""
    import http.client

    written = offset
    try:
        with (
            open(part, "r+b" if offset else "wb") as out,
            feedback.bar(f"pulling {name}", total, model=shown) as bar,
        ):
            out.seek(offset)
            out.truncate()
            bar.advance(offset)
            while chunk := resp.read(CHUNK):
                out.write(chunk)
                written += len(chunk)
                bar.advance(len(chunk))
            out.flush()
            os.fsync(out.fileno())
    except (OSError, http.client.HTTPException) as exc:
        if isinstance(exc, OSError) and exc.errno in _DISK_ERRORS:
            raise RuntimeFailure(
                f"{shown}: cannot write {part} ({exc.strerror.lower()}); free some space or "
                "set DIFFCLI_HOME to another directory, then pull again to resume"
            ) from None
        raise RuntimeFailure(
            f"{shown}: download cut off after {written} bytes ({type(exc).__name__}); run the pull again to resume"
        ) from None
    return written


def _check_download(part: Path, written: int, total: int | None, expected: str | None, shown: str) -> str:
    """PART's sha256, once its size and digest are as expected; else it is discarded (when bad) and a RuntimeFailure."""
    if total is not None and written != total:
        if written > total:
            part.unlink(missing_ok=True)
        raise RuntimeFailure(f"{shown}: got {written} bytes, expected {total}; run the pull again to resume")
    digest = sha256_file(part)
    if expected and digest != expected:
        part.unlink(missing_ok=True)
        raise RuntimeFailure(
            f"{shown}: sha256 mismatch (got {digest[:12]}…, expected {expected[:12]}…); the download was discarded"
        )
    return digest
