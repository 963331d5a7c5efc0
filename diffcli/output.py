"""Output paths and atomic image writes: files appear whole or not at all, never overwritten silently."""

from __future__ import annotations

import errno
import os
import shutil
import re
import string
import tempfile
from datetime import datetime
from pathlib import Path

from diffcli.errors import RuntimeFailure, UsageError

FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP"}
DEFAULT_DIR = "outputs"
DEFAULT_TEMPLATE = "{index:05d}-{seed}-{prompt}"
TEMPLATE_FIELDS = ("index", "n", "seed", "prompt", "model", "steps", "cfg", "task", "date", "time")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_INDEX = re.compile(r"^(\d{5,})-")


def sanitize(text: str, limit: int = 48) -> str:
    """Make TEXT safe as (part of) a file name: no separators, no dots at the start, bounded length."""
    cleaned = _UNSAFE.sub("_", str(text)).strip("._-")[:limit].rstrip("._-")
    return cleaned or "image"


def _split_out(out: str | None) -> tuple[Path, str, str | None]:
    """(directory, name template, extension or None) for an --out value."""
    if not out:
        return Path(DEFAULT_DIR), DEFAULT_TEMPLATE, None
    path = Path(out).expanduser()
    looks_like_file = "{" in path.name or path.suffix.lower().lstrip(".") in FORMATS
    if out.endswith(("/", os.sep)) or path.is_dir() or not looks_like_file:
        return path, DEFAULT_TEMPLATE, None
    ext = path.suffix.lower().lstrip(".")
    stem = path.name[: -len(path.suffix)] if ext in FORMATS else path.name
    return path.parent, stem, ext if ext in FORMATS else None


def _check_template(template: str) -> None:
    try:
        names = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise UsageError(f"invalid --out template '{template}': {exc}") from None
    unknown = sorted({n for n in names if n not in TEMPLATE_FIELDS})
    if unknown:
        raise UsageError(f"unknown field(s) in --out template: {', '.join(unknown)}; known: {', '.join(TEMPLATE_FIELDS)}")


def _next_index(directory: Path) -> int:
    highest = -1
    if directory.is_dir():
        for entry in os.listdir(directory):
            m = _INDEX.match(entry)
            if m:
                highest = max(highest, int(m.group(1)))
    return highest + 1


def _ensure_writable_dir(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create output directory {directory}: {exc.strerror or exc}") from None
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".diffcli-probe-"):
            pass
    except OSError as exc:
        raise UsageError(f"output directory {directory} is not writable: {exc.strerror or exc}") from None


def plan_paths(out: str | None, fmt: str | None, images: list[dict], overwrite: bool) -> tuple[list[Path], str]:
    """Decide every output path before any model is loaded.

    IMAGES holds one dict of template values per image (seed, prompt, model, steps, cfg, task).
    Returns the paths and the Pillow format name.
    """
    directory, template, ext = _split_out(out)
    if fmt is not None:
        fmt = fmt.lower()
        if fmt not in FORMATS:
            raise UsageError(f"unknown --format '{fmt}'; use png, jpg or webp")
        if ext and FORMATS[ext] != FORMATS[fmt]:
            raise UsageError(f"--out ends in .{ext} but --format is {fmt}")
    ext = fmt or ext or "png"
    _check_template(template)
    if "{" not in template and len(images) > 1:
        template += "-{n}"
    _ensure_writable_dir(directory)
    start, now = _next_index(directory), datetime.now()
    paths: list[Path] = []
    for i, values in enumerate(images):
        fields = {k: sanitize(v) if isinstance(v, str) else v for k, v in values.items()}
        fields.update(index=start + i, n=i + 1, date=now.strftime("%Y%m%d"), time=now.strftime("%H%M%S"))
        try:
            name = template.format(**{k: fields.get(k, "") for k in TEMPLATE_FIELDS})
        except (ValueError, TypeError) as exc:
            raise UsageError(f"invalid --out template '{template}': {exc}") from None
        name = sanitize(name, limit=200)
        paths.append(directory / f"{name}.{ext}")
    if len(set(paths)) != len(paths):
        raise UsageError(f"--out template '{template}' gives the same file name to several images; add {{n}} or {{seed}}")
    if not overwrite:
        for path in paths:
            if path.exists():
                raise UsageError(f"{path} already exists; pass --overwrite to replace it")
    return paths, FORMATS[ext]


def save_atomic(img, path: Path, fmt: str, save_kwargs: dict, overwrite: bool) -> None:
    """Write IMG to a temp file beside PATH, then move it into place; nothing partial is ever left."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            extra = {"quality": 95} if fmt in ("JPEG", "WEBP") else {}
            img.save(fh, format=fmt, **extra, **save_kwargs)
            fh.flush()
            os.fsync(fh.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails if PATH appeared meanwhile: never clobber
            except FileExistsError:
                raise RuntimeFailure(f"{path} appeared while generating; not overwriting (use --overwrite)") from None
            except OSError as exc:  # file systems without hard links
                if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK) or path.exists():
                    raise
                os.replace(tmp, path)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise RuntimeFailure(f"cannot write {path}: {exc.strerror} (no space left?); nothing was written") from None
        raise RuntimeFailure(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


def swap_in_dir(tmp: Path, out: Path) -> None:
    """Replace directory OUT by the finished directory TMP (beside it), so OUT is never half-written."""
    if out.exists():
        old = out.with_name(out.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)
