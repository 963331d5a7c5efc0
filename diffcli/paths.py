"""Where diffcli keeps its own files. `DIFFCLI_HOME` overrides the platform default."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """diffcli's data directory (single-file checkpoints, registry, config)."""
    override = os.environ.get("DIFFCLI_HOME")
    if override:
        return Path(override).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("diffcli", appauthor=False))


def compile_cache() -> Path:
    """Where torch's inductor keeps what `--compile` builds (its C++ kernels, graphs where torch caches them),
    so later processes compile faster; TORCHINDUCTOR_CACHE_DIR, when set, wins (pipelines.compile_module)."""
    return home() / "compiled"
