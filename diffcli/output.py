"""Output paths and atomic image writes: files appear whole or not at all, never overwritten silently.

Names are reserved when they are planned: a hidden marker file in the output directory, written under
a lock on the directory, claims them, so concurrent runs into one directory get distinct indices
instead of colliding at the end. The run holds a lock (flock) on its marker for as long as the marker
claims its names; a marker whose lock is free belongs to a run that has ended (crashed, killed) and is
taken over, whatever became of the PID in its name. Temporary files get unpredictable names, are created exclusively,
and a link at a final name is never followed.
"""

from __future__ import annotations

import atexit
import errno
import json
import os
import re
import shutil
import string
import tempfile
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from diffcli.errors import RuntimeFailure, UsageError

FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP"}
# image files an --out may name that diffcli does not write: a usage error, not a folder of that name
_IMAGE_FORMATS_NOT_WRITTEN = {"gif", "bmp", "tif", "tiff", "avif", "heic", "heif", "jxl", "jp2", "ico", "tga", "ppm"}
DEFAULT_DIR = "outputs"
DEFAULT_TEMPLATE = "{index:05d}-{seed}-{prompt}"
TEMPLATE_FIELDS = ("index", "n", "seed", "prompt", "model", "steps", "cfg", "task", "date", "time")
MAX_NAME = 200  # characters of a file name before its extension
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_INDEX = re.compile(r"^(\d{5,})-")
_MARKER = re.compile(r"^\.diffcli-(\d+)-[0-9a-z_]+\.reserved$")

_RESERVATIONS: list[tuple[Path, int]] = []  # this process's markers, and the open fd that locks each
_CREATED_DIRS: list[Path] = []  # output directories this process created (removed again if left empty)


def sanitize(text: str, limit: int = 48) -> str:
    """Make TEXT safe as (part of) a file name: no separators, no dots at the start, bounded length."""
    cleaned = _UNSAFE.sub("_", str(text)).strip("._-")[:limit].rstrip("._-")
    return cleaned or "image"


def split_out(out: str | None) -> tuple[Path, str, str | None]:
    """(directory, name template, extension or None) for an --out value."""
    if not out:
        return Path(DEFAULT_DIR), DEFAULT_TEMPLATE, None
    path = Path(out).expanduser()
    suffix = path.suffix.lower().lstrip(".")
    if suffix in _IMAGE_FORMATS_NOT_WRITTEN and not out.endswith(("/", os.sep)) and not _is_dir(path):
        raise UsageError(  # (before: a folder of that name was made)
            f"--out {out}: .{suffix} is not a format diffcli writes (png, jpg, webp); to name a folder, end it with /"
        )
    looks_like_file = "{" in path.name or suffix in FORMATS
    if out.endswith(("/", os.sep)) or _is_dir(path) or not looks_like_file:
        return path, DEFAULT_TEMPLATE, None
    ext = path.suffix.lower().lstrip(".")
    stem = path.name[: -len(path.suffix)] if ext in FORMATS else path.name
    return path.parent, stem, ext if ext in FORMATS else None


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:  # e.g. a name too long, or an unsearchable parent: not a directory we can use
        return False


def _check_template(template: str) -> None:
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise UsageError(f"invalid --out template '{template}': {exc}") from None
    names = [f for _, f, _, _ in parsed if f is not None]
    unknown = sorted({n for n in names if n not in TEMPLATE_FIELDS})
    if unknown:
        raise UsageError(
            f"unknown field(s) in --out template: {', '.join(unknown)}; known: {', '.join(TEMPLATE_FIELDS)}"
        )
    for _, name, spec, _ in parsed:  # a width such as {seed:>99999999999} would build a huge string
        if spec and any(int(w) > MAX_NAME for w in re.findall(r"\d+", spec)):
            raise UsageError(
                f"invalid --out template '{template}': format '{{{name}:{spec}}}' is wider than "
                f"a file name can be ({MAX_NAME} characters)"
            )


def _ensure_writable_dir(directory: Path) -> None:
    missing = [p for p in (directory, *directory.parents) if not os.path.lexists(p)]
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create output directory {directory}: {exc.strerror or exc}") from None
    if missing:
        _CREATED_DIRS.extend(reversed(missing))  # innermost last, so cleanup removes it first
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".diffcli-probe-"):
            pass
    except OSError as exc:
        raise UsageError(f"output directory {directory} is not writable: {exc.strerror or exc}") from None


def check_output_dir(out: str | None) -> None:
    """Fail early (before any download or load) when the output directory cannot be used."""
    directory, template, _ = split_out(out)
    _check_template(template)
    _ensure_writable_dir(directory)


def pid_alive(pid: int) -> bool:
    """Whether process PID still runs (a zombie, killed but not yet reaped, does not). Where there is no
    flock, a reservation marker's run is judged by it; the server client waits on it after a crash."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except (OSError, IndexError):
        return True  # no /proc here: it exists


@contextmanager
def _locked(directory: Path):
    """An exclusive lock on DIRECTORY itself (nothing is left behind in it); a no-op where the
    platform has no flock."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _claimed(directory: Path) -> tuple[set[str], int]:
    """Names reserved by live runs, and the highest index any file or reservation uses. Markers of
    runs that no longer exist (killed with -9) are removed."""
    names: set[str] = set()
    highest = -1
    for entry in os.listdir(directory):
        m = _INDEX.match(entry)
        if m:
            highest = max(highest, int(m.group(1)))
            continue
        m = _MARKER.match(entry)
        if not m:
            continue
        marker = directory / entry
        if not _held(marker, int(m.group(1))):
            continue
        try:
            claimed = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        for name in claimed if isinstance(claimed, list) else []:
            names.add(str(name))
            m = _INDEX.match(str(name))
            if m:
                highest = max(highest, int(m.group(1)))
    return names, highest


