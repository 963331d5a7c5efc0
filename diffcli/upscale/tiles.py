"""Tile grids and seamless blending (numpy and Pillow only; no torch).

A grid covers every pixel: along each axis the first tile starts at 0, the last ends at the edge, and
the tiles in between are spread evenly, so every overlap is at least the requested one. Each tile is
weighted by a raised-cosine ramp across the part it shares with each neighbour (1 elsewhere, also at
the image border); the weighted tiles are accumulated and divided by the summed weights. Two
neighbours' ramps sum to exactly 1 across their overlap, so a tile-wise difference fades out
smoothly instead of stepping at the border.

Memory: tiles are processed row by row and only one band of rows (one tile high) is kept in float;
rows that no later tile touches are converted to 8 bits and pasted into the output image at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def ceil_to(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def plan_axis(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size TILE covering [0, LENGTH) with at least OVERLAP shared pixels."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    count = math.ceil((length - tile) / stride) + 1
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


@dataclass(frozen=True)
class Tile:
    index: int  # 0-based, row-major
    x: int  # left, in grid units
    y: int  # top, in grid units
    w: int  # processed size (may reach past the image when the image is smaller than a tile)
    h: int
    left: int  # pixels shared with the neighbour on each side (0 = none)
    right: int
    top: int
    bottom: int


@dataclass(frozen=True)
class Grid:
    width: int  # image size in grid units
    height: int
    tile_w: int
    tile_h: int
    xs: tuple[int, ...]
    ys: tuple[int, ...]

    @property
    def count(self) -> int:
        return len(self.xs) * len(self.ys)

    def tiles(self) -> list[Tile]:
        def shared(starts, size, i):
            before = starts[i - 1] + size - starts[i] if i > 0 else 0
            after = starts[i] + size - starts[i + 1] if i + 1 < len(starts) else 0
            return before, after

        out = []
        for j, y in enumerate(self.ys):
            top, bottom = shared(self.ys, self.tile_h, j)
            for i, x in enumerate(self.xs):
                left, right = shared(self.xs, self.tile_w, i)
                out.append(Tile(len(out), x, y, self.tile_w, self.tile_h, left, right, top, bottom))
        return out


def plan_grid(width: int, height: int, tile: int, overlap: int, multiple: int = 1) -> Grid:
    """The tile grid for an image of WIDTH x HEIGHT (any units). A side shorter than TILE gets one
    tile of that side rounded up to MULTIPLE (the part past the edge is padded, then dropped)."""
    tile_w = min(tile, ceil_to(width, multiple))
    tile_h = min(tile, ceil_to(height, multiple))
    return Grid(
        width,
        height,
        tile_w,
        tile_h,
        tuple(plan_axis(width, tile_w, overlap)),
        tuple(plan_axis(height, tile_h, overlap)),
    )


def ramp(size: int, before: int, after: int) -> np.ndarray:
    """1-D weights: a raised cosine rising over the first BEFORE pixels and falling over the last AFTER."""
    w = np.ones(size, dtype=np.float32)
    if before > 0:
        t = (np.arange(before, dtype=np.float32) + 0.5) / before
        w[:before] *= 0.5 - 0.5 * np.cos(np.pi * t)
    if after > 0:
        t = (np.arange(after, dtype=np.float32) + 0.5) / after
        w[size - after :] *= 0.5 + 0.5 * np.cos(np.pi * t)
    return w


def tile_weights(tile: Tile, scale: int = 1) -> np.ndarray:
    """(h, w) weights of TILE in output pixels (grid units times SCALE)."""
    wx = ramp(tile.w * scale, tile.left * scale, tile.right * scale)
    wy = ramp(tile.h * scale, tile.top * scale, tile.bottom * scale)
    return wy[:, None] * wx[None, :]


class BandBlender:
    """Accumulates weighted tiles into an RGB Pillow image, one band of rows at a time.

    Tiles must arrive in row-major order of a Grid; `add` takes float RGB in [0, 1].
    """

    def __init__(self, width: int, height: int, band: int) -> None:
        from PIL import Image

        self.width, self.height, self.band = width, height, band
        self.image = Image.new("RGB", (width, height))
        self.top = 0  # output row of acc[0]
        self.acc = np.zeros((band, width, 3), dtype=np.float32)
        self.wsum = np.zeros((band, width), dtype=np.float32)

    def add(self, x: int, y: int, rgb: np.ndarray, weights: np.ndarray) -> None:
        """Blend RGB (h, w, 3) at output position (x, y); parts past the image are dropped."""
        if y > self.top:
            self._flush(y)
        h = min(rgb.shape[0], self.height - y)
        w = min(rgb.shape[1], self.width - x)
        r0 = y - self.top
        wt = weights[:h, :w]
        self.acc[r0 : r0 + h, x : x + w] += rgb[:h, :w] * wt[..., None]
        self.wsum[r0 : r0 + h, x : x + w] += wt

    def _flush(self, until: int) -> None:
        """Rows above UNTIL are final: write them out and shift the band up."""
        from PIL import Image

        n = min(until, self.height) - self.top
        if n <= 0:
            return
        w = self.wsum[:n]
        if not np.all(w > 0):
            raise AssertionError("tile grid left pixels uncovered")  # a bug, never user input
        rgb = self.acc[:n] / w[..., None]
        band = np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)
        self.image.paste(Image.fromarray(band, "RGB"), (0, self.top))
        self.acc[:-n] = self.acc[n:].copy()
        self.wsum[:-n] = self.wsum[n:].copy()
        self.acc[-n:] = 0
        self.wsum[-n:] = 0
        self.top += n

    def finish(self):
        self._flush(self.height)
        return self.image


def gaussian_blur(rgb: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of an (h, w, c) float array, edges reflected."""
    if sigma <= 0:
        return rgb
    radius = max(1, int(math.ceil(3 * sigma)))
    r = np.arange(-radius, radius + 1, dtype=np.float32)
    k = np.exp(-(r**2) / (2 * sigma**2))
    k /= k.sum()
    out = rgb
    for axis in (0, 1):
        n = out.shape[axis]
        pad = [(0, 0)] * out.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="reflect" if n > radius else "edge")
        acc = np.zeros_like(out)
        for i, w in enumerate(k):
            sl = [slice(None)] * out.ndim
            sl[axis] = slice(i, i + n)
            acc += w * padded[tuple(sl)]
        out = acc
    return out


def keep_low_frequencies(generated: np.ndarray, reference: np.ndarray, sigma: float) -> np.ndarray:
    """GENERATED's detail (above the blur scale SIGMA) on REFERENCE's low frequencies (colours, shading).

    The low frequencies of an upscale are fixed by the input; a diffusion tile may shift them (VAE
    round trip, tile-wise colour drift), so only its high frequencies are kept (cf. StableSR's colour fix)."""
    out = generated - gaussian_blur(generated, sigma) + gaussian_blur(reference, sigma)
    return np.clip(out, 0.0, 1.0)
