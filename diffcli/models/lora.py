"""A LoRA student directory (`--method lcm-lora`), read without torch: its file, its base, its defaults.

    OUT/pytorch_lora_weights.safetensors
    OUT/diffcli.json   {"steps": 4, "cfg": 1.0, "scheduler": "lcm", ..., "lora": {"base": NAME,
                        "base_source": "bundled|local|hub|...", "base_path": DIR, "base_hash": ..., "rank": R}}

`--model OUT` accepts such a directory: the resolver sees `is_lora_dir(path)`, resolves
`lora_base(path)` and returns the base's ModelRef with `lora=OUT`; `load_base` then calls
`apply_lora(pipe, OUT)`, and `lora_defaults(OUT)` override the base's recommended settings.
"""

from __future__ import annotations

import json
from pathlib import Path

from diffcli import loading

LORA_FILE = "pytorch_lora_weights.safetensors"
SETTINGS = ("steps", "cfg", "scheduler", "shift", "width", "height")


def read_own(path) -> dict:
    try:
        return json.loads((Path(path) / "diffcli.json").read_text())
    except (OSError, ValueError):
        return {}


def is_lora_dir(path) -> bool:
    p = Path(path)
    return p.is_dir() and (p / LORA_FILE).is_file() and "lora" in read_own(p)


def lora_base(path) -> str:
    """The base model's name for `resolve` (its directory when the base was a local directory)."""
    rec = read_own(Path(path))["lora"]
    base_path = rec.get("base_path")
    if rec.get("base_source") == "local" and base_path and Path(base_path).is_dir():
        return base_path
    return rec["base"]


def lora_defaults(path) -> dict:
    own = read_own(Path(path))
    return {k: own[k] for k in SETTINGS if own.get(k) is not None}


def apply_lora(pipe, path, fuse: bool = True):
    """Load the LoRA at PATH into PIPE (its base pipeline) and, by default, fuse it (needs peft)."""
    loading.load_lora_weights(pipe, str(path), weight_name=LORA_FILE, adapter_name="lcm")
    if fuse:
        pipe.fuse_lora()
    return pipe


# ---------------------------------------------------------------- LoRA files (--lora, <lora:name:w>)
# A LoRA file is one .safetensors file in any format diffusers' `load_lora_weights` reads (diffusers/peft
# keys, kohya/A1111 keys). A job names it by path or by name: NAME is looked up in the LoRA folder
# (DIFFCLI_LORA_DIR, default <data dir>/loras), as NAME.safetensors there or in a sub-folder, the way
# AUTOMATIC1111 finds `<lora:NAME:0.8>`. Nothing is ever downloaded. A settled job holds "PATH:WEIGHT".

LORA_SUFFIX = ".safetensors"


def lora_dir() -> Path:
    """The LoRA folder: DIFFCLI_LORA_DIR, else `loras` in diffcli's data directory."""
    import os

    from diffcli.paths import home

    override = os.environ.get("DIFFCLI_LORA_DIR")
    return Path(override).expanduser() if override else home() / "loras"


def split_spec(spec: str) -> tuple[str, float | None]:
    """'NAME_OR_PATH[:WEIGHT]' -> (name or path, weight or None). A part after the last ':' that is not a
    number belongs to the name (a Windows drive letter, a colon in a file name)."""
    import math

    from diffcli.errors import UsageError

    text = str(spec).strip()
    head, sep, tail = text.rpartition(":")
    if sep and head:
        try:
            weight = float(tail)
        except ValueError:
            return text, None
        if not math.isfinite(weight):
            raise UsageError(f"--lora {spec}: the weight must be a finite number")
        return head, weight
    if not text or (sep and not head):
        raise UsageError(f"--lora '{spec}': name a LoRA file or a LoRA in {lora_dir()}, optionally with :WEIGHT")
    return text, None


def join_spec(path, weight: float) -> str:
    return f"{path}:{float(weight)!r}"