def _held(marker: Path, pid: int) -> bool:
    """Does a live run hold MARKER? It does while its lock on the marker is taken; a marker whose lock
    is free is a dead run's and is removed here (the caller holds the directory's lock)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: the PID in its name is all there is
        if pid_alive(pid):
            return True
        _unlink(marker)
        return False
    try:
        fd = os.open(marker, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return False
    except OSError:  # not ours to read (another user's run): judged by its PID
        return pid_alive(pid)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True  # its run holds it
    except OSError:  # a file system without flock: judged by its PID
        return pid_alive(pid)
    else:
        _unlink(marker)
        return False
    finally:
        os.close(fd)


def _reserve(directory: Path, names: list[str]) -> None:
    """Write a marker claiming NAMES (created exclusively, never through a link), and lock it for as
    long as the names are claimed: the open fd is kept until release_reservations (or this process's end)."""
    fd, marker = tempfile.mkstemp(dir=directory, prefix=f".diffcli-{os.getpid()}-", suffix=".reserved")
    try:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: nobody else holds it
    except (ImportError, OSError):  # no flock here: the PID in the marker's name speaks for it
        pass
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o644 & ~umask)  # readable, so another user's run can test its lock too
        os.write(fd, json.dumps(names).encode("utf-8"))
    except OSError:
        os.close(fd)
        _unlink(Path(marker))
        raise
    _RESERVATIONS.append((Path(marker), fd))


def release_reservations() -> None:
    """Remove this process's name reservations, and output directories it created that stayed empty."""
    while _RESERVATIONS:
        marker, fd = _RESERVATIONS.pop()
        _unlink(marker)  # removed while still locked; the lock goes with the fd
        try:
            os.close(fd)
        except OSError:
            pass
    while _CREATED_DIRS:
        directory = _CREATED_DIRS.pop()
        try:
            directory.rmdir()  # only if empty
        except OSError:
            pass


atexit.register(release_reservations)


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def plan_paths(out: str | None, fmt: str | None, images: list[dict], overwrite: bool) -> tuple[list[Path], str]:
    """Decide and reserve every output path before any model is loaded.

    IMAGES holds one dict of template values per image (seed, prompt, model, steps, cfg, task).
    Returns the paths and the Pillow format name.
    """
    directory, template, ext = split_out(out)
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
    now = datetime.now()
    with _locked(directory):
        claimed, highest = _claimed(directory)
        paths = [
            directory / f"{_name(template, values, highest + 1 + i, i, now)}.{ext}" for i, values in enumerate(images)
        ]
        if len(set(paths)) != len(paths):
            raise UsageError(
                f"--out template '{template}' gives the same file name to several images; add {{n}} or {{seed}}"
            )
        for path in paths:
            if path.name in claimed:
                raise UsageError(f"{path} is being written by another diffcli run")
            if not overwrite and os.path.lexists(path):
                raise UsageError(f"{path} already exists; pass --overwrite to replace it")
        _reserve(directory, [p.name for p in paths])
    return paths, FORMATS[ext]


def _name(template: str, values: dict, index: int, i: int, now: datetime) -> str:
    fields = {k: sanitize(v) if isinstance(v, str) else v for k, v in values.items()}
    fields.update(index=index, n=i + 1, date=now.strftime("%Y%m%d"), time=now.strftime("%H%M%S"))
    try:
        name = template.format(**{k: fields.get(k, "") for k in TEMPLATE_FIELDS})
    except (ValueError, TypeError) as exc:
        raise UsageError(f"invalid --out template '{template}': {exc}") from None
    return sanitize(name, limit=MAX_NAME)


def save_atomic(img, path: Path, fmt: str, save_kwargs: dict, overwrite: bool) -> None:
    """Write IMG to a new temp file beside PATH, then move it into place; nothing partial is ever left.

    The temp file has an unpredictable name and is created exclusively (mkstemp), so no link planted
    in the directory can redirect the write; the final step is a hard link (fails if anything, a
    symlink included, appeared at PATH) or, with OVERWRITE, a rename that replaces a link at PATH
    rather than writing through it."""
    fd, tmp_name = _temp_beside(path)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            extra = {"quality": 95} if fmt in ("JPEG", "WEBP") else {}
            if fmt == "JPEG" and img.mode == "RGBA":  # (Qwen-Image 2.1's images): on white, as JPEG has no alpha
                from diffcli.images import to_rgb

                img = to_rgb(img)
            img.save(fh, format=fmt, **extra, **save_kwargs)
            fh.flush()
            os.fsync(fh.fileno())
        _publish(tmp, path, overwrite)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise RuntimeFailure(f"cannot write {path}: {exc.strerror} (no space left?); nothing was written") from None
        raise RuntimeFailure(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        _unlink(tmp)


def _temp_beside(path: Path) -> tuple[int, str]:
    try:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:100]}.", suffix=".tmp")
    except OSError as exc:
        raise RuntimeFailure(f"cannot write {path}: {exc.strerror or exc}") from None
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; an output gets the usual permissions
    return fd, name


def _publish(tmp: Path, path: Path, overwrite: bool) -> None:
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path, follow_symlinks=False)  # fails if PATH appeared meanwhile: never clobber
    except FileExistsError:
        raise RuntimeFailure(f"{path} appeared while generating; not overwriting (use --overwrite)") from None
    except OSError as exc:  # file systems without hard links
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK) or os.path.lexists(path):
            raise
        os.replace(tmp, path)


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
