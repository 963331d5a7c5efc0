"""An edit's reference images (`diffcli edit -r REF.png`): recorded by path and sha256, as LoRA files are, and
found again on `--from`: at the recorded path when that file still has the recorded sha256, else by its
hash among the images beside the --from image and in the working directory. Nothing is ever downloaded.
No torch."""

from __future__ import annotations

from pathlib import Path

from diffcli.errors import UsageError

SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def absolute(paths) -> tuple[str, ...] | None:
    """PATHS as absolute paths of existing files (a usage error names one that is not)."""
    from diffcli.text import shown

    out = []
    for path in paths or ():
        p = Path(path).expanduser()
        if not p.is_file():
            raise UsageError(f"reference image {shown(path)}: no such file")
        out.append(str(p.resolve()))
    return tuple(out) or None


def sha256(path) -> str:
    """The sha256 of a reference image file (remembered per path, size and mtime: models.lora.lora_sha256)."""
    from diffcli.models.lora import lora_sha256

    return lora_sha256(path)


def records(paths) -> list[dict]:
    """What an image records about each reference image: name, path and sha256."""
    return [{"name": Path(p).name, "path": str(p), "sha256": sha256(p)} for p in paths or ()]


def relocate(paths, record: dict, source: str, beside: Path | None = None) -> tuple[str, ...]:
    """The reference images of a job recorded in an image (RECORD, read from SOURCE) found on this machine:
    at the recorded path when it still has the recorded sha256 (or no hash was recorded), else the image
    with that sha256 in BESIDE (the --from image's folder) or the working directory."""
    from diffcli.text import shown

    recorded = {r.get("path"): r.get("sha256") for r in record.get("references") or [] if isinstance(r, dict)}
    out = []
    for path in paths:
        want = recorded.get(path)
        if Path(path).is_file() and (not isinstance(want, str) or sha256(path) == want):
            out.append(str(Path(path).resolve()))
            continue
        found = _by_hash(want, [beside, Path.cwd()]) if isinstance(want, str) else None
        if found is None:
            why = f"; recorded with sha256 {want[:12]}, not found by hash" if isinstance(want, str) else ""
            raise UsageError(
                f"{source}: reference image {shown(path)} is not there{why}; replay never fetches an image "
                f"named inside an image: pass -r with the file"
            )
        out.append(str(found))
    return tuple(out)


def _by_hash(want: str, folders) -> Path | None:
    for folder in folders:
        if folder is None or not Path(folder).is_dir():
            continue
        for p in sorted(Path(folder).iterdir()):
            if p.suffix.lower() in SUFFIXES and p.is_file() and sha256(p) == want:
                return p.resolve()
    return None
