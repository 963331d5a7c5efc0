"""Outpainting: a larger canvas around an image, and the mask of its new area (no torch).

`diffcli outpaint` is an inpaint job whose input is prepared here: the original pasted unchanged
into a canvas of the requested size, the new area filled (how: FILLS) and a mask that is white
exactly there. The engine (diffcli.run) denoises it with the model's inpaint pipeline and
composites the original back at full weight, so the original pixels never change.

The canvas is described either by how much to add on each side (`--extend`, the Job's `extend`)
or by its size (`--to WxH`, the Job's width and height) and where the original sits (`anchor`).
A settled Job always records the added pixels as `extend` = "L,T,R,B" and the canvas as its
width and height, so `--from`, batch lines and the server get the same canvas back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from diffcli.errors import UsageError
from diffcli.limits import MAX_SIDE

INPAINT_MODEL = ("auto", "on", "off")  # --inpaint-model: see diffcli.inpaint_model.choose_model
ANCHORS = ("center", "left", "right", "top", "bottom", "top-left", "top-right", "bottom-left", "bottom-right")
FILLS = ("edge", "blur", "noise")
_AMOUNT = re.compile(r"^(\d+(?:\.\d+)?)(%?)$")


@dataclass(frozen=True)
class Canvas:
    """Where the original (of size `size`) sits in a canvas: pixels added on each side."""

    size: tuple[int, int]  # the original's width, height
    left: int
    top: int
    right: int
    bottom: int

    @property
    def width(self) -> int:
        return self.size[0] + self.left + self.right

    @property
    def height(self) -> int:
        return self.size[1] + self.top + self.bottom

    @property
    def extend(self) -> str:
        """The added pixels as the Job records them: "L,T,R,B"."""
        return f"{self.left},{self.top},{self.right},{self.bottom}"


def parse_extend(text: str) -> tuple[tuple[float, bool], ...]:
    """--extend TEXT as four (amount, is_percent) in the order left, top, right, bottom. TEXT is one
    amount for every side or four, comma-separated; an amount is pixels (`32`) or a percentage of
    the image's width (left, right) or height (top, bottom) (`25%`)."""
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) not in (1, 4):
        raise UsageError(
            f"invalid --extend '{text}': give one amount for every side or four as L,T,R,B "
            f"(pixels, or a percentage such as 25%)"
        )
    amounts = []
    for part in parts:
        match = _AMOUNT.match(part)
        if not match:
            raise UsageError(
                f"invalid --extend '{text}': '{part}' is not a number of pixels or a percentage (e.g. 32 or 25%)"
            )
        value, percent = float(match.group(1)), bool(match.group(2))
        if not percent and value != int(value):
            raise UsageError(f"invalid --extend '{text}': pixels must be whole numbers (got {part})")
        amounts.append((value, percent))
    if len(amounts) == 1:
        amounts *= 4
    if not any(value for value, _ in amounts):
        raise UsageError(f"invalid --extend '{text}': nothing to add; give at least one side more than 0")
    return tuple(amounts)


