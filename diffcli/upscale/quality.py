"""Image-quality figures for the upscale benchmark and tests (numpy only; no extra dependencies).

- PSNR in dB on 8-bit RGB.
- SSIM (Wang et al. 2004): 11x11 Gaussian window (sigma 1.5), K1=0.01, K2=0.03, on the luma
  channel (BT.601), mean over the valid (unpadded) window positions.
- Edge sharpness: mean gradient magnitude (Sobel) of the luma over the pixels where the reference
  has its strongest 10% of gradients, as a fraction of the reference's own value there (1.0 = as
  sharp as the truth; blur lowers it, ringing or over-sharpening can push it above 1).
"""

from __future__ import annotations

import numpy as np


def _arr(img) -> np.ndarray:
    if isinstance(img, np.ndarray):
        return img.astype(np.float64)
    return np.asarray(img.convert("RGB"), dtype=np.float64)


def luma(img) -> np.ndarray:
    a = _arr(img)
    if a.ndim == 2:
        return a
    return a[..., 0] * 0.299 + a[..., 1] * 0.587 + a[..., 2] * 0.114


def psnr(a, b) -> float:
    x, y = _arr(a), _arr(b)
    mse = float(np.mean((x - y) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def _gauss(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    r = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(r**2) / (2 * sigma**2))
    return g / g.sum()


def _filter_valid(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of a 2-D array with the 1-D kernel G on both axes."""
    k = len(g)
    rows = sum(g[i] * x[:, i : x.shape[1] - k + 1 + i] for i in range(k))
    return sum(g[i] * rows[i : rows.shape[0] - k + 1 + i, :] for i in range(k))


def ssim(a, b, data_range: float = 255.0) -> float:
    x, y = luma(a), luma(b)
    k = min(11, min(x.shape))
    g = _gauss(k if k % 2 else k - 1)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = _filter_valid(x, g), _filter_valid(y, g)
    sxx = _filter_valid(x * x, g) - mx * mx
    syy = _filter_valid(y * y, g) - my * my
    sxy = _filter_valid(x * y, g) - mx * my
    num = (2 * mx * my + c1) * (2 * sxy + c2)
    den = (mx * mx + my * my + c1) * (sxx + syy + c2)
    return float(np.mean(num / den))


def gradient_magnitude(img) -> np.ndarray:
    """Sobel gradient magnitude of the luma (edge pixels replicated)."""
    y = np.pad(luma(img), 1, mode="edge")
    gx = (y[:-2, 2:] + 2 * y[1:-1, 2:] + y[2:, 2:]) - (y[:-2, :-2] + 2 * y[1:-1, :-2] + y[2:, :-2])
    gy = (y[2:, :-2] + 2 * y[2:, 1:-1] + y[2:, 2:]) - (y[:-2, :-2] + 2 * y[:-2, 1:-1] + y[:-2, 2:])
    return np.hypot(gx, gy) / 8.0


def edge_sharpness(img, reference) -> float:
    """Mean gradient of IMG on REFERENCE's strongest-edge pixels, relative to REFERENCE's."""
    gi, gr = gradient_magnitude(img), gradient_magnitude(reference)
    mask = gr >= np.quantile(gr, 0.9)
    denom = float(gr[mask].mean())
    return float(gi[mask].mean()) / denom if denom > 0 else float("nan")
