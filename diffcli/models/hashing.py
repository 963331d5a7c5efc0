"""File digests: sha256 (LFS files, single checkpoints) and git blob sha1 (small hub files)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
SHA1_RE = re.compile(r"^[0-9a-f]{40}$")
CHUNK = 1 << 20


def sha256_file(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def git_sha1_file(path: Path | str) -> str:
    """The git blob id of a file: sha1(b"blob <size>\\0" + content)."""
    size = Path(path).stat().st_size
    h = hashlib.sha1(f"blob {size}\0".encode())
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def matches(path: Path | str, expected: str) -> bool:
    """Check `path` against a sha256 (64 hex) or git sha1 (40 hex) digest."""
    expected = expected.lower().strip('"')
    if SHA256_RE.match(expected):
        return sha256_file(path) == expected
    if SHA1_RE.match(expected):
        return git_sha1_file(path) == expected
    raise ValueError(f"unknown digest format: {expected!r}")
