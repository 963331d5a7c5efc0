"""A short, cheap fingerprint of a local model's files, recorded as "Model hash" in images."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

_SAMPLE = 1 << 20  # bytes hashed from the start and the end of each weight file


def _feed_file(h, path: Path) -> None:
    size = path.stat().st_size
    h.update(f"{size}\0".encode())
    with open(path, "rb") as fh:
        if size <= 2 * _SAMPLE:
            h.update(fh.read())
        else:
            h.update(fh.read(_SAMPLE))
            fh.seek(size - _SAMPLE)
            h.update(fh.read(_SAMPLE))


@lru_cache(maxsize=32)
def fingerprint(path: str) -> str:
    """sha256 over every config and weight file (name, size, first and last MiB), 10 hex digits.

    For a single file it is the same construction over that one file.
    """
    root = Path(path)
    h = hashlib.sha256()
    files = (
        [root]
        if root.is_file()
        else sorted(
            p for p in root.rglob("*") if p.is_file() and p.suffix in (".json", ".safetensors", ".bin", ".txt", ".ckpt")
        )
    )
    for file in files:
        h.update(str(file.relative_to(root) if root.is_dir() else file.name).encode() + b"\0")
        _feed_file(h, file)
    return h.hexdigest()[:10]
