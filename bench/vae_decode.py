"""VAE decode speed: the SD 1.5 VAE decoder vs a TAESD-class tiny decoder, and tiled vs untiled.

The models have random weights built from their official configurations: the SD 1.5 VAE (84 M
parameters, bench/real_size.py's VAE dict) and diffusers' AutoencoderTiny at its default config, which
is TAESD's (madebyollin/taesd). Random weights cost what trained ones cost. float32, one latent of
seed 1. Each measurement runs in its own process (one after another), so each has its own peak RSS.

Printed: full and tiny decode of a 64x64 latent (512x512 image) and their ratio; full decode of a
128x128 latent (1024x1024) untiled vs `enable_tiling()` (diffusers' tiles of 512 px, 25 % overlap,
blended), each with its time and peak RSS; and where tiled and untiled outputs differ: the mean and
max absolute difference (0-255 levels) in 16-px bands around the tile borders vs everywhere else. A
seam would show as larger differences at the borders than elsewhere.

    python bench/vae_decode.py [--reps 2] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

VAE = {
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "latent_channels": 4,
    "layers_per_block": 2,
}  # as bench/real_size.py
RUNS = {
    "full-512": ("full", 64, False),
    "tiny-512": ("tiny", 64, False),
    "full-1024": ("full", 128, False),
    "tiled-1024": ("full", 128, True),
}


def child(name: str, reps: int, save: str | None) -> None:
    import numpy as np
    import torch
    from diffusers import AutoencoderKL, AutoencoderTiny

    kind, side, tiled = RUNS[name]
    torch.manual_seed(0)
    vae = AutoencoderKL(**VAE, sample_size=512) if kind == "full" else AutoencoderTiny()
    vae.eval()
    if tiled:
        vae.enable_tiling()
    latent = torch.randn(1, 4, side, side, generator=torch.Generator().manual_seed(1))
    times = []
    with torch.no_grad():
        for _ in range(reps):
            t = time.perf_counter()
            image = vae.decode(latent, return_dict=False)[0]
            times.append(time.perf_counter() - t)
    if save:
        pixels = ((image[0].clamp(-1, 1) + 1) * 127.5).permute(1, 2, 0).numpy()
        np.save(save, pixels.astype(np.float32))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"name": name, "s": min(times), "times": times, "rss_mib": rss, "shape": list(image.shape)}))


def seams(untiled, tiled, tile: int = 512, overlap: float = 0.25, band: int = 8):
    """Mean and max |tiled - untiled| within BAND px of the tile borders vs elsewhere. diffusers blends
    tile i into tile i+1 over tile*overlap px and keeps tile*(1-overlap) px of each: tile i+1 starts at
    each multiple of tile*(1-overlap) and tile i ends tile*overlap px later (the blend between)."""
    import numpy as np

    diff = np.abs(tiled - untiled).max(axis=2)
    h, w = diff.shape
    step = int(tile * (1 - overlap))
    blend = int(tile * overlap)
    near = np.zeros_like(diff, dtype=bool)
    for edge in range(step, max(h, w), step):  # the start and the end of each blend ramp
        for line in (edge, edge + blend):
            lo, hi = max(0, line - band), min(max(h, w), line + band)
            near[lo:hi, :] = True
            near[:, lo:hi] = True
    return (float(diff[near].mean()), float(diff[near].max()), float(diff[~near].mean()), float(diff[~near].max()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=2, help="decodes per 512 run (the fastest counts); 1024: one")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--save", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.child:
        child(args.child, args.reps, args.save)
        return
    import numpy as np

    results, saved = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in RUNS:
            reps = args.reps if name.endswith("512") else 1
            cmd = [sys.executable, __file__, "--child", name, "--reps", str(reps)]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            if name.endswith("1024"):
                saved[name] = os.path.join(tmp, f"{name}.npy")
                cmd += ["--save", saved[name]]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            results[name] = json.loads(out)
            r = results[name]
            print(
                f"{name:11s} {r['s']:7.2f} s  (runs {', '.join(f'{t:.2f}' for t in r['times'])})  "
                f"peak RSS {r['rss_mib']:.0f} MiB  output {r['shape']}",
                flush=True,
            )
        full, tiny = results["full-512"]["s"], results["tiny-512"]["s"]
        print(f"512x512 decode: full {full:.2f} s, tiny {tiny:.3f} s, full/tiny {full / tiny:.1f}x")
        u, t = results["full-1024"], results["tiled-1024"]
        print(
            f"1024x1024 decode: untiled {u['s']:.2f} s / {u['rss_mib']:.0f} MiB peak RSS, tiled {t['s']:.2f} s / "
            f"{t['rss_mib']:.0f} MiB peak RSS"
        )
        near_mean, near_max, else_mean, else_max = seams(np.load(saved["full-1024"]), np.load(saved["tiled-1024"]))
        print(
            f"tiled vs untiled |difference| (0-255): tile borders mean {near_mean:.2f} max {near_max:.1f}; "
            f"elsewhere mean {else_mean:.2f} max {else_max:.1f}"
        )


if __name__ == "__main__":
    main()