def find_lora(name: str, folder_only: bool = False) -> Path | None:
    """NAME as a LoRA file: an existing path (file, or a folder holding pytorch_lora_weights.safetensors),
    else NAME[.safetensors] in the LoRA folder or one of its sub-folders; None when there is none.
    FOLDER_ONLY: a .safetensors file of the LoRA folder only (NAME is never a path, so what the working
    directory holds makes no difference)."""
    given = Path(name) if folder_only else Path(name).expanduser()
    if not folder_only:
        if given.is_file():
            return given.resolve()
        if given.is_dir() and (given / LORA_FILE).is_file():
            return (given / LORA_FILE).resolve()
    folder = lora_dir()
    if not folder.is_dir() or given.is_absolute() or ".." in given.parts or (folder_only and "\\" in name):
        return None
    candidates = (folder / name, folder / f"{name}{LORA_SUFFIX}")
    if folder_only:
        candidates = tuple(c for c in candidates if c.name.endswith(LORA_SUFFIX))
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    stem = given.name.removesuffix(LORA_SUFFIX)
    found = sorted(p for p in folder.rglob(f"*{LORA_SUFFIX}") if p.stem == stem)
    return found[0].resolve() if found else None


_SHA256: dict[tuple, str] = {}


def lora_sha256(path) -> str:
    """The sha256 of a LoRA file (AUTOMATIC1111's `Lora hashes` show its first 12 digits); remembered per
    (path, size, mtime) for the process, so a server hashes each file once."""
    from diffcli.models.hashing import sha256_file

    p = Path(path)
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _SHA256:
        _SHA256[key] = sha256_file(p)
    return _SHA256[key]


def find_by_hash(sha256: str) -> Path | None:
    """The file in the LoRA folder whose sha256 is SHA256, if any."""
    folder = lora_dir()
    if not folder.is_dir():
        return None
    for p in sorted(folder.rglob(f"*{LORA_SUFFIX}")):
        if lora_sha256(p) == sha256:
            return p.resolve()
    return None


def resolve_specs(specs, replay: dict | None = None, folder_only: bool = False) -> tuple[str, ...]:
    """Each 'NAME_OR_PATH[:WEIGHT]' as 'ABSOLUTE_PATH:WEIGHT' (weight 1 when not given); a usage error for
    one that is not found. REPLAY maps a recorded path to its recorded sha256 (a --from image): a file no
    longer there is looked for by name, then by hash, in the LoRA folder. FOLDER_ONLY: each is the name of
    a LoRA in the LoRA folder, never a path (find_lora), and no message shows where the folder is."""
    from diffcli.errors import UsageError
    from diffcli.text import shown

    out = []
    for spec in specs:
        name, weight = split_spec(spec)
        path = find_lora(name, folder_only=folder_only)
        recorded = (replay or {}).get(name)
        if recorded and (path is None or lora_sha256(path) != recorded):
            by_name = find_lora(Path(name).name)
            path = by_name if by_name and lora_sha256(by_name) == recorded else find_by_hash(recorded)
        if path is None and folder_only:
            raise UsageError(f"LoRA {shown(name)} not found in the LoRA folder")
        if path is None:
            where = f"; recorded with sha256 {recorded[:12]}, not found by name or hash" if recorded else ""
            raise UsageError(
                f"LoRA {shown(name)} not found: not a file, nor a LoRA in {lora_dir()} (DIFFCLI_LORA_DIR){where}"
            )
        if path.suffix != LORA_SUFFIX:
            raise UsageError(f"LoRA {shown(path)}: only .safetensors LoRA files are read")
        if any(o.rpartition(":")[0] == str(path) for o in out):
            raise UsageError(
                f"LoRA {shown(name if folder_only else path)} is named twice; give it once, with the weight you want"
            )
        out.append(join_spec(path, 1.0 if weight is None else weight))
    return tuple(out)


def lora_records(specs) -> list[dict]:
    """What an image records about each LoRA of a settled job: name, path, weight, sha256."""
    records = []
    for spec in specs or ():
        path, weight = split_spec(spec)
        records.append(
            {
                "name": Path(path).stem if Path(path).name != LORA_FILE else Path(path).parent.name,
                "path": path,
                "weight": weight,
                "sha256": lora_sha256(path),
            }
        )
    return records


def relocate(specs, record: dict, source: str) -> tuple[str, ...]:
    """The LoRAs of a job recorded in an image (RECORD, read from SOURCE) found again on this machine: at
    the recorded path when that file still has the recorded sha256, else by file name, then by sha256, in
    the LoRA folder. Nothing named inside an image is ever fetched."""
    from diffcli.errors import UsageError

    model = record.get("model") if isinstance(record.get("model"), dict) else {}
    recorded = {r.get("path"): r.get("sha256") for r in model.get("loras") or [] if isinstance(r, dict)}
    try:
        return resolve_specs(specs, replay={k: v for k, v in recorded.items() if isinstance(v, str)})
    except UsageError as exc:
        raise UsageError(f"{source}: {exc}; replay never fetches a LoRA named inside an image") from None
