"""Integrity of the models shipped inside the package (`tiny`, `tiny-lcm`, `tiny-edit`, `tiny-flux`): size and sha256
of every file.

The digests live in `bundled_hashes.json` beside this module, so `diffcli models verify tiny` checks the
installed files against what was shipped. Whoever re-ships a bundled model regenerates them with

    python -m diffcli.models.bundled

(tests/models/test_hardening.py fails while they are stale).
"""

from __future__ import annotations

import json
from pathlib import Path

from diffcli.models.hashing import sha256_file

HASHES = Path(__file__).with_name("bundled_hashes.json")
_SKIP_DIRS = ("__pycache__",)


def model_files(root: Path) -> list[str]:
    """The files of a shipped model folder, relative and sorted (caches left out)."""
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and not any(part in _SKIP_DIRS or part.startswith(".") for part in p.relative_to(root).parts)
    )


def recorded(name: str) -> dict[str, dict] | None:
    """{file: {"size", "sha256"}} shipped for bundled model NAME; None when none is recorded."""
    try:
        data = json.loads(HASHES.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    files = (data.get("models") or {}).get(name)
    return files if isinstance(files, dict) else None


def compute(root: Path) -> dict[str, dict]:
    return {rel: {"size": (root / rel).stat().st_size, "sha256": sha256_file(root / rel)} for rel in model_files(root)}


def write() -> Path:
    """Record the current files of every shipped model in bundled_hashes.json."""
    from diffcli.bundled import MODEL_NAMES, model_dir

    models = {
        name: compute(model_dir(name)) for name in MODEL_NAMES if (model_dir(name) / "model_index.json").is_file()
    }
    HASHES.write_text(json.dumps({"version": 1, "models": models}, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return HASHES


if __name__ == "__main__":  # pragma: no cover - a maintenance command
    print(write())
