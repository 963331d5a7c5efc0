"""Reading input images and masks, with one clear error for each way a file can be bad."""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

from diffcli.errors import UsageError

SUPPORTED_INPUT = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF")


@contextlib.contextmanager
def open_image(path: str | Path):
    """Open PATH with Pillow; missing, unreadable, unsupported or oversized files are usage errors."""
    from PIL import Image, UnidentifiedImageError

    from diffcli.text import escape

    path = Path(path)
    shown = escape(str(path))
    try:
        if not path.exists():
            raise UsageError(f"{shown}: no such file")
        if path.is_dir():
            raise UsageError(f"{shown}: is a directory, not an image")
    except OSError as exc:  # an unsearchable folder on the way
        raise UsageError(f"{shown}: cannot read image ({exc.strerror or exc})") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "Corrupt EXIF data" (read for a JPEG's DPI): _upright
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UsageError(
            f"{shown}: image too large (over Pillow's decompression-bomb limit of {Image.MAX_IMAGE_PIXELS} pixels)"
        ) from None
    except UnidentifiedImageError:
        raise UsageError(f"{shown}: not an image in a supported format ({', '.join(SUPPORTED_INPUT)})") from None
    except OSError as exc:
        raise UsageError(f"{shown}: cannot read image ({exc.strerror or exc})") from None
    except (ValueError, SyntaxError, EOFError) as exc:  # e.g. a compressed text chunk that inflates too far
        raise UsageError(f"{shown}: damaged image ({escape(str(exc))})") from None
    try:
        if img.format not in SUPPORTED_INPUT:
            raise UsageError(f"{shown}: unsupported image format {img.format}; use one of {', '.join(SUPPORTED_INPUT)}")
        yield img
    finally:
        img.close()


def to_rgb(img):
    """Convert any Pillow mode to RGB: alpha is composited on white, 16-bit is scaled to 8-bit."""
    from PIL import Image

    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        import numpy as np

        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype("uint8")
        return Image.fromarray(arr, "L").convert("RGB")
    if img.mode == "F":
        import numpy as np

        arr = np.asarray(img, dtype=np.float64)
        top = 1.0 if arr.max() <= 1.0 else 255.0
        return Image.fromarray(np.clip(arr / top * 255 + 0.5, 0, 255).astype("uint8"), "L").convert("RGB")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def _upright(img):
    """IMG decoded and turned as its EXIF orientation says. Damaged EXIF data (Pillow warns "Corrupt EXIF
    data" on stderr, into --json's event stream) counts as no orientation."""
    from PIL import ImageOps

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        img.load()
        return ImageOps.exif_transpose(img)


def load_rgb(path: str | Path):
    """An input image as RGB, upright (EXIF orientation applied), fully decoded."""
    with open_image(path) as img:
        try:
            return to_rgb(_upright(img))
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            raise UsageError(f"{path}: corrupt or truncated image ({exc})") from None


def load_rgb_alpha(path: str | Path):
    """An image as RGBA, upright, fully decoded (for masks, where alpha counts)."""
    with open_image(path) as img:
        try:
            return _upright(img).convert("RGBA")
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            raise UsageError(f"{path}: corrupt or truncated image ({exc})") from None


def load_mask(path: str | Path, size: tuple[int, int]):
    """A mask as 8-bit grey (white = repaint); it must have the image's size. In a mask with
    transparency, alpha is part of the mask: transparent pixels keep the original."""
    from PIL import Image

    with open_image(path) as img:
        has_alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
    if has_alpha:
        rgba = load_rgb_alpha(path)
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        mask = Image.alpha_composite(black, rgba).convert("L")
    else:
        mask = load_rgb(path).convert("L")
    if mask.size != size:
        raise UsageError(
            f"{path}: mask is {mask.size[0]}x{mask.size[1]} but the image is {size[0]}x{size[1]}; they must match"
        )
    return mask


def round_size(width: int, height: int, multiple: int) -> tuple[int, int]:
    """Round a size down to the nearest multiple (at least one multiple)."""
    return max(multiple, width - width % multiple), max(multiple, height - height % multiple)