def parse_size(text: str) -> tuple[int, int]:
    """--to WxH as (width, height)."""
    match = re.match(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$", str(text))
    if not match:
        raise UsageError(f"invalid --to '{text}': use WIDTHxHEIGHT in pixels, e.g. 128x64")
    return int(match.group(1)), int(match.group(2))


def check_anchor(anchor: str | None) -> None:
    if anchor is not None and anchor not in ANCHORS:
        raise UsageError(f"invalid --anchor '{anchor}'; use one of {', '.join(ANCHORS)}")


def check_fill(fill: str | None) -> None:
    if fill is not None and fill not in FILLS:
        raise UsageError(f"invalid --fill '{fill}'; use one of {', '.join(FILLS)}")


def check_job(job) -> None:
    """What an outpaint job must say, checked without the image or a model."""
    if job.extend is not None:
        parse_extend(job.extend)
        if job.anchor is not None:
            raise UsageError("--anchor places the image in a --to canvas; with --extend the sides say where it goes")
    elif job.width is None and job.height is None:
        raise UsageError("outpaint needs --extend L,T,R,B (or 25%) or --to WIDTHxHEIGHT")
    check_anchor(job.anchor)
    check_fill(job.fill)
    if job.inpaint_model is not None and job.inpaint_model not in INPAINT_MODEL:
        raise UsageError(f"invalid --inpaint-model '{job.inpaint_model}'; use one of {', '.join(INPAINT_MODEL)}")
    if job.mask is not None:
        raise UsageError("outpaint makes its own mask (the new area); --mask is for `diffcli inpaint`")


def plan(
    size: tuple[int, int], extend: str | None, width: int | None, height: int | None, anchor: str | None, multiple: int
) -> Canvas:
    """The canvas for an original of SIZE: from EXTEND, else from WIDTH x HEIGHT and ANCHOR (a side not
    given keeps the original's). Its sides must be multiples of MULTIPLE (the model's size rule): pixel
    amounts that miss it are refused; percentages are rounded up to it (the extra split over the
    sides given as percentages)."""
    canvas = _plan(size, extend, width, height, anchor, multiple)
    if max(canvas.width, canvas.height) > MAX_SIDE:
        raise UsageError(
            f"the canvas would be {canvas.width}x{canvas.height}; each side must be at most {MAX_SIDE} pixels"
        )
    return canvas


def _plan(size, extend, width, height, anchor, multiple) -> Canvas:
    w, h = size
    if extend is not None:
        amounts = parse_extend(extend)
        sides = []
        for (first, second), length in (((0, 2), w), ((1, 3), h)):
            pair = [amounts[first], amounts[second]]
            added = [round(v * length / 100) if pct else int(v) for v, pct in pair]
            missing = -(length + sum(added)) % multiple
            flexible = [i for i, (v, pct) in enumerate(pair) if pct and v > 0]
            if missing and flexible:
                for k, i in enumerate(flexible):  # the first percentage side gets the odd pixels
                    added[i] += missing // len(flexible) + (missing % len(flexible) if k == 0 else 0)
            sides.append(added)
        canvas = Canvas(size, sides[0][0], sides[1][0], sides[0][1], sides[1][1])
        if width is not None and width != canvas.width or height is not None and height != canvas.height:
            raise UsageError(
                f"--extend {extend} makes a {canvas.width}x{canvas.height} canvas around the "
                f"{w}x{h} image, but the job also asks for {width or canvas.width}x"
                f"{height or canvas.height}; give --extend or --to (--width/--height), not both"
            )
        for name, value, given in (
            ("width", canvas.width, canvas.left + canvas.right),
            ("height", canvas.height, canvas.top + canvas.bottom),
        ):
            if value % multiple:
                short = multiple - value % multiple
                raise UsageError(
                    f"--extend {extend} makes the canvas {name} {value} (the image's {w if name == 'width' else h} "
                    f"+ {given}), not a multiple of {multiple} as this model needs; add {short} more "
                    f"pixels on that axis, or give a percentage (rounded to fit)"
                )
        return canvas
    width, height = width or w, height or h
    if width < w or height < h:
        raise UsageError(
            f"--to {width}x{height} is smaller than the {w}x{h} image; outpaint only adds to it "
            f"(use `diffcli img2img` with --width/--height to resize)"
        )
    if (width, height) == (w, h):
        raise UsageError(f"--to {width}x{height} is the image's own size; nothing to add")
    anchor = anchor or "center"
    dx, dy = width - w, height - h
    left = 0 if "left" in anchor else dx if "right" in anchor else dx // 2
    top = 0 if "top" in anchor else dy if "bottom" in anchor else dy // 2
    return Canvas(size, left, top, dx - left, dy - top)


def prepare(original, canvas: Canvas, fill: str):
    """(canvas image, mask): ORIGINAL pasted unchanged at its place, the new area filled by FILL, and
    a mask white exactly on the new area.

    edge: every new pixel repeats the nearest original edge pixel (a horizon continues straight);
    blur: the same, then blurred, more the farther from the original (colours stay, streaks go);
    noise: uniform random colours (the model sees nothing of the original there before denoising)."""
    import numpy as np
    from PIL import Image

    c = canvas
    pixels = np.asarray(original.convert("RGB"))
    pad = ((c.top, c.bottom), (c.left, c.right), (0, 0))
    inside = np.zeros((c.height, c.width), dtype=bool)
    inside[c.top : c.top + c.size[1], c.left : c.left + c.size[0]] = True
    if fill == "noise":
        rng = np.random.default_rng(0)  # the canvas is part of the job: the same every time
        filled = rng.integers(0, 256, size=(c.height, c.width, 3), dtype=np.uint8)
    else:
        filled = np.pad(pixels, pad, mode="edge")
        if fill == "blur":
            filled = _blur_outward(filled, inside)
    filled[inside] = pixels.reshape(-1, 3)
    mask = Image.fromarray(np.where(inside, 0, 255).astype(np.uint8), "L")
    return Image.fromarray(filled, "RGB"), mask


def _blur_outward(filled, inside):
    """Blur the new area of FILLED, the radius growing with the distance from the original (from 0 at
    the seam to a quarter of the canvas's shorter side)."""
    import numpy as np
    from PIL import Image, ImageFilter

    h, w = inside.shape
    ys, xs = np.nonzero(inside)
    dy = np.maximum(np.maximum(ys.min() - np.arange(h), np.arange(h) - ys.max()), 0)
    dx = np.maximum(np.maximum(xs.min() - np.arange(w), np.arange(w) - xs.max()), 0)
    distance = np.maximum(dy[:, None], dx[None, :]).astype(np.float32)
    top = max(1.0, float(distance.max()))
    image = Image.fromarray(filled)
    widest = max(1.0, min(h, w) / 4)
    radii = [0.0] + [r for r in (2.0, 4.0, 8.0) if r < widest] + [widest]
    levels = [np.asarray(image, dtype=np.float32)]
    levels += [np.asarray(image.filter(ImageFilter.GaussianBlur(r)), dtype=np.float32) for r in radii[1:]]
    wanted = np.clip(distance / top, 0, 1) * radii[-1]
    out = np.zeros_like(levels[0])
    for k in range(len(radii) - 1):  # linear between the two blur levels around the wanted radius
        lo, hi = radii[k], radii[k + 1]
        t = np.clip((wanted - lo) / (hi - lo), 0, 1)[..., None]
        band = (wanted >= lo) & ((wanted < hi) | (k == len(radii) - 2))
        out = np.where(band[..., None], levels[k] * (1 - t) + levels[k + 1] * t, out)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
