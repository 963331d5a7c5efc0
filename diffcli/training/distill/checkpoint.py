"""Checkpoints of a distillation run: written whole (to a temporary folder, then renamed) or not at all.

Layout under the checkpoint directory:
  run.json                  the run's settings (a resumed run must match them)
  bank.pt                   the training latents (data.py)
  checkpoint-0000250/       state.pt (trainable weights, EMA target, optimizer, step, timing)
                            rng-<rank>.pt (each process's random generators)
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch

from diffcli.distill.preflight import RUN_FILE

_NAME = re.compile(r"^checkpoint-(\d+)$")


def write_run(ckpt: Path, config, fingerprint: str) -> None:
    ckpt.mkdir(parents=True, exist_ok=True)
    tmp = ckpt / (RUN_FILE + ".tmp")
    tmp.write_text(json.dumps({"config": config.to_dict(), "fingerprint": fingerprint}, indent=2) + "\n")
    tmp.replace(ckpt / RUN_FILE)


def checkpoints(ckpt: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints, oldest first."""
    found = []
    if ckpt.is_dir():
        for entry in ckpt.iterdir():
            m = _NAME.match(entry.name)
            if m and (entry / "state.pt").is_file():
                found.append((int(m.group(1)), entry))
    return sorted(found)


def latest(ckpt: Path) -> tuple[int, Path] | None:
    found = checkpoints(ckpt)
    return found[-1] if found else None


def staging(ckpt: Path, step: int) -> Path:
    return ckpt / f".checkpoint-{step:07d}.tmp"


def save_rng(ckpt: Path, step: int, rank: int, gen: torch.Generator, rng) -> None:
    d = staging(ckpt, step)
    d.mkdir(parents=True, exist_ok=True)
    torch.save({"gen": gen.get_state(), "rng": rng.getstate()}, d / f"rng-{rank}.pt")


def save_state(ckpt: Path, step: int, state: dict, keep: int = 2) -> Path:
    """Main process, after every process has saved its generators: state.pt, then the rename."""
    d = staging(ckpt, step)
    d.mkdir(parents=True, exist_ok=True)
    torch.save(state, d / "state.pt")
    final = ckpt / f"checkpoint-{step:07d}"
    if final.exists():
        shutil.rmtree(final)
    d.rename(final)
    for _, old in checkpoints(ckpt)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load(path: Path, rank: int) -> tuple[dict, dict | None]:
    state = torch.load(path / "state.pt", weights_only=False, map_location="cpu")
    rng_file = path / f"rng-{rank}.pt"
    rng = torch.load(rng_file, weights_only=False) if rng_file.is_file() else None
    return state, rng


def clear(ckpt: Path) -> None:
    """--overwrite: forget a previous run (checkpoints, bank, run.json; a cached --prompts data folder stays)."""
    if not ckpt.is_dir():
        return
    for entry in ckpt.iterdir():
        if entry.name == "data":
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
