"""The web page of `diffcli serve --http` (`/`) and the gallery of the server's images (`/v1/gallery`).

The page is three files shipped in this package (page/: index.html, app.js, style.css), served from a
fixed table: no request names a file. The gallery lists and serves images of the server's output
directory only, and only what is plainly one: a name of one component (letters, digits, `.`, `_`, `-`;
not starting with a dot: no `..`, no hidden files, no separators, so no absolute path), an image
extension, and a regular file opened without following a link (a symlink there, to anywhere, is
refused). What a listed image records is reduced to the settings a form uses, naming no server path.
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

from diffcli.serve import api

PAGE_DIR = Path(__file__).with_name("page")
PAGE = {  # route -> (file in page/, content type)
    "/": ("index.html", "text/html; charset=utf-8"),
    "/page/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/page/style.css": ("style.css", "text/css; charset=utf-8"),
}
# the page's own rules for the browser: its files and this server only; no frames, no other origin
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}
GALLERY_PREFIX = "/v1/gallery/"
MAX_LISTED = 200  # newest images a listing shows
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,250}")
# what "use these settings" puts back in the form (the rest of a record stays in the file)
SETTINGS = ("task", "prompt", "negative", "model", "steps", "cfg", "width", "height", "seed", "scheduler", "strength")


def page_file(route: str) -> tuple[bytes, str] | None:
    """(bytes, content type) of the page's file at ROUTE; None for any other route."""
    if route not in PAGE:
        return None
    name, kind = PAGE[route]
    return (PAGE_DIR / name).read_bytes(), kind


def image_name(name: str) -> str | None:
    """NAME (a gallery URL's last part, already percent-decoded) if it may name an image of the output
    directory: one plain component with an image extension; else None."""
    if not _NAME.fullmatch(name) or os.path.splitext(name)[1].lower() not in IMAGE_TYPES:
        return None
    return name


def open_image(output_dir: str, name: str):
    """The image NAME of OUTPUT_DIR opened for reading (a binary file object), or None: a name image_name
    refuses, no such file, a link (never followed) or anything but a regular file."""
    if image_name(name) is None:
        return None
    try:
        directory = os.open(output_dir, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return None
    try:
        fd = os.open(name, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0), dir_fd=directory)
    except OSError:  # ELOOP: a symlink
        return None
    finally:
        os.close(directory)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return os.fdopen(fd, "rb")


def listing(output_dir: str, limit: int = MAX_LISTED) -> list[dict]:
    """The newest images of OUTPUT_DIR (at most LIMIT), newest first, each with what it records."""
    found = []
    try:
        with os.scandir(output_dir) as entries:
            for entry in entries:
                if image_name(entry.name) is None or not entry.is_file(follow_symlinks=False):
                    continue
                try:
                    found.append((entry.stat(follow_symlinks=False).st_mtime_ns, entry.name))
                except OSError:
                    continue
    except OSError:  # no output directory yet: nothing made
        return []
    found.sort(reverse=True)
    items = [describe(output_dir, name) for _, name in found[:limit]]
    return [item for item in items if item is not None]


def describe(output_dir: str, name: str) -> dict | None:
    """NAME's gallery entry: its URL, size, the A1111 parameters text and the settings it records."""
    from PIL import Image, UnidentifiedImageError

    from diffcli.metadata import EXIF_IMAGE_DESCRIPTION, without_paths

    fh = open_image(output_dir, name)
    if fh is None:
        return None
    try:
        with fh, Image.open(fh) as img:
            size, info = img.size, dict(img.info)
            blob = info.get("diffcli") or (img.getexif().get(EXIF_IMAGE_DESCRIPTION) if img.format != "PNG" else None)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None
    try:
        record = json.loads(blob) if isinstance(blob, (str, bytes)) else None
    except (ValueError, RecursionError):
        record = None
    job = without_paths(record).get("job") if isinstance(record, dict) else None
    settings = {key: job.get(key) for key in SETTINGS} if isinstance(job, dict) else {}
    settings = {key: api.public_message(value) if isinstance(value, str) else value for key, value in settings.items()}
    parameters = info.get("parameters")
    return {
        "name": name,
        "url": GALLERY_PREFIX + name,
        "width": size[0],
        "height": size[1],
        "parameters": api.public_message(parameters) if isinstance(parameters, str) else None,
        "settings": settings,
    }
