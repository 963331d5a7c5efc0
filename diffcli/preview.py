"""Step previews: a small picture of where the denoising is, for reporters that show one (the HTTP API's
live events, docs/events.md `preview`).

The engine asks its reporter after each step (`reporter.wants_preview()`, which also keeps the rate) and
only then makes one: the first image of the batch, decoded by the model's own VAE from the current
latents, shrunk to at most PREVIEW_LATENT_SIDE latent pixels a side first (about 256 image pixels: the
bundled 64x64 models get their exact picture, a large image a soft one). The decode reads the latents and
changes nothing: the final pixels are those of a run without previews (tests/serve/test_serve_events.py).
"""

from __future__ import annotations

import time

PREVIEW_LATENT_SIDE = 32  # latent pixels a side at most (x8 = 256 image pixels for the usual VAEs)


def send_preview(pipe, latents, size: tuple[int, int], reporter, step: int, steps: int) -> None:
    """Hand REPORTER a preview (a PIL image) of LATENTS at STEP of STEPS, with the seconds it took to make.
    SIZE: the job's (width, height), for latents that come packed (FLUX.1). A preview that cannot be made
    is left out (and no more are asked for in this batch): it never fails the job."""
    t0 = time.perf_counter()
    try:
        image = preview_image(pipe, latents, size)
    except Exception:  # noqa: BLE001 - a preview is a courtesy; the job goes on without it
        image = None
    if image is not None:
        reporter.preview(image, step, steps, time.perf_counter() - t0)


def preview_image(pipe, latents, size: tuple[int, int]):
    """The first image of LATENTS decoded (shrunk first to PREVIEW_LATENT_SIDE a side), as a PIL image;
    None for latents of a shape this does not know."""
    import torch

    from diffcli.pipelines import decode_latents, spatial_latents

    with torch.no_grad():
        latents = spatial_latents(pipe, latents[:1].detach(), size)  # FLUX.1, FLUX.2: (batch, tokens, channels)
        if latents.ndim != 4:
            return None
        height, width = latents.shape[-2:]
        scale = PREVIEW_LATENT_SIDE / max(height, width)
        if scale < 1:
            shape = (max(1, round(height * scale)), max(1, round(width * scale)))
            latents = torch.nn.functional.interpolate(latents.float(), size=shape, mode="area").to(latents.dtype)
        return decode_latents(pipe, latents)[0]
